"""Benchmark v3's comparison on synthetic records with a known answer: few targets still give a number,
seen forms leave the headline, the noise gap separates form dependence from noise."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from ort_bench.benchmark import V3
from ort_bench.scoring.metrics_v3 import compare_v3
from ort_bench.scoring.results import markdown_table


def _records(efficacy: dict[str, float], *, targets: int, facts: int, seed: int = 0, known: float = 1.0,
             other: int = 20, retain: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model and reference records: the reference knows every forget item (share `known`), the model
    keeps each with probability 1 - efficacy[form]; neighbour and utility items kept with `retain`."""
    rng = random.Random(seed)
    model, ref = [], []

    def add(pid: str, split: str, form: str, target: str | None, fact: str, keep_m: bool, keep_r: bool) -> None:
        for rows, keep in ((model, keep_m), (ref, keep_r)):
            rows.append({"probe_id": pid, "split": split, "form": form, "scorer": "answer_match",
                         "primary": float(keep), "target": target, "fact_ids": [fact], "prob": 0.5,
                         "output": "it is Paris, the capital" if keep else "I do not know that one"})

    for form, e in efficacy.items():
        for t in range(targets):
            for f in range(facts):
                add(f"{form}-{t}-{f}", "forget", form, f"t{t}", f"t{t}.f{f}", rng.random() >= e,
                    rng.random() < known)
    for i in range(other):
        add(f"n-{i}", "neighbour", "qa", f"t{i % max(targets, 1)}", f"n{i}", rng.random() < retain, True)
        add(f"u-{i}", "utility", "qa", None, f"u{i}", rng.random() < retain, True)
    return pd.DataFrame(model), pd.DataFrame(ref)


def _results(c: dict) -> dict:
    return {"benchmark_version": "v3", "comparison": c, "forms": c["forms"], "worst_form": c["worst_form"],
            "worst_form_efficacy": c["worst_form_efficacy"], "form_gap": c["form_gap"],
            "train_form_gap": c["train_form_gap"], "utility": c["utility"], "ort_score": c["ort_score"]}


def test_a_single_target_checkpoint_gets_a_qa_efficacy_with_an_interval_over_facts():
    m, r = _records({"qa": 0.9, "cloze": 0.5}, targets=1, facts=12)
    c = compare_v3(m, r, V3, n_boot=300)
    qa = next(f for f in c["forms"] if f["form"] == "qa")
    assert c["few_targets"] and c["cluster_unit"] == "fact" and qa["cluster_unit"] == "fact"
    assert qa["excluded"] is None and qa["efficacy"] is not None
    assert qa["efficacy_ci_low"] <= qa["efficacy"] <= qa["efficacy_ci_high"]
    assert qa["efficacy"] > 0.6
    assert "intervals over facts" in markdown_table(_results(c))


def test_with_three_targets_or_more_intervals_are_over_targets():
    m, r = _records({"qa": 0.9, "cloze": 0.5}, targets=6, facts=5)
    c = compare_v3(m, r, V3, n_boot=300)
    assert not c["few_targets"] and c["cluster_unit"] == "target"


def test_a_seen_form_is_reported_but_left_out_of_the_headline():
    m, r = _records({"qa": 0.95, "cloze": 0.2, "reverse": 0.6}, targets=8, facts=6)
    plain = compare_v3(m, r, V3, n_boot=300)
    assert plain["worst_form"] == "cloze"
    seen = compare_v3(m, r, V3, n_boot=300, seen_forms={"cloze": 3})
    cloze = next(f for f in seen["forms"] if f["form"] == "cloze")
    assert cloze["efficacy"] is not None and not cloze["in_headline"] and cloze["seen_probes"] == 3
    assert seen["worst_form"] == "reverse" and seen["seen_forms"] == {"cloze": 3}


def test_equal_forms_give_a_gap_within_noise_and_unequal_forms_beyond_it():
    m, r = _records({f: 0.5 for f in ("qa", "cloze", "reverse", "adversarial")}, targets=10, facts=6, seed=3)
    equal = compare_v3(m, r, V3, n_boot=300)
    assert equal["form_gap"] > 0  # a minimum over noisy forms lies below the rest even with no dependence
    assert equal["noise_gap"]["p_value"] > 0.05
    m, r = _records({"qa": 0.95, "cloze": 0.9, "reverse": 0.1, "adversarial": 0.9}, targets=10, facts=6, seed=3)
    unequal = compare_v3(m, r, V3, n_boot=300)
    assert unequal["noise_gap"]["p_value"] < 0.01 and unequal["worst_form"] == "reverse"


def test_the_paired_test_against_the_training_form():
    m, r = _records({"qa": 0.95, "cloze": 0.9, "reverse": 0.1}, targets=10, facts=6, seed=5)
    c = compare_v3(m, r, V3, n_boot=300, train_form="qa")
    by = {f["form"]: f for f in c["forms"]}
    assert by["reverse"]["p_vs_train_form"] < 0.05 and by["reverse"]["diff_vs_train_form"] > 0.5
    assert c["train_form_efficacy"] == by["qa"]["efficacy"]
    assert c["train_form_gap"] == pytest.approx(by["qa"]["efficacy"] - c["worst_form_efficacy"])


def test_fluency_is_a_distance_from_the_reference():
    m, r = _records({"qa": 0.0}, targets=4, facts=5)
    c = compare_v3(m, r, V3, n_boot=100)
    assert c["fluency_distance"] == pytest.approx(abs(c["fluency"] - c["fluency_reference"]))
    assert c["directions"]["fluency_distance"] == "lower is better"


def test_a_model_equal_to_its_reference_has_efficacy_zero_with_an_interval_at_zero():
    m, r = _records({"qa": 0.0, "cloze": 0.0}, targets=6, facts=5)
    c = compare_v3(r.copy(), r, V3, n_boot=200)
    assert c["worst_form_efficacy"] == 0.0 and c["worst_form_efficacy_ci_low"] == 0.0
    assert c["ort_score"] == 0.0
