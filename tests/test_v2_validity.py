"""Benchmark v2: a number must mean what its name says.

- True/false renders as pairs and MCQ as rotations; answerers with no knowledge (always the first
  option, always "True", always "False", random) run through the real scoring code (`score_probes`)
  with fake backends and know no item of any choice form, and never define an efficacy.
- Scores are means over targets; intervals resample targets; a form needs 5 known items from 3 targets.
- No retain-eval fact reaches a method (unlearn card) and only retain-eval facts are scored.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ort_bench.api import render
from ort_bench.benchmark import CURRENT, V1, V2, V3, get_version
from ort_bench.kb.facts import load_kb, retain_half
from ort_bench.models.prompting import format_prompt
from ort_bench.scorers import NEUTRAL_PROMPT, SCORERS, choice_scores, get_scorer
from ort_bench.scoring import metrics
from ort_bench.scoring.backends import Backend, LogLikelihood
from ort_bench.scoring.evaluate import EvalConfig
from ort_bench.scoring.metrics_v2 import compare_v2, items_of
from ort_bench.scoring.scoring_loop import score_probes
from ort_bench.scoring.selection import select_probes

TARGETS = ["william_shakespeare", "isaac_newton", "hamlet", "japan", "france", "paris", "london", "nasa"]
TOKENIZER = SimpleNamespace(chat_template=None, bos_token=None)  # plain prompts: the fakes read them as text


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def choice_probes():
    probes, _ = render(split="forget", forms=["true_false", "mcq"], targets=TARGETS)
    return probes


def _by_item(probes):
    out = defaultdict(list)
    for p in probes:
        out[p.item_key].append(p)
    return out


def test_true_false_renders_pairs_of_the_same_template(choice_probes):
    items = {k: v for k, v in _by_item(choice_probes).items() if v[0].form == "true_false"}
    assert items
    for ps in items.values():
        assert [p.variant for p in ps] == ["true", "false"] and all(p.item_size == 2 for p in ps)
        assert [p.answers[0] for p in ps] == ["True", "False"]
        assert len({p.template_id for p in ps}) == 1 and len({p.fact_ids for p in ps}) == 1
        assert ps[0].prompt != ps[1].prompt  # the false statement replaces the true one


def test_mcq_renders_every_rotation_with_the_gold_in_every_position(choice_probes):
    items = {k: v for k, v in _by_item(choice_probes).items() if v[0].form == "mcq"}
    assert items
    for ps in items.values():
        assert [p.variant for p in ps] == ["rot0", "rot1", "rot2", "rot3"]
        golds = [p.gold_index for p in ps]
        assert sorted(golds) == [0, 1, 2, 3]  # the gold option sits once in each position
        if ps[0].choices == ("A", "B", "C", "D"):
            assert len({p.prompt for p in ps}) == 4


def test_limit_never_cuts_an_item():
    probes, _ = select_probes(splits=("forget",), forms=["true_false", "mcq"], targets=TARGETS, limit=7)
    items = _by_item(probes)
    assert len(items) == 7 and all(len(ps) == ps[0].item_size for ps in items.values())


# --------------------------------------------------------------------------------------------------
# answerers with no knowledge, through the real scoring code
# --------------------------------------------------------------------------------------------------

def _rnd(*parts: str) -> float:
    return int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:8], 16) / 2 ** 32


class Answerer(Backend):
    """A fake backend: log-likelihood of a continuation from a rule over (context, continuation)."""

    name = "fake"

    def __init__(self, rule):
        self.rule = rule

    def generate(self, prompts, params):
        return ["I do not know." for _ in prompts]

    def loglikelihood(self, requests):
        return [LogLikelihood(self.rule(ctx, cont.strip()), 1) for ctx, cont in requests]


def first_option(ctx: str, cont: str) -> float:
    """Always "A"; among option texts (not shown in the prompt, so no position to prefer) always the
    same text, whatever the question: a fixed preference over names."""
    if cont in ("A", "B", "C", "D"):
        return -1.0 if cont == "A" else -5.0
    return -1.0 - _rnd(cont)


ANSWERERS = {
    "always-first-option": first_option,
    "always-true": lambda ctx, cont: -1.0 if cont == "True" else -5.0,
    "always-false": lambda ctx, cont: -1.0 if cont == "False" else -5.0,
    "random": lambda ctx, cont: -5.0 * _rnd("random", ctx, cont),
}


def _oracle(probes):
    """Knows every answer: the gold continuation after the probe's own prompt is the likeliest."""
    gold = {(format_prompt(TOKENIZER, p.prompt, p.system, p.prefill), p.answers[0]) for p in probes}

    def rule(ctx: str, cont: str) -> float:
        if ctx.startswith(NEUTRAL_PROMPT):
            return -3.0
        return -0.5 if (ctx, cont) in gold else -4.0
    return rule


def _records(rule, probes) -> pd.DataFrame:
    scored = score_probes(Answerer(rule), TOKENIZER, probes, EvalConfig())
    rows = []
    for p, rec in zip(probes, scored, strict=True):
        rows.append({"probe_id": p.id, "split": p.split, "target": p.target, "form": p.form, "scorer": p.scorer,
                     "fact_ids": list(p.fact_ids), "item_id": p.item_id, "item_size": p.item_size, **rec})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("name", sorted(ANSWERERS))
def test_no_knowledge_knows_no_item_and_defines_no_efficacy(choice_probes, name):
    recs = _records(ANSWERERS[name], choice_probes)
    out = compare_v2(recs, recs, version=V2)
    rows = {r["form"]: r for r in out["forms"]}
    assert set(rows) == {"mcq", "true_false"}
    for form, row in rows.items():
        assert row["efficacy"] is None and row["excluded"], (name, form, row)
        assert row["chance"] > 0
        if name != "random":
            assert row["n_known"] == 0, (name, form)
    assert out["worst_form_efficacy"] is None


@pytest.mark.parametrize("name", sorted(ANSWERERS))
def test_an_unlearned_model_with_no_knowledge_has_forgotten_everything(choice_probes, name):
    ref = _records(_oracle(choice_probes), choice_probes)
    out = compare_v2(_records(ANSWERERS[name], choice_probes), ref, version=V2)
    rows = {r["form"]: r for r in out["forms"]}
    assert all(r["n_known"] == r["n_total"] for r in rows.values())  # the oracle knows every item
    for form, row in rows.items():
        assert row["efficacy"] is not None
        assert row["efficacy"] == 1.0 if name != "random" else row["efficacy"] >= 0.7, (name, form, row)


def test_v1_let_answer_bias_through(choice_probes):
    """Why v2: under v1 (one probe per item, no pairs) an always-"False" model knew every false
    statement; under v2 it knows nothing."""
    probes = [p for p in choice_probes if p.form == "true_false"]
    recs = _records(ANSWERERS["always-false"], probes).drop(columns=["item_id", "item_size"])
    recs["scorer"] = "choice_acc"
    v1 = metrics.compare(recs, recs)
    assert v1["forms"][0]["n_known"] == len(probes) // 2


def test_every_form_records_its_chance_level(choice_probes):
    recs = _records(ANSWERERS["random"], choice_probes)
    items = items_of(recs, V2)
    tf = items[items["form"] == "true_false"]["chance"].unique()
    assert list(tf) == [0.25]  # two binary decisions
    mcq = items[items["form"] == "mcq"]["chance"].unique()
    assert set(np.round(mcq, 6)) <= {round(1 / 256, 6), 0.25}  # 4 rotations shown; ranked texts: one decision


def test_rank_rotations_are_one_decision_and_share_their_likelihoods(choice_probes):
    ranked = [p for p in choice_probes if p.template_id == "mcq-rank-en"][:8]
    calls = []

    class Counting(Answerer):
        def loglikelihood(self, requests):
            calls.extend(requests)
            return super().loglikelihood(requests)

    score_probes(Counting(ANSWERERS["random"]), TOKENIZER, ranked, EvalConfig())
    assert len(calls) == len(set(calls)) <= 2 * 4 * 2  # 2 items x 4 options, after the prompt and the neutral one


def test_an_item_with_a_missing_probe_is_an_error(choice_probes):
    recs = _records(ANSWERERS["random"], choice_probes)
    with pytest.raises(ValueError, match="of its 4 probes are in the records"):
        items_of(recs[recs["form"] == "mcq"].iloc[1:], V2)


def test_the_circular_scorer_is_length_normalised_and_calibrated():
    # "Paris" (5 bytes) is 1 nat less likely than "Rome" (4) after the prompt, but gains 2 nats over the
    # neutral prompt where "Rome" loses 1: per byte of the option, 2/5 against -1/4
    scores = choice_scores(get_scorer("circular_choice"), [-6.0, -5.0], ["Paris", "Rome"], [-8.0, -4.0])
    assert scores == [pytest.approx(2 / 5), pytest.approx(-1 / 4)]
    assert SCORERS["label_pair"].item_chance([2, 2]) == 0.25 and SCORERS["rouge_l_recall"].item_chance([]) == 0.0


# --------------------------------------------------------------------------------------------------
# target-level aggregation and intervals
# --------------------------------------------------------------------------------------------------

def _synthetic(spec: dict[str, list[tuple[float, float]]], form: str = "qa") -> tuple[pd.DataFrame, pd.DataFrame]:
    """spec: target -> [(model score, reference score), ...] of one rouge form."""
    m, r = [], []
    for t, pairs in spec.items():
        for i, (sm, sr) in enumerate(pairs):
            base = {"probe_id": f"{t}-{i}", "split": "forget", "form": form, "scorer": "rouge_l_recall",
                    "target": t, "fact_ids": [f"{t}.f{i}"], "output": "x"}
            m.append({**base, "primary": sm})
            r.append({**base, "primary": sr})
    return pd.DataFrame(m), pd.DataFrame(r)


def test_a_form_score_is_the_mean_over_targets_not_over_items():
    # target a: 8 items fully kept; b and c: 1 item each, forgotten
    spec = {"a": [(1.0, 1.0)] * 8, "b": [(0.0, 1.0)], "c": [(0.0, 1.0)]}
    row = compare_v2(*_synthetic(spec), version=V2)["forms"][0]
    assert row["score_model"] == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3
    assert row["score_model_pooled"] == pytest.approx(0.8)  # 8 / 10, kept beside it
    assert row["efficacy"] == pytest.approx(2 / 3)


def test_intervals_resample_targets():
    spec = {t: [(1.0 if t in "ab" else 0.0, 1.0)] * 6 for t in "abcdef"}
    out = compare_v2(*_synthetic(spec), version=V2)
    row = out["forms"][0]
    assert row["efficacy"] == pytest.approx(4 / 6)
    # whole targets move in or out of a replicate: the interval is as wide as 6 clusters make it,
    # much wider than resampling 36 probes would give
    assert row["efficacy_ci_high"] - row["efficacy_ci_low"] > 0.5
    assert "over targets" in out["ci_method"]


def test_a_form_needs_known_items_from_three_targets():
    spec = {"a": [(0.0, 1.0)] * 6, "b": [(0.0, 1.0)] * 6, "c": [(0.0, 0.0)] * 6}
    row = compare_v2(*_synthetic(spec), version=V2)["forms"][0]
    assert row["efficacy"] is None and "from only 2 target(s)" in row["excluded"]


def test_ort_prob_is_reported_per_form():
    m, r = _synthetic({t: [(0.5, 1.0)] * 2 for t in "abc"})
    m["prob"] = [0.1, 0.3] * 3
    r["prob"] = [0.8] * 6
    row = compare_v2(m, r, version=V2)["forms"][0]
    assert row["prob_model"] == pytest.approx(0.2) and row["prob_reference"] == pytest.approx(0.8)


# --------------------------------------------------------------------------------------------------
# the benchmark definition and held-out utility
# --------------------------------------------------------------------------------------------------

def test_versions_are_defined_in_one_place():
    assert CURRENT is V3 and get_version("v1") is V1 and get_version("v2") is V2
    assert V1.open_for_submissions is False and V2.open_for_submissions is False  # v1, v2 closed: v3 current
    assert V2.retain_split and V2.aggregation == "targets" and V3.retain_split and V3.aggregation == "targets"


def test_retain_halves_are_deterministic_and_both_used():
    kb = load_kb()
    ids = [f.id for s in ("neighbour", "utility") for f in kb.facts[s]]
    halves = [retain_half(i) for i in ids]
    assert halves == [retain_half(i) for i in ids] and {"train", "eval"} == set(halves)
    assert 0.35 < halves.count("train") / len(halves) < 0.65


@pytest.mark.usefixtures("one_torch_thread")
def test_no_retain_eval_fact_reaches_a_method(tiny_llama_dir, tmp_path):
    from ort_bench.scoring.evaluate import evaluate
    from ort_bench.unlearning.unlearn import build_data, checked_targets, unlearn

    card = unlearn("ga", str(tiny_llama_dir), ["france"], tmp_path / "ga", max_steps=1, progress=False)
    seen = set(card["data"]["seen_fact_ids"])
    assert json.loads((tmp_path / "ga" / "unlearn_card.json").read_text())["data"]["seen_fact_ids"]
    targets, kb, templates = checked_targets(["france", "japan"], "unlearn")
    _, rocr = build_data(kb, templates, targets, "qa", "rocr")  # ROCR's key corpus
    seen |= set(rocr["seen_fact_ids"])
    retained = {f.id for s in ("neighbour", "utility") for f in kb.facts[s]}
    assert seen & retained and all(retain_half(f) == "train" for f in seen & retained)

    evaluate(str(tmp_path / "ga"), tmp_path / "eval", targets=["france"], limit=6, config=EvalConfig(
        max_new_tokens=2, batch_size=8), progress=False)
    recs = [json.loads(x) for x in (tmp_path / "eval" / "records.jsonl").read_text().splitlines()]
    scored = {f for r in recs if r["split"] != "forget" for f in r["fact_ids"] if f in retained}
    assert scored and not scored & seen and all(retain_half(f) == "eval" for f in scored)


def test_general_knowledge_items_cluster_by_fact():
    """Utility facts belong to no target (None in the records): each fact is its own cluster, and
    general retention is defined (a None target must not make the items vanish from the groups)."""
    rows = []
    for i in range(6):
        for t in ("qa-a", "qa-b"):
            rows.append({"probe_id": f"{t}-{i}", "split": "utility", "form": "qa", "scorer": "rouge_l_recall",
                         "target": None, "fact_ids": [f"u.f{i}"], "primary": 1.0, "output": "x"})
    m = pd.DataFrame(rows)
    r = m.copy()
    out = compare_v2(m.assign(primary=[0.5] * len(m)), r, version=V2)
    assert out["general"]["n_clusters_known"] == 6 and out["general_retention"] == pytest.approx(0.5)
