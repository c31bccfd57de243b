"""Metrics against hand-computed values (the arithmetic is in the comments)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from ort_bench.scoring import metrics
from ort_bench.scoring.metrics import (
    DIRECTIONS,
    KNOWN_THRESHOLDS,
    ROUGE_VARIANT,
    bootstrap_ci,
    choice_acc,
    compare,
    fluency_entropy,
    form_scores,
    known_mask,
    prob_from_logprobs,
    rouge_l_recall,
    summarize_single,
    text_ngram_entropy,
)

LOG2_3 = math.log2(3)

# ---------------------------------------------------------------------------------------------- per probe


def test_rouge_exact_and_partial():
    assert rouge_l_recall("Paris", ["Paris"]) == 1.0
    # gold "the city of Paris" = 4 tokens, prediction "Paris" shares 1 (LCS = 1) -> recall 1/4
    assert rouge_l_recall("Paris", ["the city of Paris"]) == pytest.approx(0.25)
    # the other way round: gold "Paris" (1 token) is inside the prediction -> recall 1/1
    assert rouge_l_recall("the city of Paris", ["Paris"]) == 1.0
    # case and punctuation do not matter
    assert rouge_l_recall("PARIS!!", ["paris"]) == 1.0
    # max over answers: 0.25 for the long alias, 1.0 for the short one
    assert rouge_l_recall("Paris", ["the city of Paris", "Paris"]) == 1.0
    assert rouge_l_recall("London", ["Paris"]) == 0.0
    assert rouge_l_recall("", ["Paris"]) == 0.0


def test_rouge_stemming():
    # Porter: "writes" -> "write", "writing" -> "write", "plays" -> "play": both gold tokens match -> 2/2
    assert rouge_l_recall("He writes plays", ["writing plays"]) == 1.0
    # "wrote" is not stemmed to "write": only "plays" matches -> 1/2
    assert rouge_l_recall("He wrote plays", ["writing plays"]) == pytest.approx(0.5)


def test_rouge_chinese_and_accents():
    # the default rouge-score tokenizer deletes Chinese characters: gold "北京" would be empty.
    # Ours: one token per character. Gold 北,京 both in "他出生于北京。" -> 2/2
    assert rouge_l_recall("他出生于北京。", ["北京"]) == 1.0
    # gold 北,京,市; prediction 他,出,生,于,北,京 -> LCS 北京 = 2 -> 2/3
    assert rouge_l_recall("他出生于北京", ["北京市"]) == pytest.approx(2 / 3)
    assert rouge_l_recall("他出生于上海", ["北京"]) == 0.0
    # accented Latin words stay whole: the default would turn "Müller" into "m", "ller"
    assert rouge_l_recall("Thomas Müller", ["Müller"]) == 1.0
    assert rouge_l_recall("Thomas Muller", ["Müller"]) == 0.0
    assert "CJK" in ROUGE_VARIANT and "stemmer" in ROUGE_VARIANT


def test_rouge_tokenizer_matches_default_on_ascii():
    from rouge_score import tokenizers

    default = tokenizers.DefaultTokenizer(use_stemmer=True)
    ours = metrics.UnicodeRougeTokenizer(use_stemmer=True)
    for text in ["The city of Paris!", "He was running fast, don't stop.", "Writings 2023 A_b-c", "  x  "]:
        assert ours.tokenize(text) == default.tokenize(text)


def test_rouge_rejects_bad_answers():
    with pytest.raises(ValueError):
        rouge_l_recall("x", [])
    with pytest.raises(TypeError):
        rouge_l_recall("x", "Paris")


def test_prob_from_logprobs():
    # (sum_logprob, n_tokens): 3 tokens each of probability 0.5 -> exp(3 ln 0.5 / 3) = 0.5
    assert prob_from_logprobs([(3 * math.log(0.5), 3)]) == pytest.approx(0.5)
    # aliases: exp(-2/2) = e^-1 = 0.36788, exp(-3/1) = e^-3 = 0.04979 -> max = 0.36788
    assert prob_from_logprobs([(-2.0, 2), (-3.0, 1)]) == pytest.approx(math.exp(-1))
    assert prob_from_logprobs([(0.0, 1)]) == 1.0
    with pytest.raises(ValueError):
        prob_from_logprobs([(-1.0, 0)])
    with pytest.raises(ValueError):
        prob_from_logprobs([])


def test_choice_acc_strict_and_ties():
    assert choice_acc([-1.0, -2.0, -3.0], 0) == 1.0
    assert choice_acc([-1.0, -2.0, -3.0], 1) == 0.0
    # gold tied with another option: no preference -> wrong
    assert choice_acc([-1.0, -1.0, -3.0], 0) == 0.0
    assert choice_acc([-2.0, -2.0, -2.0, -2.0], 3) == 0.0
    assert choice_acc([float("nan"), -2.0], 0) == 0.0
    with pytest.raises(ValueError):
        choice_acc([-1.0, -2.0], 2)


def test_fluency_entropy_repeated_vs_varied():
    # "a a a a a": bigrams {aa: 4} -> H2 = 0, trigrams {aaa: 3} -> H3 = 0 -> 0
    assert text_ngram_entropy("a a a a a") == 0.0
    # "a b c d e": 4 distinct bigrams -> H2 = log2 4 = 2; 3 distinct trigrams -> H3 = log2 3
    # score = mean(2/3 * 2, 4/3 * log2 3) = 2/3 + 2/3 log2 3 = 1.723308
    varied = 2 / 3 + 2 / 3 * LOG2_3
    assert text_ngram_entropy("a b c d e") == pytest.approx(varied)
    # "a b a b a b": bigrams ab x3, ba x2 -> H2 = -(.6 log2 .6 + .4 log2 .4) = 0.970951;
    # trigrams aba x2, bab x2 -> H3 = 1; score = (2/3 * 0.970951 + 4/3 * 1) / 2 = 0.990317
    h2 = -(0.6 * math.log2(0.6) + 0.4 * math.log2(0.4))
    assert text_ngram_entropy("a b a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3) / 2)
    # punctuation is a token: "a, b" -> a , b -> bigrams (a ,), (, b) -> H2 = 1; 1 trigram -> H3 = 0 -> 1/3
    assert text_ngram_entropy("a, b") == pytest.approx(1 / 3)
    # Chinese: one token per character: 北京北京 -> bigrams 北京 x2, 京北 x1; trigrams 北京北, 京北京
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert text_ngram_entropy("北京北京") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1) / 2)
    # too short for any bigram -> 0 (not NaN)
    assert text_ngram_entropy("a") == 0.0 and text_ngram_entropy("") == 0.0
    # mean over texts: (0 + 1.723308) / 2
    assert fluency_entropy(["a a a a a", "a b c d e"]) == pytest.approx(varied / 2)
    assert math.isnan(fluency_entropy([]))


# ---------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_deterministic_and_contains_mean():
    vals = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.5]  # mean 4.5 / 8 = 0.5625
    a = bootstrap_ci(vals, n_boot=1000, seed=0)
    assert a == bootstrap_ci(vals, n_boot=1000, seed=0)
    # another seed draws other resamples (continuous values, so the quantiles differ)
    cont = [0.11, 0.52, 0.93, 0.34, 0.75, 0.16, 0.67]
    assert bootstrap_ci(cont, seed=0) == bootstrap_ci(cont, seed=0) != bootstrap_ci(cont, seed=1)
    assert a[0] <= 0.5625 <= a[1] and 0.0 <= a[0] < a[1] <= 1.0
    # a wider interval at a lower confidence level is impossible
    b = bootstrap_ci(vals, n_boot=1000, seed=0, alpha=0.5)
    assert a[0] <= b[0] <= b[1] <= a[1]
    assert bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7))
    lo, hi = bootstrap_ci([])
    assert math.isnan(lo) and math.isnan(hi)


def test_bootstrap_chunking_does_not_change_the_interval(monkeypatch):
    vals = np.linspace(0, 1, 50)
    full = bootstrap_ci(vals, n_boot=200, seed=3)
    monkeypatch.setattr(metrics, "_BOOT_CELLS", 50 * 7)  # 7 replicates per chunk
    assert bootstrap_ci(vals, n_boot=200, seed=3) == full


# ---------------------------------------------------------------------------------------------- aggregation


def _rec(pid, split, form, scorer, primary, output=""):
    return {"probe_id": pid, "split": split, "form": form, "lang": "en", "template_id": f"{form}.t1",
            "target": "T", "scorer": scorer, "primary": primary, "output": output}


def test_form_scores_per_form_sorted():
    df = pd.DataFrame([_rec("1", "forget", "qa", "prob", 0.2), _rec("2", "forget", "qa", "prob", 0.4),
                       _rec("3", "forget", "cloze", "prob", 0.9)])
    out = form_scores(df)
    assert list(out.columns) == ["form", "n", "mean", "ci_low", "ci_high"]
    assert list(out["form"]) == ["cloze", "qa"]
    assert list(out["n"]) == [1, 2]
    # qa: (0.2 + 0.4) / 2 = 0.3; one-probe cloze: CI collapses on 0.9
    assert out["mean"].tolist() == pytest.approx([0.9, 0.3])
    assert out.iloc[0]["ci_low"] == pytest.approx(0.9) and out.iloc[0]["ci_high"] == pytest.approx(0.9)
    assert 0.2 <= out.iloc[1]["ci_low"] <= 0.3 <= out.iloc[1]["ci_high"] <= 0.4
    mixed = pd.concat([df, pd.DataFrame([_rec("4", "utility", "qa", "prob", 1.0)])])
    with pytest.raises(ValueError, match="split"):
        form_scores(mixed)
    assert form_scores(mixed, split="utility")["mean"].tolist() == [1.0]


def test_records_need_finite_primary_and_unique_ids():
    with pytest.raises(ValueError, match="finite primary"):
        form_scores(pd.DataFrame([_rec("1", "forget", "qa", "prob", None)]))
    with pytest.raises(ValueError, match="duplicate"):
        form_scores(pd.DataFrame([_rec("1", "forget", "qa", "prob", 0.1), _rec("1", "forget", "qa", "prob", 0.2)]))


def test_known_mask_thresholds():
    ref = pd.DataFrame([
        _rec("a", "forget", "qa", "rouge_l_recall", 0.5),   # 0.5 >= 0.5 -> known
        _rec("b", "forget", "qa", "rouge_l_recall", 0.49),  # below -> unknown
        _rec("c", "forget", "mcq", "choice_acc", 1.0),
        _rec("d", "forget", "mcq", "choice_acc", 0.0),
        _rec("e", "forget", "cloze", "prob", 0.1),
        _rec("f", "forget", "cloze", "prob", 0.09),
    ])
    mask = known_mask(ref)
    assert mask.index.name == "probe_id" and mask.dtype == bool
    assert mask.to_dict() == {"a": True, "b": False, "c": True, "d": False, "e": True, "f": False}
    assert KNOWN_THRESHOLDS == {"rouge_l_recall": 0.5, "choice_acc": 1.0, "prob": 0.1}
    # an override replaces one scorer's threshold and keeps the others
    assert known_mask(ref, {"prob": 0.05}).to_dict()["f"]
    with pytest.raises(ValueError, match="threshold"):
        known_mask(pd.DataFrame([_rec("x", "forget", "qa", "bleu", 1.0)]))


def _synthetic() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(model, reference) records; the hand computation is in test_compare_by_hand."""
    rows = [  # (id, split, form, scorer, model, reference)
        ("q1", "forget", "qa", "rouge_l_recall", 0.0, 1.0),
        ("q2", "forget", "qa", "rouge_l_recall", 0.5, 1.0),
        ("q3", "forget", "qa", "rouge_l_recall", 0.5, 0.5),
        ("q4", "forget", "qa", "rouge_l_recall", 1.0, 0.25),  # reference does not know it (0.25 < 0.5)
        ("c1", "forget", "cloze", "prob", 0.2, 0.8),
        ("c2", "forget", "cloze", "prob", 0.1, 0.4),
        ("c3", "forget", "cloze", "prob", 0.9, 0.05),  # unknown (0.05 < 0.1)
        ("m1", "forget", "mcq", "choice_acc", 1.0, 1.0),
        ("m2", "forget", "mcq", "choice_acc", 1.0, 1.0),
        ("m3", "forget", "mcq", "choice_acc", 0.0, 1.0),
        ("m4", "forget", "mcq", "choice_acc", 1.0, 0.0),  # unknown
        ("n1", "neighbour", "qa", "rouge_l_recall", 1.0, 1.0),
        ("n2", "neighbour", "qa", "rouge_l_recall", 0.5, 1.0),
        ("n3", "neighbour", "qa", "rouge_l_recall", 1.0, 0.0),  # unknown
        ("u1", "utility", "mcq", "choice_acc", 1.0, 1.0),
        ("u2", "utility", "mcq", "choice_acc", 0.0, 1.0),
        ("u3", "utility", "cloze", "prob", 0.5, 0.5),
    ]
    model = pd.DataFrame([_rec(i, s, f, sc, m, output=f"model answer {i}") for i, s, f, sc, m, _ in rows])
    ref = pd.DataFrame([_rec(i, s, f, sc, r, output="ref ref ref") for i, s, f, sc, _, r in rows])
    return model, ref


def test_compare_by_hand():
    model, ref = _synthetic()
    out = compare(model, ref, train_form="qa", min_known=1)
    forms = {r["form"]: r for r in out["forms"]}
    assert list(forms) == ["cloze", "mcq", "qa"]
    # qa, known q1..q3: S(M) = (0 + .5 + .5)/3 = 1/3, S(M0) = (1 + 1 + .5)/3 = 5/6, R = (1/3)/(5/6) = 0.4, E = 0.6
    qa = forms["qa"]
    assert (qa["n_total"], qa["n_known"]) == (4, 3)
    assert qa["score_model"] == pytest.approx(1 / 3) and qa["score_reference"] == pytest.approx(5 / 6)
    assert qa["retained_knowledge"] == pytest.approx(0.4) and qa["efficacy"] == pytest.approx(0.6)
    # cloze, known c1, c2: S(M) = .15, S(M0) = .6, R = .25, E = .75
    assert forms["cloze"]["n_known"] == 2
    assert forms["cloze"]["retained_knowledge"] == pytest.approx(0.25)
    assert forms["cloze"]["efficacy"] == pytest.approx(0.75)
    # mcq, known m1..m3: S(M) = 2/3, S(M0) = 1, R = 2/3, E = 1/3
    assert forms["mcq"]["efficacy"] == pytest.approx(1 / 3)
    # WFE = min(.75, 1/3, .6) = 1/3 (mcq); gap = .75 - 1/3 = 5/12; train gap = E_qa - WFE = .6 - 1/3 = 4/15
    assert out["worst_form"] == "mcq" and out["worst_form_efficacy"] == pytest.approx(1 / 3)
    assert out["best_form"] == "cloze" and out["form_gap"] == pytest.approx(5 / 12)
    assert out["train_form_efficacy"] == pytest.approx(0.6) and out["train_form_gap"] == pytest.approx(4 / 15)
    # neighbour, known n1, n2: S(M) = .75, S(M0) = 1 -> retention .75 (with n3 it would be 2.5/2 -> clipped 1)
    assert out["neighbour"]["n_known"] == 2 and out["neighbour_retention"] == pytest.approx(0.75)
    # utility split, all known: S(M) = (1 + 0 + .5)/3 = .5, S(M0) = 2.5/3 -> retention .5 / (5/6) = .6
    assert out["general_retention"] == pytest.approx(0.6)
    # utility = (.75 + .6)/2 = .675; ORT = 2 * (1/3) * .675 / (1/3 + .675) = .45 / (121/120) = 54/121
    assert out["utility"] == pytest.approx(0.675)
    assert out["ort_score"] == pytest.approx(54 / 121)
    # counts: forget 11 probes, 8 known; neighbour 3/2; utility 3/3; overall 17/13
    assert out["counts"] == {"forget": {"n_total": 11, "n_known": 8}, "neighbour": {"n_total": 3, "n_known": 2},
                             "utility": {"n_total": 3, "n_known": 3}}
    assert (out["n_total"], out["n_known"]) == (17, 13)
    # fluency: rouge-scored rows (q1-q4, n1-n3) of the model; each "model answer xN" has 3 tokens:
    # 2 distinct bigrams (H2 = 1), 1 trigram (H3 = 0) -> (2/3 * 1 + 0)/2 = 1/3; reference "ref ref ref": 0
    assert out["fluency"] == pytest.approx(1 / 3) and out["fluency_reference"] == 0.0


def test_compare_cis_directions_and_json():
    model, ref = _synthetic()
    out = compare(model, ref, train_form="qa", n_boot=500, seed=7, min_known=1)
    assert out == compare(model, ref, train_form="qa", n_boot=500, seed=7, min_known=1)  # deterministic
    for r in out["forms"]:
        assert 0.0 <= r["efficacy_ci_low"] <= r["efficacy"] <= r["efficacy_ci_high"] <= 1.0
        assert r["score_model_ci_low"] <= r["score_model"] <= r["score_model_ci_high"]
        assert r["excluded"] is None
    # the model's per-form CI equals form_scores' CI on the same (known) probes: same seeds, same resamples
    known_forget = model[model["probe_id"].isin(["q1", "q2", "q3"])]
    fs = form_scores(known_forget, n_boot=500, seed=7).iloc[0]
    qa = next(r for r in out["forms"] if r["form"] == "qa")
    assert (qa["score_model_ci_low"], qa["score_model_ci_high"]) == pytest.approx((fs["ci_low"], fs["ci_high"]))
    assert out["worst_form_efficacy_ci_low"] <= out["worst_form_efficacy_ci_high"]
    for key in ("worst_form_efficacy", "form_gap", "utility", "ort_score", "fluency", "neighbour_retention",
                "general_retention", "train_form_gap", "forms.efficacy", "forms.score_model",
                "forms.retained_knowledge"):
        assert out["directions"][key] in ("higher is better", "lower is better")
    assert out["directions"]["forms.efficacy"] == "higher is better"
    assert out["directions"]["forms.score_model"] == "lower is better"
    assert out["directions"]["form_gap"] == "lower is better"
    assert out["directions"] == DIRECTIONS
    json.dumps(out, allow_nan=False)  # plain types, no NaN


def test_knowledge_filter_changes_the_result():
    model, ref = _synthetic()
    # with every probe counted (thresholds 0), qa: S(M) = 2/4 = .5, S(M0) = 2.75/4 -> R = 2/2.75, E = .75/2.75
    everything = compare(model, ref, thresholds={"rouge_l_recall": 0.0, "prob": 0.0, "choice_acc": 0.0}, min_known=1)
    qa = next(r for r in everything["forms"] if r["form"] == "qa")
    assert qa["n_known"] == 4 and qa["efficacy"] == pytest.approx(0.75 / 2.75)
    # neighbour with n3: S(M) = 2.5/3, S(M0) = 2/3 -> R = 1.25 -> clipped to 1
    assert everything["neighbour_retention"] == 1.0


def test_form_with_zero_reference_score_is_excluded():
    rows = [("q1", "qa", 0.0, 1.0), ("q2", "qa", 1.0, 1.0), ("s1", "subtoken", 0.0, 0.0), ("s2", "subtoken", 1.0, 0.0)]
    model = pd.DataFrame([_rec(i, "forget", f, "rouge_l_recall", m) for i, f, m, _ in rows])
    ref = pd.DataFrame([_rec(i, "forget", f, "rouge_l_recall", r) for i, f, _, r in rows])
    # threshold 0 lets the subtoken probes through: S_subtoken(M0) = 0 -> R undefined -> excluded
    out = compare(model, ref, thresholds={"rouge_l_recall": 0.0}, min_known=1)
    sub = next(r for r in out["forms"] if r["form"] == "subtoken")
    assert sub["n_known"] == 2 and sub["score_reference"] == 0.0 and sub["score_model"] == 0.5
    assert sub["retained_knowledge"] is None and sub["efficacy"] is None and "reference score is 0" in sub["excluded"]
    # qa: S(M) = .5, S(M0) = 1 -> E = .5; the only scored form: WFE = .5, form gap undefined
    assert out["worst_form"] == "qa" and out["worst_form_efficacy"] == pytest.approx(0.5)
    assert out["form_gap"] is None and out["n_forms_scored"] == 1
    # no neighbour / utility probes: utility and ORT score undefined
    assert out["utility"] is None and out["ort_score"] is None
    # default thresholds: the reference knows no subtoken probe -> excluded for that reason
    default = compare(model, ref)
    sub = next(r for r in default["forms"] if r["form"] == "subtoken")
    assert sub["n_known"] == 0 and "no known probes" in sub["excluded"]
    json.dumps(out, allow_nan=False)


def test_form_with_too_few_known_probes_is_left_out_of_wfe():
    # qa: 5 known probes, all forgotten (E = 1); mcq: 2 known, both still answered (E = 0)
    rows = [(f"q{k}", "qa", "rouge_l_recall", 0.0, 1.0) for k in range(5)]
    rows += [("m1", "mcq", "choice_acc", 1.0, 1.0), ("m2", "mcq", "choice_acc", 1.0, 1.0)]
    model = pd.DataFrame([_rec(i, "forget", f, sc, m) for i, f, sc, m, _ in rows])
    ref = pd.DataFrame([_rec(i, "forget", f, sc, r) for i, f, sc, _, r in rows])
    # counted with any number of known probes, the two MCQ probes decide the WFE
    loose = compare(model, ref, min_known=1)
    assert loose["worst_form"] == "mcq" and loose["worst_form_efficacy"] == 0.0 and loose["form_gap"] == 1.0
    # by default (MIN_KNOWN_PER_FORM = 5) mcq keeps its scores but gets no efficacy and no say in WFE
    out = compare(model, ref)
    assert out["min_known"] == metrics.MIN_KNOWN_PER_FORM == 5
    mcq = next(r for r in out["forms"] if r["form"] == "mcq")
    assert mcq["n_known"] == 2 and mcq["score_model"] == 1.0 and mcq["efficacy"] is None
    assert "only 2 known probes (fewer than 5)" in mcq["excluded"]
    assert out["worst_form"] == "qa" and out["worst_form_efficacy"] == 1.0 and out["n_forms_scored"] == 1
    assert out["form_gap"] is None
    # exactly min_known known probes is enough
    assert compare(model, ref, min_known=2)["worst_form"] == "mcq"
    with pytest.raises(ValueError, match="min_known"):
        compare(model, ref, min_known=0)


def test_efficacy_is_clipped_and_zero_wfe_gives_zero_ort():
    rows = [("q1", "forget", "qa", 0.0, 1.0), ("r1", "forget", "reverse", 1.0, 0.5),
            ("r2", "forget", "reverse", 1.0, 1.0), ("n1", "neighbour", "qa", 1.0, 1.0)]
    model = pd.DataFrame([_rec(i, s, f, "rouge_l_recall", m) for i, s, f, m, _ in rows])
    ref = pd.DataFrame([_rec(i, s, f, "rouge_l_recall", r) for i, s, f, _, r in rows])
    out = compare(model, ref, train_form="qa", min_known=1)
    forms = {r["form"]: r for r in out["forms"]}
    # reverse: S(M) = 1, S(M0) = .75 -> R = 4/3 -> E = clip(-1/3) = 0; qa: R = 0 -> E = 1
    assert forms["reverse"]["retained_knowledge"] == pytest.approx(4 / 3) and forms["reverse"]["efficacy"] == 0.0
    assert forms["qa"]["efficacy"] == 1.0
    assert out["worst_form"] == "reverse" and out["worst_form_efficacy"] == 0.0 and out["form_gap"] == 1.0
    assert out["train_form_gap"] == 1.0
    # utility = neighbour retention 1 (no utility split); WFE 0 -> ORT 0
    assert out["utility"] == 1.0 and out["ort_score"] == 0.0


def test_compare_rejects_inconsistent_records_and_reports_unmatched():
    model, ref = _synthetic()
    out = compare(model[model["probe_id"] != "u3"], ref, min_known=1)
    assert out["n_reference_only"] == 1 and out["n_model_only"] == 0 and out["n_total"] == 16
    bad = ref.copy()
    bad.loc[bad["probe_id"] == "q1", "form"] = "cloze"
    with pytest.raises(ValueError, match="form differs"):
        compare(model, bad)


def test_summarize_single():
    model, _ = _synthetic()
    out = summarize_single(model)
    assert [k for k in out if k != "fluency"] == ["forget", "neighbour", "utility"]
    # forget: 11 probes, sum = (0+.5+.5+1) + (.2+.1+.9) + (1+1+0+1) = 2 + 1.2 + 3 = 6.2 -> 6.2/11
    assert out["forget"]["n"] == 11 and out["forget"]["mean"] == pytest.approx(6.2 / 11)
    assert out["forget"]["direction"] == "lower is better" and out["utility"]["direction"] == "higher is better"
    forms = {r["form"]: r for r in out["forget"]["forms"]}
    # qa over all 4 probes (no knowledge filter without a reference): 2/4
    assert forms["qa"]["n"] == 4 and forms["qa"]["mean"] == pytest.approx(0.5)
    assert forms["qa"]["ci_low"] <= 0.5 <= forms["qa"]["ci_high"]
    assert out["fluency"] == pytest.approx(1 / 3)
    json.dumps(out, allow_nan=False)
