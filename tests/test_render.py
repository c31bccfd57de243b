"""Rendering facts into probes, on a small fixture knowledge base and fixture templates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import load_kb
from ort_bench.kb.probes import Probe, probe_id, probes_dataset, read_probes, write_probes
from ort_bench.kb.render import render_probes
from ort_bench.kb.templates import load_template, load_templates

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture()
def kb():
    return load_kb(FIX / "kb")


@pytest.fixture()
def templates():
    return load_templates(FIX / "templates")


def by_template(probes: list[Probe]) -> dict[str, list[Probe]]:
    out: dict[str, list[Probe]] = {}
    for p in probes:
        out.setdefault(p.template_id, []).append(p)
    return out


def test_forget_probes_have_every_fixture_form(kb, templates):
    probes, summary = render_probes(kb, templates, "forget")
    got = by_template(probes)
    assert got["t-qa"][0].prompt == "What is the capital of France?"
    assert got["t-qa"][0].answers == ("Paris",)
    assert got["t-qa-fr"][0].prompt == "Quelle est la capitale de France ?"
    assert got["t-rev"][0].answers == ("France",)
    assert got["t-spell"][0].answers == ("P\na\nr\ni\ns",)
    hop = got["t-hop"][0]
    assert hop.prompt == "What is the capital of the country where the Eiffel Tower is located?"
    assert hop.fact_ids == ("eiffel.country", "france.capital") and hop.hops == 2
    assert summary.targets == {"france"}
    assert all(p.split == "forget" and p.target == "france" for p in probes)


def test_mcq_has_four_distinct_options_with_gold_among_them(kb, templates):
    probes, _ = render_probes(kb, templates, "neighbour", forms=["mcq"])
    for p in probes:
        assert p.choices == ("A", "B", "C", "D")
        options = [line[3:] for line in p.prompt.splitlines()[1:5]]
        assert len(set(options)) == 4
        gold_fact = {"germany.capital": "Berlin", "spain.capital": "Madrid"}[p.fact_ids[0]]
        assert options[p.gold_index] == gold_fact


OPTION_TEXT_TEMPLATE = """id: t-mcq-text
form: mcq
lang: en
scorer: circular_choice
needs: [question, options]
choices: option_texts
prompt: |-
  {{ question }}
  {% for o in options %}- {{ o }}
  {% endfor %}Reply with the option.
target: "{{ answer }}"
"""


def test_option_text_mcq_scores_the_options_themselves(kb, tmp_path):
    path = tmp_path / "mcq-text.yaml"
    path.write_text(OPTION_TEXT_TEMPLATE)
    probes, _ = render_probes(kb, [load_template(path)], "neighbour", forms=["mcq"])
    assert probes
    for p in probes:
        shown = [line[2:] for line in p.prompt.splitlines()[1:5]]
        assert p.choices == tuple(shown) and len(set(shown)) == 4  # this fact's options, in the shown order
        gold = {"germany.capital": "Berlin", "spain.capital": "Madrid"}[p.fact_ids[0]]
        assert p.answers == (gold,) and p.choices[p.gold_index] == gold
    # ranking (the options not shown): the same choices, in the same order, for the same fact
    path.write_text(OPTION_TEXT_TEMPLATE.replace("{% for o in options %}- {{ o }}\n  {% endfor %}", ""))
    ranked, _ = render_probes(kb, [load_template(path)], "neighbour", forms=["mcq"])
    assert [(p.prompt, p.choices, p.answers) for p in ranked] == \
        [(p.prompt.splitlines()[0] + "\nReply with the option.", p.choices, p.answers) for p in probes]
    # the options it scores must be declared (facts without 4 options are then skipped, not crashed on)
    path.write_text(OPTION_TEXT_TEMPLATE.replace("needs: [question, options]", "needs: [question]")
                    .replace("{% for o in options %}- {{ o }}\n  {% endfor %}", ""))
    with pytest.raises(OrtBenchError, match="mcq-text.yaml: options: an option_texts template scores the options"):
        load_template(path)


def test_mcq_without_four_options_is_skipped_and_counted(kb, templates):
    # located_in_country has one distinct object in the fixture: no 3 distractors.
    probes, summary = render_probes(kb, templates, "utility", forms=["mcq"])
    assert all(p.fact_ids != ("colosseum.country",) for p in probes)
    assert summary.skipped[("t-mcq", "no options for this fact")] == 1


def test_missing_language_phrasing_is_skipped_with_reason(kb, templates):
    _, summary = render_probes(kb, templates, "utility", forms=["cross_lingual"])
    assert summary.skipped[("t-qa-fr", "relation has no fr phrasing")] == 1


def test_localised_names_and_answers(kb, templates):
    probes, _ = render_probes(kb, templates, "neighbour", langs=["fr"])
    germany = next(p for p in probes if p.fact_ids == ("germany.capital",))
    assert germany.prompt == "Quelle est la capitale de Allemagne ?"


def test_aliases_become_answers(kb, templates):
    probes, _ = render_probes(kb, templates, "utility", forms=["qa"])
    egypt = next(p for p in probes if p.fact_ids == ("egypt.capital",))
    assert egypt.answers == ("Cairo", "Al-Qahira")


def test_render_is_deterministic_and_ids_are_stable(kb, templates, tmp_path):
    a, _ = render_probes(kb, templates, "utility")
    b, _ = render_probes(kb, list(reversed(templates)), "utility")
    write_probes(tmp_path / "a.jsonl", a)
    write_probes(tmp_path / "b.jsonl", b)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert all(p.id == probe_id(p.template_id, p.fact_ids, p.variant) for p in a)
    assert all(p.item_key == probe_id(p.template_id, p.fact_ids) for p in a)
    assert len({p.id for p in a}) == len(a)
    assert read_probes(tmp_path / "a.jsonl") == a


def test_probes_load_as_a_datasets_dataset(kb, templates):
    probes, _ = render_probes(kb, templates, "forget")
    ds = probes_dataset(probes)
    assert ds.num_rows == len(probes)
    assert set(ds.column_names) >= {"id", "target", "form", "lang", "template_id", "prompt", "answers", "split"}


def test_filters(kb, templates):
    probes, _ = render_probes(kb, templates, "forget", forms=["qa", "reverse"], langs=["en"], targets=["france"])
    assert {p.form for p in probes} == {"qa", "reverse"}
    with pytest.raises(OrtBenchError, match="unknown target 'nowhere'"):
        render_probes(kb, templates, "forget", targets=["nowhere"])
    with pytest.raises(OrtBenchError, match="unknown form 'poem'"):
        render_probes(kb, templates, "forget", forms=["poem"])


# --- bad input -------------------------------------------------------------------------------


def copy_kb(tmp_path: Path) -> Path:
    dst = tmp_path / "kb"
    shutil.copytree(FIX / "kb", dst)
    return dst


def test_malformed_fact_line_names_file_line_and_field(tmp_path):
    root = copy_kb(tmp_path)
    path = root / "facts" / "utility.jsonl"
    path.write_text(path.read_text() + '{"id": "x.y", "relation": "capital", "object": "Z"}\n')
    with pytest.raises(OrtBenchError) as err:
        load_kb(root)
    assert str(err.value) == f"{path}:5: subject: Field required"


def test_invalid_json_line(tmp_path):
    root = copy_kb(tmp_path)
    path = root / "facts" / "utility.jsonl"
    path.write_text("{not json\n" + path.read_text())
    with pytest.raises(OrtBenchError, match=r"utility.jsonl:1: not valid JSON"):
        load_kb(root)


def test_unknown_relation_is_an_error(tmp_path):
    root = copy_kb(tmp_path)
    path = root / "facts" / "utility.jsonl"
    path.write_text(path.read_text() + '{"id": "a.b", "subject": "A", "relation": "spouse", "object": "B"}\n')
    with pytest.raises(OrtBenchError, match=r"utility.jsonl:5: relation: unknown relation 'spouse'"):
        load_kb(root)


def test_neighbour_fact_about_a_non_neighbour_is_an_error(tmp_path):
    root = copy_kb(tmp_path)
    path = root / "facts" / "neighbour.jsonl"
    path.write_text(path.read_text() + '{"id": "j.c", "subject": "Japan", "relation": "capital", '
                    '"object": "Tokyo", "target": "france"}\n')
    with pytest.raises(OrtBenchError, match="'Japan' is not a neighbour of target 'france'"):
        load_kb(root)


def test_relation_placeholder_other_than_subject_object_is_refused(tmp_path):
    root = copy_kb(tmp_path)
    rel = root / "relations.yaml"
    rel.write_text(rel.read_text().replace("What is the capital of {subject}?", "{subject.__class__}?"))
    with pytest.raises(OrtBenchError, match=r"relation capital: phrasings.en.question: .*unknown placeholder"):
        load_kb(root)


def write_template(tmp_path: Path, body: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        "id: bad\nform: qa\nlang: en\nscorer: answer_match\n" + body, encoding="utf-8"
    )
    return path


def test_template_naming_a_missing_field_fails_with_file_and_field(tmp_path):
    body = "needs: [question]\nprompt: '{{ question }} {{ birthday }}'\ntarget: '{{ answer }}'\n"
    path = write_template(tmp_path, body)
    with pytest.raises(OrtBenchError) as err:
        load_template(path)
    assert str(err.value) == "bad.yaml: birthday: unknown variable in prompt"


def test_template_using_an_undeclared_field_fails(tmp_path):
    path = write_template(tmp_path, "needs: []\nprompt: '{{ question }}'\ntarget: '{{ answer }}'\n")
    with pytest.raises(OrtBenchError, match="bad.yaml: question: used in prompt but not declared in needs"):
        load_template(path)


def test_template_with_unknown_metadata_fails(tmp_path):
    path = write_template(tmp_path, "colour: red\nprompt: 'x'\ntarget: '{{ answer }}'\n")
    with pytest.raises(OrtBenchError, match="bad.yaml: colour: Extra inputs are not permitted"):
        load_template(path)


@pytest.mark.parametrize(
    "expr",
    [
        "{{ question.__class__.__mro__ }}",
        "{{ question.__class__.__mro__[1].__subclasses__() }}",
        "{{ question.format.__globals__ }}",
        "{{ en.__class__.__init__.__globals__ }}",
        "{{ examples.append(1) }}",
    ],
)
def test_sandbox_refuses_python_internals(kb, tmp_path, expr):
    path = write_template(tmp_path, f"needs: [question, en, examples]\nprompt: '{expr}'\ntarget: '{{{{ answer }}}}'\n")
    tpl = load_template(path)
    with pytest.raises(OrtBenchError) as err:
        render_probes(kb, [tpl], "utility")
    assert str(err.value).startswith("bad.yaml: prompt:")


def test_literal_mro_is_refused_too(kb, tmp_path):
    path = write_template(tmp_path, "needs: []\nprompt: \"{{ ''.__class__.__mro__ }}\"\ntarget: '{{ answer }}'\n")
    tpl = load_template(path)
    with pytest.raises(OrtBenchError, match="bad.yaml: prompt:"):
        render_probes(kb, [tpl], "utility")


def test_probe_from_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"schema_version": 99, "id": "x", "split": "forget", "target": "t", "form": "qa", '
                    '"lang": "en", "template_id": "t", "prompt": "q", "answers": ["a"], "scorer": "prob"}\n')
    with pytest.raises(OrtBenchError, match=r"p.jsonl:1: .*schema version 99 is newer"):
        read_probes(path)
