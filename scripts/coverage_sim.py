"""Coverage of the v3 intervals (ort_bench.scoring.inference) on synthetic data with a known answer.

Data-generating process (per replication): G targets, 6 forms. Target t has a random effect
u_t ~ N(0, SD_TARGET^2) on the logit scale (and, in the "interaction" scenario, a form x target effect
v_ft ~ N(0, sd_interaction^2)); each (form, target) has 5-8 known items, each correct with probability
p_ft = expit(logit(1 - e_f) + u_t + v_ft). Multiple-choice forms (scenario "mixed chance") score
Bernoulli(c + (1 - c) p_ft) and enter as adj = (s - c) / (1 - c), whose mean is p_ft again. The
reference knows every item (adj_ref = 1). Neighbours: 6-10 items per target, probability
expit(logit(0.85) + w_t); general knowledge: 60 facts with 3-7 items each, expit(logit(0.9) + z_h);
w_t, z_h ~ N(0, 1).

Truth (the large-sample limit, mean over targets of each target's mean): E_f = 1 - E[expit(logit(1 - e_f)
+ z)] with z ~ N(0, SD_TARGET^2 + sd_interaction^2), by Gauss-Hermite quadrature (checked against a
Monte Carlo with 200,000 targets); retentions likewise; WFE = min_f E_f; utility = mean of the two
retentions; ORT = harmonic mean of WFE and utility; gap = max_f E_f - min_f E_f.

    python scripts/coverage_sim.py            # full run (1000 replications per cell), markdown on stdout
    python scripts/coverage_sim.py --quick    # a small version (a test runs it)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from ort_bench.scoring import inference as inf

N_FORMS = 6
FORMS = tuple(f"f{i}" for i in range(N_FORMS))
SD_TARGET = 1.0
ITEMS_PER_CELL = (5, 8)  # known items per (form, target), inclusive
NEIGHBOUR_ITEMS = (6, 10)
N_FACTS = 60
FACT_ITEMS = (3, 7)
P_NEIGHBOUR, P_GENERAL = 0.85, 0.90
REPORT_FORM = "f5"  # the worst form in the form-dependent scenario


@dataclass(frozen=True)
class Scenario:
    name: str
    efficacy: tuple[float, ...]  # e_f: efficacy at u = 0
    sd_interaction: float = 0.0
    chance: tuple[float, ...] = (0.0,) * N_FORMS  # item chance level per form


SCENARIOS = (
    Scenario("equal", (0.6,) * N_FORMS),
    Scenario("form-dependent", (0.9, 0.8, 0.7, 0.6, 0.5, 0.45)),
    Scenario("equal + interaction", (0.6,) * N_FORMS, sd_interaction=0.5),
    Scenario("equal, mixed chance", (0.6,) * N_FORMS, chance=(0.0, 0.0, 0.0, 0.0, 0.25, 0.25)),
)
METHOD_LABELS = {
    "jackknife-band": "jackknife-band (default)",
    "jackknife": "jackknife t",
    "jackknife-bc": "jackknife t, bias-corrected",
    "percentile": "percentile bootstrap (v2)",
    "bca": "BCa bootstrap",
}


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _mean_expit(mu: float, sd: float) -> float:
    x, w = np.polynomial.hermite_e.hermegauss(120)
    return float(np.sum(w / np.sqrt(2 * np.pi) / (1 + np.exp(-(mu + sd * x)))))


def truth(sc: Scenario) -> dict[str, float]:
    sd = math.hypot(SD_TARGET, sc.sd_interaction)
    e = {f: 1 - _mean_expit(_logit(1 - ef), sd) for f, ef in zip(FORMS, sc.efficacy, strict=True)}
    rn, rg = _mean_expit(_logit(P_NEIGHBOUR), 1.0), _mean_expit(_logit(P_GENERAL), 1.0)
    wfe, util = min(e.values()), (rn + rg) / 2
    return {**{f"E:{f}": v for f, v in e.items()}, "wfe": wfe, "gap": max(e.values()) - wfe,
            "neighbour_retention": rn, "general_retention": rg, "utility": util,
            "ort": 2 * wfe * util / (wfe + util)}


def truth_mc(sc: Scenario, n_targets: int = 200_000, seed: int = 1) -> dict[str, float]:
    """The same truth by brute force: many targets, probabilities averaged (no item noise needed)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, SD_TARGET, n_targets)
    out = {}
    for f, ef in zip(FORMS, sc.efficacy, strict=True):
        v = rng.normal(0, sc.sd_interaction, n_targets) if sc.sd_interaction else 0.0
        out[f"E:{f}"] = 1 - float(np.mean(1 / (1 + np.exp(-(_logit(1 - ef) + u + v)))))
    out["wfe"] = min(out.values())
    return out


def generate(sc: Scenario, n_targets: int, rng: np.random.Generator) -> tuple[inf.ClusterMeans, tuple]:
    """One synthetic evaluation: its cluster means and the forget items (for the noise test)."""
    G, F = n_targets, N_FORMS
    u = rng.normal(0, SD_TARGET, G)
    v = rng.normal(0, sc.sd_interaction, (F, G)) if sc.sd_interaction else np.zeros((F, G))
    base = np.array([_logit(1 - e) for e in sc.efficacy])
    p = 1 / (1 + np.exp(-(base[:, None] + u[None, :] + v)))
    chance = np.array(sc.chance)[:, None]
    n = rng.integers(ITEMS_PER_CELL[0], ITEMS_PER_CELL[1] + 1, (F, G))
    k = rng.binomial(n, chance + (1 - chance) * p)
    fm = (k / n - chance) / (1 - chance)
    nn = rng.integers(NEIGHBOUR_ITEMS[0], NEIGHBOUR_ITEMS[1] + 1, G)
    nk = rng.binomial(nn, 1 / (1 + np.exp(-(_logit(P_NEIGHBOUR) + rng.normal(0, 1, G)))))
    gn = rng.integers(FACT_ITEMS[0], FACT_ITEMS[1] + 1, N_FACTS)
    gk = rng.binomial(gn, 1 / (1 + np.exp(-(_logit(P_GENERAL) + rng.normal(0, 1, N_FACTS)))))
    cm = inf.ClusterMeans(
        FORMS, np.arange(G).astype(object), np.arange(N_FACTS).astype(object),
        fm, np.ones((F, G)), np.ones((F, G), bool),
        nk / nn, np.ones(G), np.ones(G, bool), gk / gn, np.ones(N_FACTS), np.ones(N_FACTS, bool))
    # items: per cell k correct and n - k wrong (their order within a cluster does not matter)
    cells_f, cells_t = np.meshgrid(np.arange(F), np.arange(G), indexing="ij")
    reps = n.ravel()
    form = np.repeat(cells_f.ravel(), reps)
    cluster = np.repeat(cells_t.ravel(), reps)
    pos = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    correct = pos < np.repeat(k.ravel(), reps)
    c_item = np.repeat(np.broadcast_to(chance, (F, G)).ravel(), reps)
    adj = (correct.astype(float) - c_item) / (1 - c_item)
    return cm, (cluster, form, adj, np.ones_like(adj))


def run_cell(sc: Scenario, n_targets: int, reps: int, n_boot: int, n_perm: int, seed: int,
             methods: tuple[str, ...]) -> dict:
    tr = truth(sc)
    keys = (f"E:{REPORT_FORM}", "wfe", "ort", "gap", "utility")
    hits = {m: {k: 0 for k in keys} for m in methods}
    width = {m: 0.0 for m in methods}
    wfe_err, wfe_bc_err, rejections = [], [], 0
    for r in range(reps):
        rng = np.random.default_rng([seed, SCENARIOS.index(sc), n_targets, r])
        cm, items = generate(sc, n_targets, rng)
        res = inf.intervals_of(cm, n_boot=n_boot, seed=r, methods=methods)
        for m in methods:
            for k in keys:
                _, lo, hi = res[m][k]
                hits[m][k] += bool(lo - 1e-12 <= tr[k] <= hi + 1e-12)
            width[m] += res[m]["wfe"][2] - res[m]["wfe"][1]
        point = res[methods[0]]["wfe"][0]
        wfe_err.append(point - tr["wfe"])
        wfe_bc_err.append(point - inf._Jackknife(cm).of_key("wfe").bias - tr["wfe"])
        gap_obs, null = inf.gap_permutation(*items, N_FORMS, n_perm, rng)
        p = (1 + np.sum(null >= gap_obs - 1e-12)) / (n_perm + 1)
        rejections += bool(p <= 0.05)
    return {"coverage": {m: {k: v / reps for k, v in hits[m].items()} for m in methods},
            "width_wfe": {m: width[m] / reps for m in methods},
            "bias_wfe": float(np.mean(wfe_err)), "bias_wfe_jkbc": float(np.mean(wfe_bc_err)),
            "rmse_wfe": float(np.sqrt(np.mean(np.square(wfe_err)))), "reject": rejections / reps, "truth": tr}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small version: few replications, two scenarios")
    ap.add_argument("--reps", type=int, default=None, help="replications per cell (default 1000; quick 30)")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--scenario", action="append", default=None,
                    help="run only this scenario (its name; repeatable)")
    ap.add_argument("--no-header", action="store_true", help="omit the title and notes (to append a part)")
    args = ap.parse_args(argv)
    if args.quick:
        reps, n_boot, n_perm, targets, scenarios = args.reps or 30, 200, 99, (4, 10), SCENARIOS[:2]
    else:
        reps, n_boot, n_perm, targets, scenarios = args.reps or 1000, 1000, 199, (4, 10, 20), SCENARIOS
    if args.scenario:
        unknown = sorted(set(args.scenario) - {sc.name for sc in SCENARIOS})
        if unknown:
            ap.error(f"unknown scenario(s) {unknown}; choose from {[sc.name for sc in SCENARIOS]}")
        scenarios = tuple(sc for sc in scenarios if sc.name in args.scenario)
    methods = inf.METHODS
    t0 = time.perf_counter()
    out = sys.stdout
    if not args.no_header:
        _header(out, args, reps, n_boot, n_perm)
    for sc in scenarios:
        _scenario(out, sc, targets, reps, n_boot, n_perm, args.seed, methods)
    out.write(f"Run time {time.perf_counter() - t0:.0f} s ({', '.join(sc.name for sc in scenarios)}).\n\n")


def _header(out, args: argparse.Namespace, reps: int, n_boot: int, n_perm: int) -> None:
    out.write("# Coverage of the v3 intervals: simulation with a known answer\n\n")
    out.write(f"`python scripts/coverage_sim.py{' --quick' if args.quick else ''}` (seed {args.seed}): {reps} "
              f"replications per cell, {n_boot} bootstrap resamples, {n_perm} permutations for the noise test, "
              f"nominal 95% intervals. {N_FORMS} forms, {ITEMS_PER_CELL[0]}-{ITEMS_PER_CELL[1]} known items per "
              f"form and target, target random effect sd {SD_TARGET} (logit), {N_FACTS} general facts. "
              "Data-generating process and truth: the docstring of `scripts/coverage_sim.py`.\n\n")
    out.write("Coverage = fraction of replications whose interval contains the true value (Monte Carlo "
              f"standard error about {math.sqrt(0.95 * 0.05 / reps):.3f} at 95%). E = efficacy of form "
              f"{REPORT_FORM}; gap truth is 0 in the equal scenarios.\n\n")


def _scenario(out, sc: Scenario, targets: tuple[int, ...], reps: int, n_boot: int, n_perm: int, seed: int,
              methods: tuple[str, ...]) -> None:
    tr, mc = truth(sc), truth_mc(sc)
    out.write(f"## Scenario: {sc.name}\n\n")
    out.write(f"e_f = {list(sc.efficacy)}, form x target sd {sc.sd_interaction}, chance {list(sc.chance)}. "
              f"True E_f = {[round(tr[f'E:{f}'], 4) for f in FORMS]} (Monte Carlo check, 200,000 targets: "
              f"WFE {mc['wfe']:.4f} vs {tr['wfe']:.4f}); utility {tr['utility']:.4f}, ORT {tr['ort']:.4f}.\n\n")
    out.write("| method | targets | E | WFE | ORT | gap | utility | mean WFE width |\n")
    out.write("|---|---|---|---|---|---|---|---|\n")
    cells = {g: run_cell(sc, g, reps, n_boot, n_perm, seed, methods) for g in targets}
    for m in methods:
        for g in targets:
            c = cells[g]["coverage"][m]
            out.write(f"| {METHOD_LABELS[m]} | {g} | {c[f'E:{REPORT_FORM}']:.3f} | {c['wfe']:.3f} | "
                      f"{c['ort']:.3f} | {c['gap']:.3f} | {c['utility']:.3f} | "
                      f"{cells[g]['width_wfe'][m]:.3f} |\n")
    out.write("\n| targets | WFE bias (plain min) | WFE bias (jackknife-corrected) | WFE RMSE | "
              "noise gap test rejects at 0.05 |\n|---|---|---|---|---|\n")
    for g in targets:
        c = cells[g]
        out.write(f"| {g} | {c['bias_wfe']:+.4f} | {c['bias_wfe_jkbc']:+.4f} | {c['rmse_wfe']:.4f} | "
                  f"{c['reject']:.3f} |\n")
    out.write("\n")
    out.flush()


if __name__ == "__main__":
    main()
