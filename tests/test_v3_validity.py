"""Benchmark v3's data rules, tiers and template halves, on the shipped KB (no model)."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from ort_bench.benchmark import CURRENT, FORMS
from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import load_kb
from ort_bench.kb.render import render_probes
from ort_bench.kb.templates import load_templates
from ort_bench.kb.tiers import TIERS
from ort_bench.scoring.selection import seen_forms, select_probes

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def core():
    return select_probes(tier="core")[0]


def _facts_per_form(probes, split="forget"):
    out = defaultdict(set)
    for p in probes:
        if p.split == split:
            out[p.form].add(p.fact)
    return out


def test_v3_is_current_and_v2_closed():
    from ort_bench.benchmark import V2

    assert CURRENT.name == "v3" and CURRENT.open_for_submissions and CURRENT.pinned_submissions
    assert not V2.open_for_submissions


def test_core_tier_spans_at_least_30_facts_per_form_or_every_fact(core):
    every = _facts_per_form(select_probes(targets=list(TIERS["core"].targets), splits=["forget"])[0])
    got = _facts_per_form(core)
    assert set(got) == set(FORMS)
    for form, facts in got.items():
        assert len(facts) >= min(30, len(every[form])), (form, len(facts), len(every[form]))
    utility = {p.fact for p in core if p.split == "utility"}
    assert len(utility) >= 60, len(utility)


def test_core_tier_asks_the_same_facts_across_forms(core):
    got = _facts_per_form(core)
    assert len(got["qa"] & got["cloze"]) >= 0.9 * len(got["qa"])  # a form gap is not a change of facts


def test_core_tier_is_fixed_and_filters_do_not_move_other_forms(core):
    again, _ = select_probes(tier="core")
    assert [p.id for p in again] == [p.id for p in core]
    only_qa, _ = select_probes(tier="core", forms=["qa"])
    assert sorted(p.id for p in only_qa if p.split == "forget") == sorted(
        p.id for p in core if p.split == "forget" and p.form == "qa")


def test_a_single_target_tier_takes_every_fact_of_its_target():
    probes, _ = select_probes(tier="core", targets=["france"], splits=["forget"])
    kb = load_kb()
    n = len([f for f in kb.facts["forget"] if f.target == "france"])
    assert len(_facts_per_form(probes)["qa"]) == n


def test_limit_spreads_over_facts():
    probes, _ = select_probes(targets=["france"], splits=["forget"], forms=["qa"], limit=6)
    assert len({p.fact for p in probes}) == 6


def test_every_form_has_a_training_and_an_evaluation_half():
    halves = defaultdict(set)
    for t in load_templates():
        halves[t.spec.form].add(t.spec.half)
    assert all(h == {"train", "eval"} for h in halves.values()), halves


def test_scored_probes_are_evaluation_half_only(core):
    half = {t.id: t.spec.half for t in load_templates()}
    assert {half[p.template_id] for p in core} == {"eval"}


def test_no_evaluated_prompt_holds_a_trained_qa_prompt(core):
    """qa's training half is phrased so that no evaluation template repeats it verbatim."""
    kb, templates = load_kb(), load_templates()
    train = [t for t in templates if t.spec.half == "train" and t.spec.form == "qa"]
    trained, _ = render_probes(kb, train, "forget", targets=list(TIERS["core"].targets))
    assert seen_forms(core, [p.id for p in trained]) == {}


def test_a_form_holding_a_trained_prompt_is_reported_seen(core):
    qa_eval = [p for p in core if p.form == "qa"]
    assert seen_forms(core, [qa_eval[0].id]) == {"qa": 1}


def test_no_shipped_free_answer_item_has_its_answer_in_the_prompt(core):
    from ort_bench.answers import all_aliases_in_context

    for p in core:
        if p.choices is None:
            assert not all_aliases_in_context(p.answers, p.lang, [p.prompt, p.system or "", p.prefill or ""]), p.id


def _kb_copy(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(DATA, root)
    return root


def _append(path: Path, fact: dict) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.append(json.dumps(fact))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def test_a_retain_fact_about_a_forget_target_is_refused_naming_the_line(tmp_path: Path):
    root = _kb_copy(tmp_path)
    line = _append(root / "facts" / "neighbour.jsonl", {
        "id": "hamlet.n.macbeth.author", "subject": "Macbeth", "relation": "author", "object": "William Shakespeare",
        "object_aliases": [], "subject_aliases": [], "target": "hamlet"})
    targets = root / "targets.yaml"
    targets.write_text(targets.read_text().replace('neighbours: ["Othello"', 'neighbours: ["Macbeth", "Othello"'))
    if "Macbeth" not in targets.read_text():
        pytest.skip("fixture assumption: hamlet's neighbours")
    with pytest.raises(OrtBenchError, match=rf"neighbour.jsonl:{line}: object: 'William Shakespeare' is the forget "
                                            "target 'william_shakespeare'") as info:
        load_kb(root)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("alias, why", [("the", "stopwords"), ("O", "single letters"), ("€", "no letter")])
def test_an_alias_no_answer_can_contain_is_refused(tmp_path: Path, alias: str, why: str):
    root = _kb_copy(tmp_path)
    line = _append(root / "facts" / "utility.jsonl", {
        "id": "u.test.capital", "subject": "Testland", "relation": "capital", "object": "Testville",
        "object_aliases": [alias], "subject_aliases": [], "target": None})
    with pytest.raises(OrtBenchError, match=rf"utility.jsonl:{line}: object: answer '{alias}' cannot be scored"):
        load_kb(root)


def test_render_skips_items_whose_every_answer_stands_in_the_prompt():
    kb, templates = load_kb(), load_templates()
    _, summary = render_probes(kb, templates, "forget")
    skipped = Counter({k: v for k, v in summary.skipped.items() if k[1] == "every answer stands in the prompt"})
    assert sum(skipped.values()) > 0  # e.g. "Which country has Paris as its capital?" in a French prompt
