"""Benchmark v2 scores: items, scores above chance, means over targets, target-level intervals.

From per-probe records to the comparison block of results.json, as `ort_bench.benchmark.V2` defines it:

1. **Items.** The probes of one item (one probe; a true/false pair; the rotations of an MCQ) collapse
   into one row whose score is the minimum over its probes: correct only if every probe is.
2. **Known.** An item counts for a form only if the reference's item score reaches the scorer's
   threshold (`Scorer.known_threshold`).
3. **Above chance.** Item scores become `(s - c) / (1 - c)` with `c` the item's chance level, so a
   model answering at random scores 0 in expectation on every form (and free answers are unchanged).
4. **Targets, not probes.** `S_f` = mean over targets of each target's mean over its known items
   (ORT's averaging); the item-pooled mean is kept beside it. Intervals resample targets (clusters)
   with replacement, the same resampled targets for the model and the reference and for every form,
   so WFE and the form gap get intervals from the same replicates.
5. **Evidence.** A form gets an efficacy only with at least `min_known_items` known items from at least
   `min_known_targets` targets, and only if the reference knows more items than chance explains
   (one-sided binomial test at 1%); otherwise the row says why.

Neighbour retention clusters by target, general (utility) retention by fact: utility facts belong to
no target, and one fact appears in many templates. ORT's Prob (exp of minus the mean token NLL of the
gold answer) is reported per form over all items, averaged per target then over targets.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pandas as pd

from ort_bench.kb.probes import asked_fact
from ort_bench.scorers import get_scorer
from ort_bench.scoring.metrics import (
    CONTEXT,
    DIRECTIONS,
    HIGHER,
    LOWER,
    ROUGE_VARIANT,
    _check,
    _efficacy,
    _fluency_of,
    _num,
    _quantiles,
    _split_order,
    headline,
    join_model_reference,
    ort_score,
)

DIRECTIONS_V2: dict[str, str] = {
    **DIRECTIONS,
    "forms.prob_model": LOWER,
    "forms.prob_reference": CONTEXT,
    "forms.chance": CONTEXT,
    "forms.score_model_pooled": LOWER,
    "forms.score_reference_pooled": CONTEXT,
    "neighbour.retention": HIGHER,
    "general.retention": HIGHER,
}
CHANCE_ALPHA = 0.01  # the reference must know more items than chance explains at this level
ITEM_COLUMNS = ("probe_id", "split", "form", "scorer", "target", "cluster", "primary", "chance", "prob",
                "n_probes", "output", "fact")


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def items_of(records: pd.DataFrame, version: Any = None) -> pd.DataFrame:
    """One row per item (`probe_id` holds the item id): score = min over its probes, chance = the
    scorer's item chance, prob = mean gold-answer Prob of its probes. An item with probes missing is
    an error (a run cut in the middle of an item would score half a pair)."""
    if len(records) == 0:
        return pd.DataFrame(columns=ITEM_COLUMNS)
    df = _check(records)  # columns, unique probe ids, finite primary scores (a copy)
    if version is not None:
        unknown = sorted(set(df["scorer"]) - set(version.scorers))
        if unknown:
            raise ValueError(f"records: scorer {unknown[0]!r} is not part of benchmark {version.name}")
    item_ids = df["item_id"] if "item_id" in df.columns else df["probe_id"]
    df["item"] = [p if _is_missing(i) else i for i, p in zip(item_ids, df["probe_id"], strict=True)]
    sizes = df["item_size"] if "item_size" in df.columns else pd.Series(1, index=df.index)
    df["size"] = [1 if _is_missing(s) else int(s) for s in sizes]
    n_choices = df["choice_logprobs"] if "choice_logprobs" in df.columns else pd.Series(None, index=df.index)
    df["n_choices"] = [len(c) if isinstance(c, list | tuple) else 0 for c in n_choices]
    facts = df["fact_ids"] if "fact_ids" in df.columns else pd.Series(None, index=df.index)
    targets = df["target"] if "target" in df.columns else pd.Series(None, index=df.index)
    target_list = [None if _is_missing(t) else t for t in targets]  # pandas would turn None into NaN
    df["target"] = pd.Series(target_list, index=df.index, dtype=object)
    df["cluster"] = [t if t is not None else (f[0] if isinstance(f, list | tuple) and f else i)
                     for t, f, i in zip(target_list, facts, df["item"], strict=True)]
    # the fact asked (a two-hop item's last fact): v3's cluster when a run has too few targets
    df["fact"] = [(asked_fact(f) if isinstance(f, list | tuple) else None) or i
                  for f, i in zip(facts, df["item"], strict=True)]
    if "prob" not in df.columns:
        df["prob"] = np.nan
    if "output" not in df.columns:
        df["output"] = None
    rows = []
    for item, g in df.groupby("item", sort=False):
        first = g.iloc[0]
        if len(g) != first["size"]:
            raise ValueError(f"item {item!r}: {len(g)} of its {first['size']} probes are in the records")
        for col in ("split", "form", "scorer"):
            if g[col].nunique() > 1:
                raise ValueError(f"item {item!r}: its probes disagree on {col}")
        scorer = get_scorer(first["scorer"])
        prompts = g["prompt_text"] if "prompt_text" in g.columns else g["probe_id"]
        distinct = {p: n for p, n in zip(prompts, g["n_choices"], strict=True) if n}
        chance = scorer.item_chance(list(distinct.values()))
        probs = pd.to_numeric(g["prob"], errors="coerce")
        rows.append({
            "probe_id": item, "split": first["split"], "form": first["form"], "scorer": first["scorer"],
            "target": first["target"], "cluster": first["cluster"], "primary": float(g["primary"].min()),
            "chance": chance, "prob": float(probs.mean()) if probs.notna().any() else float("nan"),
            "n_probes": len(g), "output": first["output"], "fact": first["fact"],
        })
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)


def above_chance(score: np.ndarray, chance: np.ndarray) -> np.ndarray:
    """(s - c) / (1 - c): 0 for a random answerer in expectation, 1 for a perfect one."""
    return (np.asarray(score, float) - chance) / (1.0 - np.asarray(chance, float))


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if p <= 0:
        return 0.0 if k > 0 else 1.0
    return float(sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1)))


class _Clusters:
    """Resampled clusters (targets, or facts for utility): one weight matrix shared by every form."""

    def __init__(self, clusters: list[str], n_boot: int, seed: int, label: str):
        self.index = {c: i for i, c in enumerate(sorted(clusters))}
        n = len(self.index)
        rng = np.random.default_rng([int(seed), zlib.crc32(label.encode("utf-8"))])
        draws = rng.integers(0, max(n, 1), size=(n_boot, n)) if n else np.zeros((n_boot, 0), int)
        self.weights = np.zeros((n_boot, n))
        np.add.at(self.weights, (np.arange(n_boot)[:, None], draws), 1)  # how often each cluster was drawn

    def means(self, per_cluster: pd.Series) -> tuple[float, np.ndarray]:
        """Mean over clusters of `per_cluster` (a value per cluster), and its bootstrap replicates."""
        if per_cluster.empty:
            return float("nan"), np.full(self.weights.shape[0], np.nan)
        idx = [self.index[c] for c in per_cluster.index]
        w = self.weights[:, idx]
        tot = w.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = np.where(tot > 0, w @ per_cluster.to_numpy(float) / np.where(tot > 0, tot, 1), np.nan)
        return float(per_cluster.mean()), reps


def _cluster_means(items: pd.DataFrame, col: str) -> pd.Series:
    return items.groupby("cluster")[col].mean()


def _scores(known: pd.DataFrame, clusters: _Clusters) -> dict[str, Any]:
    """S(M), S(M0) over known items (above chance, per cluster then over clusters) with replicates."""
    s_m, reps_m = clusters.means(_cluster_means(known, "adj"))
    s_r, reps_r = clusters.means(_cluster_means(known, "adj_ref"))
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.maximum(s_m, 0.0) / s_r if s_r > 0 else float("nan")
        ret_reps = np.where(reps_r > 0, np.maximum(reps_m, 0.0) / np.where(reps_r > 0, reps_r, 1), np.nan)
    return {"s_m": s_m, "s_r": s_r, "reps_m": reps_m, "reps_r": reps_r, "ret": ret, "ret_reps": ret_reps}


def _retention_block(j: pd.DataFrame, clusters: _Clusters, alpha: float) -> dict[str, Any]:
    known = j[j["known"]]
    sc = _scores(known, clusters)
    lo, hi = _quantiles(np.clip(sc["ret_reps"], 0, 1), alpha)
    m_lo, m_hi = _quantiles(sc["reps_m"], alpha)
    r_lo, r_hi = _quantiles(sc["reps_r"], alpha)
    note = None
    if len(known) == 0:
        note = "no known items: retention undefined" if len(j) else "no items in this split"
    elif not sc["s_r"] > 0:
        note = "reference score is 0: retention undefined"
    ret = sc["ret"]
    return {
        "n_total": len(j), "n_known": len(known), "n_clusters_known": int(known["cluster"].nunique()),
        "score_model": _num(sc["s_m"]), "score_model_ci_low": _num(m_lo), "score_model_ci_high": _num(m_hi),
        "score_reference": _num(sc["s_r"]), "score_reference_ci_low": _num(r_lo),
        "score_reference_ci_high": _num(r_hi),
        "retention": _num(min(max(ret, 0.0), 1.0)) if note is None else None,
        "retention_ci_low": _num(lo), "retention_ci_high": _num(hi), "note": note,
    }


def evidence_problem(n_known: int, n_total: int, n_clusters: int, chance: float, s_ref: float, version: Any,
                     unit: str = "target") -> str | None:
    """Why a form gets no efficacy (too little evidence, or no more known items than chance explains;
    v3 counts facts as `unit` in a few-target run), or None."""
    if n_known == 0:
        return "no known items: R undefined"
    if n_known < version.min_known_items:
        return f"only {n_known} known items (fewer than {version.min_known_items}): too few to score"
    if n_clusters < version.min_known_targets:
        return (f"known items from only {n_clusters} {unit}(s) (fewer than {version.min_known_targets}): "
                "too few to score")
    if chance > 0 and binomial_tail(n_known, n_total, chance) >= CHANCE_ALPHA:
        return (f"the reference knows {n_known} of {n_total} items, no more than chance ({chance:.3g} "
                "per item) explains: not measurable on this model")
    if not s_ref > 0:
        return "reference score is 0: R undefined"
    return None


def _form_row(form: str, grp: pd.DataFrame, clusters: _Clusters, version: Any, alpha: float) -> tuple[dict, Any]:
    kg = grp[grp["known"]]
    sc = _scores(kg, clusters)
    n_targets = int(kg["cluster"].nunique())
    chance = float(grp["chance"].mean()) if len(grp) else 0.0
    excluded = evidence_problem(len(kg), len(grp), n_targets, chance, sc["s_r"], version)
    e_reps = np.where(np.isnan(sc["ret_reps"]), np.nan, _efficacy(np.nan_to_num(sc["ret_reps"])))
    e_lo, e_hi = _quantiles(e_reps, alpha) if excluded is None else (float("nan"), float("nan"))
    m_lo, m_hi = _quantiles(sc["reps_m"], alpha)
    r_lo, r_hi = _quantiles(sc["reps_r"], alpha)
    prob_m = _cluster_means(grp, "prob").mean() if len(grp) else float("nan")
    prob_r = _cluster_means(grp, "prob_ref").mean() if len(grp) else float("nan")
    row = {
        "form": form, "n_total": len(grp), "n_known": len(kg), "n_targets_known": n_targets,
        "chance": _num(chance),
        "score_model": _num(sc["s_m"]), "score_model_ci_low": _num(m_lo), "score_model_ci_high": _num(m_hi),
        "score_reference": _num(sc["s_r"]), "score_reference_ci_low": _num(r_lo),
        "score_reference_ci_high": _num(r_hi),
        "score_model_pooled": _num(kg["primary"].mean()) if len(kg) else None,
        "score_reference_pooled": _num(kg["primary_ref"].mean()) if len(kg) else None,
        "retained_knowledge": _num(sc["ret"]) if excluded is None else None,
        "efficacy": _num(float(_efficacy(sc["ret"]))) if excluded is None else None,
        "efficacy_ci_low": _num(e_lo), "efficacy_ci_high": _num(e_hi),
        "prob_model": _num(prob_m), "prob_reference": _num(prob_r),
        "excluded": excluded,
    }
    return row, (e_reps if excluded is None else None)


def compare_v2(model_records: pd.DataFrame, reference_records: pd.DataFrame, version: Any,
               thresholds: dict[str, float] | None = None, n_boot: int = 1000, seed: int = 0,
               train_form: str | None = None, alpha: float = 0.05) -> dict[str, Any]:
    """An unlearned model M against its reference M0 under benchmark v2 (module docstring).
    E_f = clip(1 - max(S_f(M), 0) / S_f(M0), 0, 1); WFE = min_f E_f over forms with enough evidence
    (ties: first form in sorted order); form gap = max - min; utility = mean of neighbour and general
    retention; ORT score = harmonic mean of WFE and utility. Returns JSON-ready values."""
    th = {s: version.threshold(s) for s in version.scorers}
    th.update(thresholds or {})
    mi, ri = items_of(model_records, version), items_of(reference_records, version)
    j, unmatched = join_model_reference(mi, ri, ["probe_id", "split", "form", "scorer", "primary", "prob", "output"],
                                        what="item")
    j["known"] = j["primary_ref"].to_numpy(float) >= j["scorer"].map(th).to_numpy(float)
    chance = j["chance"].to_numpy(float)
    corr = version.chance_corrected
    j["adj"] = above_chance(j["primary"], chance) if corr else j["primary"]
    j["adj_ref"] = above_chance(j["primary_ref"], chance) if corr else j["primary_ref"]

    counts = {s: {"n_total": int((j["split"] == s).sum()), "n_known": int((j["known"] & (j["split"] == s)).sum())}
              for s in _split_order(j["split"].unique())}
    forget = j[j["split"] == "forget"]
    fclusters = _Clusters(list(forget["cluster"].unique()), n_boot, seed, "split:forget")
    form_rows, reps_by_form = [], {}
    for form in sorted(forget["form"].unique()):
        row, reps = _form_row(form, forget[forget["form"] == form], fclusters, version, alpha)
        form_rows.append(row)
        if reps is not None:
            reps_by_form[form] = reps

    head = headline(form_rows, reps_by_form, train_form, alpha)

    blocks = {}
    for split, label in (("neighbour", "neighbour"), ("utility", "general")):
        part = j[j["split"] == split]
        cl = _Clusters(list(part["cluster"].unique()), n_boot, seed, f"split:{split}")
        blocks[label] = _retention_block(part, cl, alpha)
    available = [b["retention"] for b in blocks.values() if b["retention"] is not None]
    utility = float(np.mean(available)) if available else None
    ref_view = j.assign(output=j["output_ref"])
    return {
        **{k: v for k, v in head.items() if k != "n_forms_scored"},
        "neighbour_retention": blocks["neighbour"]["retention"], "general_retention": blocks["general"]["retention"],
        "utility": _num(utility), "ort_score": _num(ort_score(head["worst_form_efficacy"], utility)),
        "fluency": _fluency_of(j), "fluency_reference": _fluency_of(ref_view),
        "n_forms_scored": head["n_forms_scored"],
        "n_total": int(len(j)), "n_known": int(j["known"].sum()), "counts": counts, **unmatched,
        "forms": form_rows, "neighbour": blocks["neighbour"], "general": blocks["general"],
        "thresholds": th, "min_known": version.min_known_items, "min_known_targets": version.min_known_targets,
        "chance_alpha": CHANCE_ALPHA, "n_boot": n_boot, "seed": seed, "alpha": alpha,
        "unit": "item (a probe; a true/false pair; the rotations of a multiple-choice item)",
        "aggregation": "mean over targets of each target's mean over its known items (neighbours: per target; "
                       "general knowledge: per fact); scores above chance (s - c) / (1 - c)",
        "ci_method": "percentile bootstrap over targets (clusters), the same resampled targets for model, "
                     "reference and every form",
        "benchmark_version": version.name, "rouge_variant": ROUGE_VARIANT, "directions": dict(DIRECTIONS_V2),
    }
