"""Benchmark v3 scores: what v2 computes, read as a reviewer would accept it.

From per-probe records to the comparison block of results.json, as `ort_bench.benchmark.V3` defines it.
Items, "known", scores above chance and means over targets are v2's (`metrics_v2.items_of`,
`above_chance`); free answers are decided by `answer_match` (the gold's content words, not in the
prompt). What v3 adds:

1. **Intervals with measured coverage** (`inference.intervals`, method and coverage in
   docs/coverage_sim.md): per form efficacy, WFE, form gap, utility and the ORT score, from the same
   cluster replicates.
2. **Few targets, still a number.** A run with fewer than `min_known_targets` targets (RWKU/ORT
   unlearn one target at a time) clusters its forget items by *fact* instead of target; the rows and
   the headline say so (`cluster_unit`).
3. **Seen forms.** A form whose evaluated probes still hold a trained prompt verbatim
   (`selection.seen_forms`) keeps its row but is left out of WFE and the form gap.
4. **Form dependence against noise.** Beside the observed gap, the gap noise alone gives when every
   form has one efficacy (`inference.noise_gap_test`, a permutation of form labels within targets),
   and per form a paired test against the training form's held-out half.
5. **Fluency as distance**: |H(M) - H(M0)| of the n-gram entropy (lower is better), since a higher
   entropy than the reference's is not better (evasive or garbled answers have more of it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ort_bench.scoring import inference
from ort_bench.scoring.metrics import (
    CONTEXT,
    HIGHER,
    LOWER,
    ROUGE_VARIANT,
    _fluency_of,
    _num,
    _split_order,
    join_model_reference,
)
from ort_bench.scoring.metrics_v2 import CHANCE_ALPHA, DIRECTIONS_V2, above_chance, evidence_problem, items_of

DIRECTIONS_V3: dict[str, str] = {
    **DIRECTIONS_V2,
    "fluency": CONTEXT,
    "fluency_distance": LOWER,
    "ort_score_ci_low": HIGHER,
    "noise_gap.p_value": CONTEXT,
    "forms.p_vs_train_form": CONTEXT,
    "utility_ci_low": HIGHER,
}
CI_METHOD = ("delete-one-cluster jackknife, t(G-1) intervals (inference.intervals, method jackknife-band): WFE, "
             "the gap and the ORT score bounded over the forms near the minimum; utility adds target and fact "
             "variances; coverage by simulation in docs/coverage_sim.md")
_JOIN = ["probe_id", "split", "form", "scorer", "primary", "prob", "output"]


def _interval(stats: dict[str, tuple[float, float, float]], key: str) -> tuple[float | None, ...]:
    point, lo, hi = stats.get(key, (float("nan"),) * 3)
    return _num(point), _num(lo), _num(hi)


def _mean_over_clusters(df: pd.DataFrame, col: str) -> float:
    return float(df.groupby("cluster")[col].mean().mean()) if len(df) else float("nan")


def _retention_block(part: pd.DataFrame, stats: dict, key: str) -> dict[str, Any]:
    known = part[part["known"]]
    ret, lo, hi = _interval(stats, key)
    note = None
    if len(known) == 0:
        note = "no known items: retention undefined" if len(part) else "no items in this split"
    return {
        "n_total": len(part), "n_known": len(known), "n_clusters_known": int(known["cluster"].nunique()),
        "score_model": _num(_mean_over_clusters(known, "adj")),
        "score_reference": _num(_mean_over_clusters(known, "adj_ref")),
        "retention": ret if note is None else None, "retention_ci_low": lo, "retention_ci_high": hi, "note": note,
    }


def _joined(model_records: pd.DataFrame, reference_records: pd.DataFrame, version: Any,
            thresholds: dict[str, float] | None) -> tuple[pd.DataFrame, dict[str, int], dict[str, float]]:
    """Items of model and reference side by side, with `known` and the scores above chance."""
    th = {s: version.threshold(s) for s in version.scorers}
    th.update(thresholds or {})
    mi, ri = items_of(model_records, version), items_of(reference_records, version)
    j, unmatched = join_model_reference(mi, ri, _JOIN, what="item")
    j["known"] = j["primary_ref"].to_numpy(float) >= j["scorer"].map(th).to_numpy(float)
    j["adj"] = above_chance(j["primary"], j["chance"].to_numpy(float))
    j["adj_ref"] = above_chance(j["primary_ref"], j["chance"].to_numpy(float))
    return j, unmatched, th


def known_frames(model_records: pd.DataFrame, reference_records: pd.DataFrame,
                 version: Any) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The known forget, neighbour and general items of a run (columns form, cluster, adj, adj_ref), as
    `inference` takes them: the leaderboard's rank intervals resample them across entries."""
    j, _, _ = _joined(model_records, reference_records, version, None)
    return tuple(j[(j["split"] == s) & j["known"]] for s in ("forget", "neighbour", "utility"))  # type: ignore[return-value]


def compare_v3(model_records: pd.DataFrame, reference_records: pd.DataFrame, version: Any,
               thresholds: dict[str, float] | None = None, n_boot: int = 1000, seed: int = 0,
               train_form: str | None = None, alpha: float = 0.05,
               seen_forms: dict[str, int] | None = None) -> dict[str, Any]:
    """An unlearned model M against its reference M0 under benchmark v3 (module docstring)."""
    seen_forms = seen_forms or {}
    j, unmatched, th = _joined(model_records, reference_records, version, thresholds)

    forget = j[j["split"] == "forget"].copy()
    n_targets = int(forget["target"].nunique())
    few = bool(version.few_target_clusters and n_targets < version.min_known_targets)
    unit = "fact" if few else "target"
    if few:
        forget["cluster"] = forget["fact"]
    known_forget = forget[forget["known"]]
    neighbour, general = (j[(j["split"] == s) & j["known"]] for s in ("neighbour", "utility"))

    rows: list[dict[str, Any]] = []
    for form in sorted(forget["form"].unique()):
        grp = forget[forget["form"] == form]
        kg = grp[grp["known"]]
        rows.append({
            "form": form, "n_total": len(grp), "n_known": len(kg), "n_targets_known": int(kg["target"].nunique()),
            "n_facts": int(grp["fact"].nunique()), "n_facts_known": int(kg["fact"].nunique()),
            "n_clusters_known": int(kg["cluster"].nunique()), "cluster_unit": unit,
            "chance": _num(float(grp["chance"].mean())),
            "score_model": _num(_mean_over_clusters(kg, "adj")),
            "score_reference": _num(_mean_over_clusters(kg, "adj_ref")),
            "score_model_pooled": _num(kg["primary"].mean()) if len(kg) else None,
            "score_reference_pooled": _num(kg["primary_ref"].mean()) if len(kg) else None,
            "prob_model": _num(_mean_over_clusters(grp, "prob")),
            "prob_reference": _num(_mean_over_clusters(grp, "prob_ref")),
            "seen_probes": int(seen_forms.get(form, 0)),
            "excluded": evidence_problem(len(kg), len(grp), int(kg["cluster"].nunique()),
                                         float(grp["chance"].mean()) if len(grp) else 0.0,
                                         _mean_over_clusters(kg, "adj_ref"), version, unit),
        })
    measurable = [r["form"] for r in rows if r["excluded"] is None]
    headline_forms = [f for f in measurable if not seen_forms.get(f)]
    kw = {"alpha": alpha, "n_boot": n_boot, "seed": seed}
    stats = inference.intervals(known_forget[known_forget["form"].isin(headline_forms)], neighbour, general,
                                headline_forms, **kw)
    if set(measurable) - set(headline_forms):
        seen_only = sorted(set(measurable) - set(headline_forms))
        extra = inference.intervals(known_forget[known_forget["form"].isin(seen_only)], neighbour, general,
                                    seen_only, **kw)
        stats.update({f"E:{f}": extra[f"E:{f}"] for f in seen_only})
    for r in rows:
        e, lo, hi = _interval(stats, f"E:{r['form']}") if r["excluded"] is None else (None, None, None)
        s_m, s_r = r["score_model"], r["score_reference"]
        r["retained_knowledge"] = None if e is None or not s_r else _num(max(s_m or 0.0, 0.0) / s_r)
        r.update({"efficacy": e, "efficacy_ci_low": lo, "efficacy_ci_high": hi,
                  "in_headline": r["form"] in headline_forms})
        if r["seen_probes"]:
            r["note"] = f"{r['seen_probes']} evaluated probes still hold a trained prompt: left out of WFE and the gap"

    scored = {r["form"]: r["efficacy"] for r in rows if r["in_headline"] and r["efficacy"] is not None}
    worst = min(scored, key=lambda f: (scored[f], f)) if scored else None
    best = max(scored, key=lambda f: (scored[f], f)) if scored else None
    wfe, wfe_lo, wfe_hi = _interval(stats, "wfe") if scored else (None, None, None)
    gap, gap_lo, gap_hi = _interval(stats, "gap") if len(scored) >= 2 else (None, None, None)
    noise = (inference.noise_gap_test(known_forget[known_forget["form"].isin(headline_forms)], headline_forms,
                                      seed=seed) if len(scored) >= 2 else None)
    train_eff = train_gap = train_note = None
    if train_form is not None:
        train_row = next((r for r in rows if r["form"] == train_form), None)
        if train_row is not None and train_row["efficacy"] is not None:
            train_eff = train_row["efficacy"]
            train_gap = _num(train_eff - wfe) if wfe is not None else None
            for r in rows:
                if r["form"] != train_form and r["efficacy"] is not None:
                    test = inference.paired_form_test(known_forget, r["form"], train_form)
                    r["p_vs_train_form"] = _num(test.get("p_value"))
                    r["diff_vs_train_form"] = _num(test.get("mean_difference"))
        else:
            train_note = f"train form {train_form!r} has no defined efficacy (absent or excluded)"

    blocks = {"neighbour": _retention_block(j[j["split"] == "neighbour"], stats, "neighbour_retention"),
              "general": _retention_block(j[j["split"] == "utility"], stats, "general_retention")}
    utility, u_lo, u_hi = _interval(stats, "utility")
    ort, ort_lo, ort_hi = _interval(stats, "ort") if wfe is not None else (None, None, None)
    flu_m, flu_r = _fluency_of(j), _fluency_of(j.assign(output=j["output_ref"]))
    counts = {s: {"n_total": int((j["split"] == s).sum()), "n_known": int((j["known"] & (j["split"] == s)).sum())}
              for s in _split_order(j["split"].unique())}
    return {
        "worst_form_efficacy": wfe, "worst_form_efficacy_ci_low": wfe_lo, "worst_form_efficacy_ci_high": wfe_hi,
        "worst_form": worst, "best_form_efficacy": scored.get(best) if best else None, "best_form": best,
        "form_gap": gap, "form_gap_ci_low": gap_lo, "form_gap_ci_high": gap_hi,
        "noise_gap": _clean_noise(noise),
        "train_form": train_form, "train_form_efficacy": train_eff, "train_form_gap": train_gap,
        "train_form_note": train_note,
        "neighbour_retention": blocks["neighbour"]["retention"], "general_retention": blocks["general"]["retention"],
        "utility": utility if blocks["neighbour"]["retention"] is not None or blocks["general"]["retention"] is not None
        else None, "utility_ci_low": u_lo, "utility_ci_high": u_hi,
        "ort_score": ort, "ort_score_ci_low": ort_lo, "ort_score_ci_high": ort_hi,
        "fluency": flu_m, "fluency_reference": flu_r,
        "fluency_distance": _num(abs(flu_m - flu_r)) if flu_m is not None and flu_r is not None else None,
        "n_forms_scored": len(scored), "seen_forms": dict(sorted(seen_forms.items())),
        "few_targets": few, "cluster_unit": unit, "n_targets": n_targets,
        "n_total": int(len(j)), "n_known": int(j["known"].sum()), "counts": counts, **unmatched,
        "forms": rows, "neighbour": blocks["neighbour"], "general": blocks["general"],
        "thresholds": th, "min_known": version.min_known_items, "min_known_targets": version.min_known_targets,
        "chance_alpha": CHANCE_ALPHA, "n_boot": n_boot, "seed": seed, "alpha": alpha,
        "unit": "item (a probe; a true/false pair; the rotations of a multiple-choice item)",
        "aggregation": f"mean over {unit}s of each {unit}'s mean over its known items (neighbours: per target; "
                       "general knowledge: per fact); scores above chance (s - c) / (1 - c)",
        "ci_method": CI_METHOD,
        "benchmark_version": version.name, "rouge_variant": ROUGE_VARIANT, "directions": dict(DIRECTIONS_V3),
    }


def _clean_noise(noise: dict[str, Any] | None) -> dict[str, Any] | None:
    if noise is None:
        return None
    return {k: (_num(v) if isinstance(v, float | np.floating) else v) for k, v in noise.items()}
