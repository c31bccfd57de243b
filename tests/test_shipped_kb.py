"""The shipped knowledge base and templates meet the benchmark's coverage promises."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

from ort_bench.api import validate_templates
from ort_bench.cli import main
from ort_bench.kb.facts import LANGS, load_kb
from ort_bench.kb.render import render_probes
from ort_bench.kb.templates import FORMS, load_templates
from ort_bench.paths import templates_dir


@pytest.fixture(scope="module")
def kb():
    return load_kb()


@pytest.fixture(scope="module")
def templates():
    return load_templates()


@pytest.fixture(scope="module")
def forget(kb, templates):
    return render_probes(kb, templates, "forget")


def test_targets_kinds_facts_and_neighbours(kb):
    assert len(kb.targets) >= 60
    kinds = Counter(t.kind for t in kb.targets.values())
    assert len(kinds) >= 4, kinds
    per_target = Counter(f.target for f in kb.facts["forget"])
    # at least 4 facts a target (v3 dropped the one-letter chemical symbols O, H, He: no answer can be
    # told apart from a letter or a pronoun)
    assert all(per_target[t] >= 4 for t in kb.targets), {t: per_target[t] for t in kb.targets if per_target[t] < 4}
    neighbour_subjects = defaultdict(set)
    for f in kb.facts["neighbour"]:
        neighbour_subjects[f.target].add(f.subject)
    assert all(len(neighbour_subjects[t]) >= 2 for t in kb.targets)


def test_utility_set_is_about_none_of_the_targets(kb):
    assert len(kb.facts["utility"]) >= 100
    names = {t.name for t in kb.targets.values()} | {n for t in kb.targets.values() for n in t.neighbours}
    assert not [f.id for f in kb.facts["utility"] if f.subject in names]


def test_half_of_the_targets_have_two_hop_probes(forget, kb):
    probes, _ = forget
    with_hops = {p.target for p in probes if p.hops == 2}
    assert len(with_hops) >= len(kb.targets) / 2


def test_every_relation_speaks_every_language(kb):
    for rel in kb.relations.values():
        assert set(LANGS) <= set(rel.phrasings), rel.id
        assert len(rel.phrasings["en"].paraphrases) >= 3, rel.id


def test_render_forget_covers_all_forms_languages_and_targets(forget, kb):
    probes, summary = forget
    assert set(summary.by_form) == set(FORMS)
    assert set(summary.by_lang) == set(LANGS)
    assert len(summary.targets) == len(kb.targets) >= 60


def test_template_counts(templates):
    forms = Counter(t.spec.form for t in templates)
    assert len(templates) >= 25
    assert forms["qa"] >= 3 and forms["cloze"] >= 3
    assert set(forms) == set(FORMS)


def test_templates_readme_lists_every_shipped_template(templates):
    """templates/README.md is where a newcomer reads what each variant does: it must not go stale."""
    readme = (templates_dir() / "README.md").read_text(encoding="utf-8").split("## Shipped templates")[1]
    listed = set(re.findall(r"^\| `([a-z0-9_\-]+)` \|", readme, flags=re.M))
    assert listed == {t.id for t in templates}
    for form, n in Counter(t.spec.form for t in templates).items():
        assert f"### {form} ({n})" in readme


def test_templates_validate_over_the_whole_kb(capsys):
    templates, counts = validate_templates()
    assert all(n > 0 for n in counts.values()), [t for t, n in counts.items() if n == 0]
    assert main(["templates", "validate"]) == 0
    assert "templates valid" in capsys.readouterr().out


def test_render_cli_is_byte_identical(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["render", "--split", "forget", "--targets", "france,albert_einstein", "--out", str(a)]) == 0
    assert main(["render", "--split", "forget", "--targets", "france,albert_einstein", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 0
