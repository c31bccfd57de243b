"""Benchmark v3 pins submissions: a whole tier of the shipped data, with the checkpoint's card, made from
the reference, that saw none of the scored retain-eval facts. Each refusal is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_submit import edit_results, make_run, refused  # tests/ is on sys.path (no package)

from ort_bench.board.submit import submit
from ort_bench.kb.facts import load_kb
from ort_bench.kb.render import render_probes
from ort_bench.kb.templates import load_templates
from ort_bench.kb.tiers import TIERS
from ort_bench.scoring.selection import select_probes

CORE = TIERS["core"]


def _card(**changes) -> dict:
    kb, templates = load_kb(), load_templates()
    train = [t for t in templates if t.spec.half == "train"]
    trained, _ = render_probes(kb, train, "forget", forms=["qa"], targets=list(CORE.targets))
    card = {"kind": "unlearn", "method": "ga", "targets": list(CORE.targets), "train_form": "qa",
            "base_model": {"spec": "embedded", "fingerprint": "fp-ref"},
            "trained_probe_ids": sorted(p.id for p in trained),
            "data": {"seen_fact_ids": sorted({f for p in trained for f in p.fact_ids})}}
    card.update(changes)
    return card


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("pinned") / "run", tier="core", card=_card())


def test_a_whole_tier_with_its_card_is_accepted_and_the_card_travels(whole: Path, tmp_path: Path):
    summary = submit(whole, "entry", root=tmp_path / "lb")
    dest = Path(summary["dest"])
    assert (dest / "unlearn_card.json").read_bytes() == (whole / "unlearn_card.json").read_bytes()
    assert "unlearn_card.json" in json.loads((dest / "submission.json").read_text())["files"]


def test_a_limited_selection_is_refused(tmp_path: Path):
    run = make_run(tmp_path / "run", card=_card())
    refused(run, r"selection.tier is None: a v3 entry scores a whole tier", tmp_path)


def test_a_subset_of_the_tiers_targets_is_refused(tmp_path: Path, whole: Path):
    run = tmp_path / "run"
    import shutil

    shutil.copytree(whole, run)
    edit_results(run, lambda d: d["selection"].update(targets=["france", "japan", "rome"]))
    refused(run, r"selection.targets is .*: a v3 entry scores the core tier's own targets", tmp_path)


def test_a_run_without_the_card_is_refused(tmp_path: Path):
    run = make_run(tmp_path / "run", tier="core")
    refused(run, r"no readable model card", tmp_path)


def test_a_card_of_a_model_made_from_another_reference_is_refused(tmp_path: Path):
    run = make_run(tmp_path / "run", tier="core", card=_card(base_model={"fingerprint": "fp-other"}))
    refused(run, r"made from model fp-other, not from the reference scored", tmp_path)


def test_a_method_that_saw_a_scored_retain_eval_fact_is_refused(tmp_path: Path):
    probes, _ = select_probes(tier="core", splits=["utility"])
    card = _card()
    card["data"]["seen_fact_ids"].append(probes[0].fact_ids[0])
    run = make_run(tmp_path / "run", tier="core", card=card)
    refused(run, r"the method saw 1 of the scored retain-eval facts", tmp_path)


def test_other_targets_than_the_tiers_are_refused(tmp_path: Path):
    run = make_run(tmp_path / "run", tier="core", card=_card(targets=["france"]))
    refused(run, r"the method unlearned \['france'\], not the core tier's targets", tmp_path)


def test_seen_forms_that_the_card_does_not_give_are_refused(tmp_path: Path, whole: Path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(whole, run)
    edit_results(run, lambda d: d["selection"].update(seen_forms={"qa": 1}))
    refused(run, r"selection.seen_forms is \{'qa': 1\} but the card's trained probes give \{\}", tmp_path)
