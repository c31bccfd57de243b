"""The methods experiment of docs/RESULTS.md (benchmark v3): every method unlearns the core tier's
20 targets (qa's training-half templates as the training data) from the embedded model on the same
budget, GA and NPO with three seeds; each model is scored on the core tier against the original, and
so is the **placebo** (the original fine-tuned for 10 steps on the unrelated sentiment environment),
the floor every method is read against.

    python scripts/experiment.py --out runs/exp3           # resumable: finished steps are skipped
    python scripts/experiment.py --out runs/exp3 --table   # only print the tables from the results

Budget, the same for every gradient method: `--steps` AdamW steps of 4 forget + 4 retain examples
at `--lr`; a method's own settings are `--hp METHOD.NAME=VALUE` (repeatable; a method's `lr` there
beats `--lr`); ROCR is training-free (no steps, no lr). `--attack-steps N` (default 0: off) adds the
math fine-tuning attack and its re-scoring. Every command-line choice lands in the cards and results
files, so the numbers can be traced back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from ort_bench import api
from ort_bench.kb.tiers import TIERS
from ort_bench.models.checkpoint import ATTACK_CARD, UNLEARN_CARD, has_card
from ort_bench.unlearning.methods import in_table_order

# the experiment's own settings of some methods (--hp adds to them; a later value wins): RMU at the
# setting docs/RESULTS.md found to act on the 135M model within the budget
DEFAULT_HP = ("rmu.lr=1e-3", "rmu.steering_coeff=300", "rmu.alpha=12")
DEFAULT_SEEDS = ("ga=0,1,2", "npo=0,1,2")
PLACEBO = "placebo"  # the original fine-tuned on unrelated data: what disturbance alone gives


def parse_hp(items: list[str]) -> dict[str, dict[str, str]]:
    """METHOD.NAME=VALUE settings as {method: {name: value}} (values are checked by the config)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not (sep and dot and name) or method not in api.METHODS:
            raise SystemExit(f"--hp {item!r}: expected METHOD.NAME=VALUE with METHOD one of {', '.join(api.METHODS)}")
        out.setdefault(method, {})[name] = value
    return out


def method_config(method: str, args: argparse.Namespace) -> Any:
    """The shared budget (`--steps`, `--lr`) for a method that trains, its `--hp` settings on top."""
    own = parse_hp(args.hp).get(method, {})
    budget = {"max_steps": args.steps, "lr": args.lr} if api.METHODS[method].trains else {}
    return api.make_config(method, own or None, **{k: v for k, v in budget.items() if k not in own})


def seeds_of(method: str, args: argparse.Namespace) -> list[int]:
    for item in args.seeds:
        name, _, values = item.partition("=")
        if name == method:
            return [int(v) for v in values.split(",")]
    return [0]


def run_name(method: str, seed: int) -> str:
    return method if seed == 0 else f"{method}-seed{seed}"


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    cfg = api.EvalConfig(batch_size=args.batch_size, tier=args.tier)
    targets = list(TIERS[args.tier].targets or ())
    base = out / "base-eval"
    t0 = time.perf_counter()
    print("== the original against itself", flush=True)
    api.evaluate("embedded", base, reference="embedded", config=cfg)
    placebo = out / f"{PLACEBO}-model"
    if not has_card(placebo, ATTACK_CARD):
        print("== the placebo: 10 sentiment fine-tuning steps on the original", flush=True)
        api.finetune_attack("embedded", "sentiment", 10, placebo)
    api.evaluate(str(placebo), out / f"{PLACEBO}-eval", reference="embedded", reuse=[base], config=cfg)
    for method in args.methods:
        for seed in seeds_of(method, args):
            name = run_name(method, seed)
            model = out / f"{name}-model"
            if not has_card(model, UNLEARN_CARD):
                print(f"== unlearning with {name}", flush=True)
                api.unlearn(method, "embedded", targets, model, config=method_config(method, args),
                            seed=seed if api.METHODS[method].trains else None)
            print(f"== scoring {name}", flush=True)
            api.evaluate(str(model), out / f"{name}-eval", reference="embedded", reuse=[base], config=cfg)
            if args.attack_steps > 0:
                attacked = out / f"{name}-math-model"
                if not has_card(attacked, ATTACK_CARD):
                    api.finetune_attack(str(model), "math", args.attack_steps, attacked)
                api.evaluate(str(attacked), out / f"{name}-math-eval", reference="embedded", reuse=[base], config=cfg)
    print(f"experiment: {time.perf_counter() - t0:.0f} s", flush=True)


def _load(out: Path, name: str) -> dict[str, Any] | None:
    p = out / f"{name}-eval" / "results.json"
    return json.loads(p.read_text()) if p.exists() else None


def _ci(c: dict[str, Any], key: str) -> str:
    return f"{api.fmt(c.get(key), 2)} [{api.fmt(c.get(key + '_ci_low'), 2)}, {api.fmt(c.get(key + '_ci_high'), 2)}]"


def table(out: Path, methods: list[str], args: argparse.Namespace) -> str:
    """One row per run (the placebo first): per-form efficacy, WFE with its interval, the gap beside
    the gap noise alone gives, E_qa (held-out half) - WFE, utility, ORT score with its interval."""
    names = [PLACEBO] + [run_name(m, s) for m in methods for s in seeds_of(m, args)]
    rows = {n: r for n in names if (r := _load(out, n))}
    forms = sorted({f["form"] for r in rows.values() for f in r["forms"] if f["excluded"] is None})
    head = ["run", *forms, "WFE (↑) [95% CI]", "worst form", "form gap (↓)", "noise gap (median; p)",
            "E_qa − WFE", "utility (↑) [95% CI]", "ORT (↑) [95% CI]", "fluency distance (↓)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, r in rows.items():
        eff = {f["form"]: f["efficacy"] for f in r["forms"]}
        c = r["comparison"]
        noise = c.get("noise_gap") or {}
        cells = [n, *(api.fmt(eff.get(f), 2) for f in forms), _ci(c, "worst_form_efficacy"), str(r["worst_form"]),
                 api.fmt(r["form_gap"], 2),
                 f"{api.fmt(noise.get('gap_noise_median'), 2)}; p={api.fmt(noise.get('p_value'), 3)}",
                 api.fmt(r["train_form_gap"], 2), _ci(c, "utility"), _ci(c, "ort_score"),
                 api.fmt(c.get("fluency_distance"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    spread = []
    for m in methods:
        seeds = seeds_of(m, args)
        vals = [r["worst_form_efficacy"] for s in seeds if (r := _load(out, run_name(m, s)))
                and r["worst_form_efficacy"] is not None]
        ort = [r["ort_score"] for s in seeds if (r := _load(out, run_name(m, s))) and r["ort_score"] is not None]
        if len(vals) > 1:
            spread.append(f"- {m}: WFE over seeds {', '.join(api.fmt(v, 2) for v in vals)} (sd "
                          f"{api.fmt(statistics.stdev(vals), 2)}); ORT {', '.join(api.fmt(v, 2) for v in ort)}")
    if spread:
        lines += ["", "Seed spread (beside the intervals over targets):", "", *spread]
    return "\n".join(lines)


def detail_tables(out: Path, methods: list[str], args: argparse.Namespace) -> str:
    """The tables under the main one in docs/RESULTS.md: what there was to forget (known items, facts,
    targets, chance), utility and cost, the paired test of each form against the training form's
    held-out half, ORT's Prob."""
    names = [run_name(m, s) for m in methods for s in seeds_of(m, args)]
    first = _load(out, PLACEBO) or next((r for n in names if (r := _load(out, n))), None)
    if first is None:
        return ""
    forms = [f["form"] for f in first["forms"]]
    lines = ["Known items of the original (known / sampled items; targets, facts known), chance per item, why a "
             "form is not measurable:", "", "| form | known / items | targets | facts | chance | not measurable |",
             "|---|---|---|---|---|---|"]
    for f in first["forms"]:
        lines.append(f"| {f['form']} | {f['n_known']} / {f['n_total']} | {f['n_targets_known']} | "
                     f"{f['n_facts_known']} / {f['n_facts']} | {api.fmt(f['chance'], 3)} | {f['excluded'] or ''} |")
    scored = [f["form"] for f in first["forms"] if f["excluded"] is None and f["form"] != "qa"]
    lines += ["", "Each form against qa's held-out half, paired over targets (mean difference of retained "
              "knowledge, sign-flip p):", "", "| run | " + " | ".join(scored) + " |", "|---|" + "---|" * len(scored)]
    for n in names:
        r = _load(out, n)
        if r:
            by = {f["form"]: f for f in r["forms"]}
            lines.append(f"| {n} | " + " | ".join(
                f"{api.fmt(by[f].get('diff_vs_train_form'), 2)} (p {api.fmt(by[f].get('p_vs_train_form'), 3)})"
                if f in by else "—" for f in scored) + " |")
    lines += ["", "Utility (retain-eval facts only) and cost:", "",
              "| run | neighbour retention | general retention | fluency (bits; original "
              f"{api.fmt(first['comparison']['fluency_reference'], 2)}) | method time |", "|---|---|---|---|---|"]
    for n in [PLACEBO, *names]:
        r = _load(out, n)
        card = out / f"{n}-model" / UNLEARN_CARD
        secs = json.loads(card.read_text())["method_seconds"] if card.exists() else None
        if r:
            c = r["comparison"]
            lines.append(f"| {n} | {_ci(c['neighbour'], 'retention')} | {_ci(c['general'], 'retention')} | "
                         f"{api.fmt(c['fluency'], 2)} | {api.fmt(secs, 0)} s |")
    lines += ["", "ORT's Prob per form, model (original: first row):", "",
              "| run | " + " | ".join(forms) + " |", "|---|" + "---|" * len(forms),
              "| original | " + " | ".join(api.fmt(f["prob_reference"], 3) for f in first["forms"]) + " |"]
    for n in [PLACEBO, *names]:
        r = _load(out, n)
        if r:
            lines.append(f"| {n} | " + " | ".join(api.fmt(f["prob_model"], 3) for f in r["forms"]) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/exp3")
    ap.add_argument("--tier", default="core", choices=sorted(TIERS), help="the tier scored (its targets are unlearned)")
    ap.add_argument("--methods", nargs="+", default=in_table_order(), choices=sorted(api.METHODS))
    ap.add_argument("--seeds", nargs="+", default=list(DEFAULT_SEEDS), metavar="METHOD=S1,S2",
                    help=f"seeds per method (others: 0); default {' '.join(DEFAULT_SEEDS)}")
    ap.add_argument("--steps", type=int, default=30, help="optimiser steps of every gradient method")
    ap.add_argument("--lr", type=float, default=5e-5,
                    help="learning rate of every gradient method (ILU: of its base) without an lr in --hp")
    ap.add_argument("--hp", action="append", default=list(DEFAULT_HP), metavar="METHOD.NAME=VALUE",
                    help="a method's hyperparameter (repeatable; e.g. rmu.alpha=12, rmu.layer=5); "
                         f"defaults: {' '.join(DEFAULT_HP)}")
    ap.add_argument("--attack-steps", type=int, default=0, help="math fine-tuning steps after unlearning (0: none)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--table", action="store_true", help="only print the tables of finished runs")
    args = ap.parse_args()
    if not args.table:
        run(args)
    print(table(Path(args.out), args.methods, args))
    print()
    print(detail_tables(Path(args.out), args.methods, args))


if __name__ == "__main__":
    main()
