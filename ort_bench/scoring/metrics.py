"""Scores: per probe, per form, and the comparison of an unlearned model with its reference.

Pure functions over numbers and pandas DataFrames of per-probe records (no model code), so that a
results file, a leaderboard entry and a test all recompute the same numbers from the same records.

Record columns (one row per probe and model; the fields are declared in `ort_bench.scoring.records.Record`,
and `records_frame` makes the DataFrame): these need `REQUIRED_COLUMNS` (probe_id, split, form,
scorer, primary: the probe's score under its scorer) and use output (free generations, for fluency)
where present; metrics_v2 also reads the item fields, target, fact_ids, choice_logprobs and prob.

Every number reported carries a direction (`DIRECTIONS`). Bootstrap intervals are percentile
intervals over probes, deterministic for a given seed.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

# The ROUGE tokenizer and its regexes live in the base module ort_bench.answers (v3's answer matching
# uses the same tokens); imported here for ROUGE-L and fluency, and re-exported under their old names.
from ort_bench.answers import (  # noqa: F401
    _CJK_CHAR,
    _CJK_RANGES,
    _CJK_RE,
    _ROUGE_TOKEN_RE,
    UnicodeRougeTokenizer,
)

# --------------------------------------------------------------------------------------------------
# Per probe
# --------------------------------------------------------------------------------------------------

ROUGE_VARIANT = (
    "rougeL recall (rouge-score RougeScorer(['rougeL'])), max over gold answers; tokenizer ort-unicode-v1: "
    "NFKC, lowercase, tokens = runs of letters/digits of any script, each CJK ideograph or kana one token; "
    "Porter stemmer on non-CJK tokens longer than 3 characters (as rouge-score's use_stemmer=True). "
    "Identical to rouge-score's default tokenizer with use_stemmer=True on ASCII text."
)


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    """Built once: the scorer and its stemmer are reused for every probe."""
    from rouge_score import rouge_scorer, tokenizers

    class _Tokenizer(UnicodeRougeTokenizer, tokenizers.Tokenizer):
        pass

    # use_stemmer is honoured by our tokenizer; rouge-score ignores the flag when given a tokenizer.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True, tokenizer=_Tokenizer(use_stemmer=True))


def rouge_l_recall(prediction: str, answers: Sequence[str]) -> float:
    """ROUGE-L recall of a free answer against the gold answers, max over answers (RWKU style):
    recall asks "how much of the gold did the model say", so a long but correct answer is not
    penalised. See `ROUGE_VARIANT` for the exact tokenisation."""
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of strings, not one string")
    if len(answers) == 0:
        raise ValueError("rouge_l_recall needs at least one gold answer")
    scorer = _rouge_scorer()
    return max(float(scorer.score(a, prediction)["rougeL"].recall) for a in answers)


def prob_from_logprobs(items: Sequence[tuple[float, int]]) -> float:
    """ORT's "Prob": exp(-mean token NLL) = exp(sum_logprob / n_tokens) of the gold answer, max
    over its aliases. Length-normalised so that a long alias is not punished for its length."""
    if len(items) == 0:
        raise ValueError("prob_from_logprobs needs at least one (sum_logprob, n_tokens) item")
    out = []
    for sum_logprob, n_tokens in items:
        if n_tokens <= 0:
            raise ValueError(f"n_tokens must be positive, got {n_tokens}")
        out.append(math.exp(sum_logprob / n_tokens))
    return max(out)


def choice_acc(choice_logprobs: Sequence[float], gold_index: int) -> float:
    """1.0 if the gold option's log-likelihood is strictly higher than every other option's (ties and
    NaN count as wrong; `ort_bench.scorers.decide_choice`). Compared as given: v1's per-probe rule."""
    from ort_bench.scorers import decide_choice

    return decide_choice(choice_logprobs, gold_index)


# Fluency: ROME/MEMIT's `n_gram_entropy` (Meng et al. 2022, also used by unlearning papers):
# per text, H_n = Shannon entropy in bits of the frequency distribution of its word n-grams, and
# score = mean(2/3 * H_2, 4/3 * H_3) = H_2 / 3 + 2 * H_3 / 3; the fluency of a set of texts is the
# arithmetic mean of the per-text scores. Differences from ROME: tokens come from the regex below
# instead of nltk.word_tokenize (which needs a data download), i.e. runs of letters/digits and
# single punctuation marks, case kept, each CJK character one token (so Chinese text is not a
# single token); a text with no n-gram of size n (fewer than n tokens) has H_n = 0, not NaN.
FLUENCY_NGRAMS: tuple[tuple[int, float], ...] = ((2, 2 / 3), (3, 4 / 3))
_FLUENCY_TOKEN_RE = re.compile(f"{_CJK_CHAR}|[^\\W_{_CJK_RANGES}]+|[^\\w\\s]")


def _ngram_entropy_bits(tokens: list[str], n: int) -> float:
    counts = np.array(list(Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)).values()), float)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def text_ngram_entropy(text: str) -> float:
    """Weighted 2-/3-gram entropy of one text (bits); low means repetitive, degenerate text."""
    tokens = _FLUENCY_TOKEN_RE.findall(unicodedata.normalize("NFKC", text))
    return float(np.mean([w * _ngram_entropy_bits(tokens, n) for n, w in FLUENCY_NGRAMS]))


def fluency_entropy(texts: Iterable[str]) -> float:
    """Mean n-gram entropy over free generations (ROME's fluency; see FLUENCY_NGRAMS): unlearning
    that breaks the model shows as repetition long before it shows in knowledge scores."""
    scores = [text_ngram_entropy(t) for t in texts]
    return float(np.mean(scores)) if scores else float("nan")


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------

_BOOT_CELLS = 2_000_000  # indices drawn per chunk: bounds memory for large forms


def _boot_means(arrays: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Means of `n_boot` resamples of probes, the SAME resampled probes for every array (joint
    resampling keeps a probe's model and reference scores together)."""
    n = len(arrays[0])
    outs = [np.empty(n_boot) for _ in arrays]
    if n == 0:
        for o in outs:
            o.fill(np.nan)
        return outs
    chunk = max(1, _BOOT_CELLS // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        for a, o in zip(arrays, outs, strict=True):
            o[start:stop] = a[idx].mean(axis=1)
    return outs


def _quantiles(reps: np.ndarray, alpha: float) -> tuple[float, float]:
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int | Sequence[int] = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the mean over probes; deterministic for a
    seed (numpy default_rng), so that recomputing a results file gives the same interval.
    Empty input: (nan, nan)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return (float("nan"), float("nan"))
    (reps,) = _boot_means([arr], n_boot, np.random.default_rng(seed))
    return _quantiles(reps, alpha)


def _form_seed(seed: int, form: str) -> list[int]:
    """A seed per form, stable whatever other forms are present (crc32 is stable across runs)."""
    return [int(seed), zlib.crc32(form.encode("utf-8"))]


# --------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------

SPLITS_ORDER = ("forget", "neighbour", "utility")
REQUIRED_COLUMNS = ("probe_id", "split", "form", "scorer", "primary")

# Which probes the reference "knows". rouge_l_recall 0.5: at least half of the gold answer's tokens
# appear in its answer (gold answers are 1-3 tokens, so a name must mostly be right). choice_acc 1.0:
# it picks the gold option. prob 0.1: mean per-token probability of the gold answer at least 0.1
# (per-token perplexity <= 10), well above chance for an open vocabulary.
KNOWN_THRESHOLDS: dict[str, float] = {"rouge_l_recall": 0.5, "choice_acc": 1.0, "prob": 0.1}

# A form needs this many probes the reference knows before its efficacy counts: with two known
# probes a form's E is 0, 0.5 or 1 by chance, and the minimum over forms (WFE) picks such noise
# first (measured: 2 known MCQ probes of 27 decided the WFE of 7 of the 14 runs in docs/RESULTS.md).
MIN_KNOWN_PER_FORM = 5

HIGHER = "higher is better"
LOWER = "lower is better"
CONTEXT = "neither (context)"

# The direction of every number in `compare` / `summarize_single` output. Dotted keys name fields of
# nested blocks (forms[] rows, the neighbour/general blocks, the per-split summaries).
DIRECTIONS: dict[str, str] = {
    "worst_form_efficacy": HIGHER,
    "form_gap": LOWER,
    "best_form_efficacy": HIGHER,
    "train_form_efficacy": HIGHER,
    "train_form_gap": LOWER,
    "neighbour_retention": HIGHER,
    "general_retention": HIGHER,
    "utility": HIGHER,
    "fluency": HIGHER,
    "fluency_reference": CONTEXT,
    "ort_score": HIGHER,
    "n_total": CONTEXT,
    "n_known": CONTEXT,
    "forms.score_model": LOWER,  # knowledge the unlearned model still shows on the forget split
    "forms.score_reference": CONTEXT,
    "forms.retained_knowledge": LOWER,
    "forms.efficacy": HIGHER,
    "neighbour.score_model": HIGHER,
    "neighbour.score_reference": CONTEXT,
    "general.score_model": HIGHER,
    "general.score_reference": CONTEXT,
    "splits.forget.mean": LOWER,  # for an unlearned model; for a reference it is what there is to forget
    "splits.neighbour.mean": HIGHER,
    "splits.utility.mean": HIGHER,
}


def _num(x: Any) -> float | None:
    """JSON-safe float: numpy scalars become floats, NaN/inf become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _check(records: pd.DataFrame, name: str = "records") -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}")
    dup = records["probe_id"][records["probe_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{name}: duplicate probe_id {dup.iloc[0]!r} ({len(dup)} duplicates)")
    out = records.copy()
    out["primary"] = pd.to_numeric(out["primary"], errors="coerce").astype(float)
    bad = out["primary"][~np.isfinite(out["primary"])]
    if len(bad):
        pid = out.loc[bad.index[0], "probe_id"]
        raise ValueError(f"{name}: {len(bad)} records without a finite primary score (first: probe {pid!r})")
    return out


def _split_order(splits: Iterable[str]) -> list[str]:
    s = set(splits)
    return [x for x in SPLITS_ORDER if x in s] + sorted(s - set(SPLITS_ORDER))


def form_scores(records: pd.DataFrame, split: str | None = None, n_boot: int = 1000, seed: int = 0,
                alpha: float = 0.05) -> pd.DataFrame:
    """Per form of one split: n, mean primary score and its bootstrap CI, sorted by form.

    `records` must hold one split, or name it with `split=`: a mean over forget and utility probes
    together would mean nothing."""
    records = _check(records)
    if split is not None:
        records = records[records["split"] == split]
    elif records["split"].nunique() > 1:
        raise ValueError(f"records span splits {sorted(records['split'].unique())}: pass split=")
    rows = []
    for form, grp in sorted(records.groupby("form"), key=lambda kv: kv[0]):
        vals = grp["primary"].to_numpy(float)
        lo, hi = bootstrap_ci(vals, n_boot, _form_seed(seed, form), alpha)
        rows.append({"form": form, "n": len(vals), "mean": float(vals.mean()), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["form", "n", "mean", "ci_low", "ci_high"])


def _fluency_of(records: pd.DataFrame) -> float | None:
    if "output" not in records.columns:
        return None
    from ort_bench.scorers import SCORERS

    free = [name for name, sc in SCORERS.items() if sc.needs_generation]  # rouge_l_recall (v1, v2), answer_match
    gen = records.loc[records["scorer"].isin(free), "output"]
    return _num(fluency_entropy(str(t) for t in gen if not pd.isna(t)))


def summarize_single(records: pd.DataFrame, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """One model alone (no reference): per split, the mean over probes and per-form means with CIs,
    plus fluency. Nothing is filtered: without a reference, "known" is undefined."""
    records = _check(records)
    out: dict[str, Any] = {}
    for split in _split_order(records["split"].unique()):
        grp = records[records["split"] == split]
        vals = grp["primary"].to_numpy(float)
        lo, hi = bootstrap_ci(vals, n_boot, _form_seed(seed, f"split:{split}"), alpha)
        forms = form_scores(grp, n_boot=n_boot, seed=seed, alpha=alpha)
        out[split] = {
            "direction": LOWER if split == "forget" else HIGHER,
            "n": len(vals), "mean": _num(vals.mean()), "ci_low": _num(lo), "ci_high": _num(hi),
            "forms": [{"form": row["form"], "n": int(row["n"]), "mean": _num(row["mean"]),
                       "ci_low": _num(row["ci_low"]), "ci_high": _num(row["ci_high"])}
                      for row in forms.to_dict("records")],
        }
    out["fluency"] = _fluency_of(records)
    return out


def known_mask(reference_records: pd.DataFrame, thresholds: dict[str, float] | None = None) -> pd.Series:
    """Boolean Series indexed by probe_id: does the reference know this probe (primary >= the
    threshold of its scorer)? A fact the reference never knew cannot be forgotten, so counting it
    would inflate efficacy. `thresholds` overrides `KNOWN_THRESHOLDS` per scorer."""
    ref = _check(reference_records, "reference_records")
    th = {**KNOWN_THRESHOLDS, **(thresholds or {})}
    unknown = sorted(set(ref["scorer"]) - set(th))
    if unknown:
        raise ValueError(f"no knowledge threshold for scorer(s) {unknown}")
    mask = ref["primary"].to_numpy(float) >= ref["scorer"].map(th).to_numpy(float)
    return pd.Series(mask, index=pd.Index(ref["probe_id"], name="probe_id"), name="known", dtype=bool)


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 and not math.isnan(den) else float("nan")


def _efficacy(r: np.ndarray | float) -> np.ndarray | float:
    return np.clip(1.0 - np.asarray(r, float), 0.0, 1.0)


def join_model_reference(m: pd.DataFrame, r: pd.DataFrame, cols: list[str],
                         what: str = "probe") -> tuple[pd.DataFrame, dict[str, int]]:
    """Model rows beside the reference's `cols` (suffix `_ref`), matched on `probe_id`; rows that
    disagree on split, form or scorer are an error; unmatched rows are counted."""
    j = m.merge(r[cols], on="probe_id", how="inner", suffixes=("", "_ref"), validate="one_to_one")
    for c in ("split", "form", "scorer"):
        diff = j[j[c] != j[f"{c}_ref"]]
        if len(diff):
            raise ValueError(f"{what} {diff['probe_id'].iloc[0]!r}: {c} differs between model and reference records")
    ids_m, ids_r = set(m["probe_id"]), set(r["probe_id"])
    return j, {"n_model_only": len(ids_m - ids_r), "n_reference_only": len(ids_r - ids_m)}


def _joined(model_records: pd.DataFrame, reference_records: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    m = _check(model_records, "model_records")
    r = _check(reference_records, "reference_records")
    cols = ["probe_id", "split", "form", "scorer", "primary"] + (["output"] if "output" in r.columns else [])
    return join_model_reference(m, r, cols)


class _Paired(NamedTuple):
    """Model and reference scores over the known probes of one form or split."""

    n: int  # known probes
    s_m: float  # mean score of the model (NaN without probes)
    s_r: float  # ... and of the reference
    sm: np.ndarray  # bootstrap replicate means of the model
    sr: np.ndarray  # ... and of the reference (the same resampled probes)
    cells: dict[str, float | None]  # score_model / score_reference with their intervals, for a results row


def _paired_scores(known: pd.DataFrame, n_boot: int, seed: int, label: str, alpha: float) -> _Paired:
    """Means and joint bootstrap (one seed per `label`) of model and reference over known probes:
    what a form row and a retention block both start from."""
    vm, vr = known["primary"].to_numpy(float), known["primary_ref"].to_numpy(float)
    sm, sr = _boot_means([vm, vr], n_boot, np.random.default_rng(_form_seed(seed, label)))
    s_m = float(vm.mean()) if len(vm) else float("nan")
    s_r = float(vr.mean()) if len(vr) else float("nan")
    m_lo, m_hi = _quantiles(sm, alpha)
    r_lo, r_hi = _quantiles(sr, alpha)
    cells = {"score_model": _num(s_m), "score_model_ci_low": _num(m_lo), "score_model_ci_high": _num(m_hi),
             "score_reference": _num(s_r), "score_reference_ci_low": _num(r_lo),
             "score_reference_ci_high": _num(r_hi)}
    return _Paired(len(vm), s_m, s_r, sm, sr, cells)


def _retention_block(j: pd.DataFrame, n_boot: int, seed: int, alpha: float, label: str) -> dict[str, Any]:
    """Retention clip(S(M)/S(M0), 0, 1) of one split over its known probes (mean over probes)."""
    known = j[j["known"]]
    p = _paired_scores(known, n_boot, seed, label, alpha)
    s_m, s_r, sm, sr = p.s_m, p.s_r, p.sm, p.sr
    ret = _ratio(s_m, s_r)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = np.clip(np.where(sr > 0, sm / sr, np.nan), 0.0, 1.0)
    lo, hi = _quantiles(reps, alpha)
    note = None
    if p.n == 0:
        note = "no known probes: retention undefined" if len(j) else "no probes in this split"
    elif not s_r > 0:
        note = "reference score is 0: retention undefined"
    return {
        "n_total": len(j), "n_known": len(known), **p.cells,
        "retention": _num(min(max(ret, 0.0), 1.0)) if not math.isnan(ret) else None,
        "retention_ci_low": _num(lo), "retention_ci_high": _num(hi), "note": note,
    }


def headline(form_rows: list[dict[str, Any]], reps_by_form: dict[str, np.ndarray], train_form: str | None,
             alpha: float) -> dict[str, Any]:
    """WFE, the worst and best forms, the form gap and E_train - WFE from the scored form rows, with
    intervals from the per-form efficacy replicates (replicate by replicate: min, and max - min)."""
    scored = {r["form"]: r["efficacy"] for r in form_rows if r["excluded"] is None}
    wfe = worst = best = best_form = gap = None
    wfe_ci = gap_ci = (None, None)
    if scored:
        worst = min(scored, key=lambda f: (scored[f], f))
        best_form = max(scored, key=lambda f: (scored[f], f))
        wfe, best = scored[worst], scored[best_form]
        mat = np.vstack([reps_by_form[f] for f in sorted(scored)])
        with np.errstate(all="ignore"):
            valid = ~np.isnan(mat).all(axis=0)
            wfe_reps = np.full(mat.shape[1], np.nan)
            wfe_reps[valid] = np.nanmin(mat[:, valid], axis=0)
            gap_reps = np.full(mat.shape[1], np.nan)
            gap_reps[valid] = np.nanmax(mat[:, valid], axis=0) - wfe_reps[valid]
        wfe_ci = tuple(_num(x) for x in _quantiles(wfe_reps, alpha))
        if len(scored) >= 2:
            gap = best - wfe
            gap_ci = tuple(_num(x) for x in _quantiles(gap_reps, alpha))
    train_eff = train_gap = train_note = None
    if train_form is not None:
        if train_form in scored:
            train_eff = scored[train_form]
            train_gap = train_eff - wfe
        else:
            train_note = f"train form {train_form!r} has no defined efficacy (absent or excluded)"
    return {
        "worst_form_efficacy": _num(wfe), "worst_form_efficacy_ci_low": wfe_ci[0],
        "worst_form_efficacy_ci_high": wfe_ci[1], "worst_form": worst,
        "best_form_efficacy": _num(best), "best_form": best_form,
        "form_gap": _num(gap), "form_gap_ci_low": gap_ci[0], "form_gap_ci_high": gap_ci[1],
        "train_form": train_form, "train_form_efficacy": _num(train_eff), "train_form_gap": _num(train_gap),
        "train_form_note": train_note, "n_forms_scored": len(scored),
    }


def ort_score(wfe: float | None, utility: float | None) -> float | None:
    """Harmonic mean of WFE and utility (0 if either is 0; None if either is undefined)."""
    if wfe is None or utility is None:
        return None
    if wfe == 0 or utility == 0:
        return 0.0
    return 2 * wfe * utility / (wfe + utility)


def compare(model_records: pd.DataFrame, reference_records: pd.DataFrame,
            thresholds: dict[str, float] | None = None, n_boot: int = 1000, seed: int = 0,
            train_form: str | None = None, alpha: float = 0.05,
            min_known: int = MIN_KNOWN_PER_FORM) -> dict[str, Any]:
    """An unlearned model M against its reference M0 (design, "Metrics"), on the probes both have.

    Only probes the reference knows count (`known_mask`). Per form f of the forget split:
    S_f = mean primary, R_f = S_f(M) / S_f(M0), E_f = clip(1 - R_f, 0, 1), with percentile CIs from
    resampling the form's probes jointly for M and M0. A form with fewer than `min_known` known
    probes, or with S_f(M0) = 0 (possible only with thresholds that let 0 through), has R_f and E_f
    undefined: it is reported with its scores, null R and E and a reason, and left out of WFE and the
    form gap.
    WFE = min_f E_f (ties: first form in sorted order); form_gap = max_f E_f - min_f E_f (null with
    fewer than two scored forms); train_form_gap = E_train_form - WFE. Its CIs come from a
    stratified bootstrap (each form resampled on its own, replicate by replicate).
    Utility = mean of the available retentions, neighbour split and utility split ("general"), each
    clip(S(M)/S(M0), 0, 1) over known probes. Fluency (n-gram entropy of the model's generations on
    rouge-scored probes, all splits, not filtered) is reported beside utility, not inside it.
    ort_score = harmonic mean of WFE and utility (0 if either is 0; null if either is undefined).
    Returns plain JSON-ready values (NaN as None)."""
    if min_known < 1:
        raise ValueError(f"min_known must be at least 1 (got {min_known})")
    th = {**KNOWN_THRESHOLDS, **(thresholds or {})}
    j, unmatched = _joined(model_records, reference_records)
    known = known_mask(reference_records, th)
    j["known"] = j["probe_id"].map(known).astype(bool)

    counts = {s: {"n_total": int((j["split"] == s).sum()), "n_known": int((j["known"] & (j["split"] == s)).sum())}
              for s in _split_order(j["split"].unique())}

    forget = j[j["split"] == "forget"]
    form_rows: list[dict[str, Any]] = []
    reps_by_form: dict[str, np.ndarray] = {}
    for form in sorted(forget["form"].unique()):
        grp = forget[forget["form"] == form]
        kg = grp[grp["known"]]
        p = _paired_scores(kg, n_boot, seed, form, alpha)
        s_m, s_r, sm, sr, n_known = p.s_m, p.s_r, p.sm, p.sr, p.n
        r_f = _ratio(s_m, s_r)
        e_f = float(_efficacy(r_f)) if not math.isnan(r_f) else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            e_reps = np.where(sr > 0, _efficacy(sm / np.where(sr > 0, sr, 1.0)), np.nan)
        excluded = None
        if n_known == 0:
            excluded = "no known probes: R undefined"
        elif n_known < min_known:
            excluded = f"only {n_known} known probes (fewer than {min_known}): too few to score"
        elif not s_r > 0:
            excluded = "reference score is 0: R undefined"
        else:
            reps_by_form[form] = e_reps
        e_lo, e_hi = _quantiles(e_reps, alpha) if excluded is None else (float("nan"), float("nan"))
        form_rows.append({
            "form": form, "n_total": len(grp), "n_known": len(kg), **p.cells,
            "retained_knowledge": _num(r_f) if excluded is None else None,
            "efficacy": _num(e_f) if excluded is None else None,
            "efficacy_ci_low": _num(e_lo), "efficacy_ci_high": _num(e_hi),
            "excluded": excluded,
        })

    head = headline(form_rows, reps_by_form, train_form, alpha)
    wfe = head["worst_form_efficacy"]

    neighbour = _retention_block(j[j["split"] == "neighbour"], n_boot, seed, alpha, "split:neighbour")
    general = _retention_block(j[j["split"] == "utility"], n_boot, seed, alpha, "split:utility")
    available = [b["retention"] for b in (neighbour, general) if b["retention"] is not None]
    utility = float(np.mean(available)) if available else None

    ort = ort_score(wfe, utility)
    ref_view = j.assign(output=j["output_ref"]) if "output_ref" in j.columns else j.drop(columns="output",
                                                                                          errors="ignore")
    return {
        **{k: v for k, v in head.items() if k != "n_forms_scored"},
        "neighbour_retention": neighbour["retention"], "general_retention": general["retention"],
        "utility": _num(utility), "ort_score": _num(ort),
        "fluency": _fluency_of(j), "fluency_reference": _fluency_of(ref_view),
        "n_forms_scored": head["n_forms_scored"],
        "n_total": int(len(j)), "n_known": int(j["known"].sum()), "counts": counts, **unmatched,
        "forms": form_rows, "neighbour": neighbour, "general": general,
        "thresholds": th, "min_known": min_known, "n_boot": n_boot, "seed": seed, "alpha": alpha,
        "ci_method": "percentile bootstrap over probes (joint for model and reference; stratified by form "
                     "for WFE and form gap)",
        "rouge_variant": ROUGE_VARIANT, "directions": dict(DIRECTIONS),
    }
