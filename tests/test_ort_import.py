"""Importing the original ORT / RWKU per-target folders as probes (fixture: tests/fixtures/ort)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from ort_bench import cli
from ort_bench.errors import OrtBenchError
from ort_bench.kb.ort_import import import_ort, target_from_folder
from ort_bench.kb.probes import probe_id, read_probes

FIX = Path(__file__).parent / "fixtures" / "ort"


def test_fixture_imports_with_expected_forms_splits_and_counts(tmp_path):
    out = tmp_path / "probes.jsonl"
    summary = import_ort(FIX, out)
    probes = read_probes(out)
    assert summary["probes"] == len(probes) == 22
    assert summary["by_split"] == {"forget": 16, "neighbour": 6}
    assert summary["by_split_form"] == {
        "forget": {"adversarial": 4, "cloze": 5, "mcq": 3, "qa": 4},
        "neighbour": {"cloze": 3, "qa": 3},
    }
    assert summary["by_form"] == {"adversarial": 4, "cloze": 8, "mcq": 3, "qa": 7}
    assert summary["targets"] == 2 and summary["target_names"] == ["Confucius", "Stephen King"]
    assert summary["files_read"] == 12
    assert summary["files_skipped"] == 3
    assert summary["skipped"] == {"forget_mia.json": 1, "intro.json": 1, "passage.json": 1}
    assert Counter((p.template_id, p.scorer) for p in probes) == Counter(
        {
            ("ort-forget_level1", "answer_match"): 5,
            ("ort-forget_level2", "answer_match"): 4,
            ("ort-forget_level3", "answer_match"): 4,
            ("ort-forget_mcp", "choice_acc"): 3,
            ("ort-neighbor_level1", "answer_match"): 3,
            ("ort-neighbor_level2", "answer_match"): 3,
        }
    )
    assert all(p.lang == "en" and p.id == probe_id(p.template_id, p.fact_ids) for p in probes)
    assert len({p.id for p in probes}) == len(probes)
    # natural folder order, then the fixed file order, then file order
    assert [p.target for p in probes][:13] == ["Stephen King"] * 13


def test_probe_contents_follow_rwku_prompts(tmp_path):
    out = tmp_path / "probes.jsonl"
    import_ort(FIX, out)
    by_fact = {p.fact_ids[0]: p for p in read_probes(out)}

    cloze = by_fact["ort:Stephen King:forget_level1:0"]
    assert cloze.form == "cloze" and cloze.split == "forget"
    assert cloze.prompt == (
        "Please complete the blank in the following question.\n"
        "Question: Stephen King was born on September 21, 1947, in ___, Maine."
    )
    assert cloze.prefill == "Answer:" and cloze.answers == ("Portland",) and cloze.choices is None

    qa = by_fact["ort:Stephen King:forget_level2:1"]
    assert qa.form == "qa" and qa.answers == ("The Shining", "Shining")
    assert qa.prompt.startswith("Please briefly answer the following question.\nQuestion: Which novel")

    suffix = by_fact["ort:Stephen King:forget_level3:1"]
    assert suffix.form == "adversarial" and suffix.prefill is None
    icl = by_fact["ort:Stephen King:forget_level3:2"]
    assert icl.prompt.startswith("Please briefly answer the following question.\nQuestion: Who wrote Pride")
    assert icl.prefill == "Answer:"

    mcq = by_fact["ort:Stephen King:forget_mcp:0"]
    assert mcq.form == "mcq" and mcq.scorer == "choice_acc"
    assert mcq.choices == ("A", "B", "C", "D") and mcq.answers == ("B",) and mcq.gold_index == 1
    assert mcq.prompt.endswith(
        "Question: In which city was Stephen King born?\nA. Bangor\nB. Portland\nC. Boston\nD. Augusta"
    )

    inline = by_fact["ort:Confucius:forget_mcp:0"]  # options already in the query: not repeated
    assert inline.answers == ("C",) and inline.prompt.count("C. The Analects") == 1

    neighbour = by_fact["ort:Confucius:neighbor_level2:0"]
    assert neighbour.split == "neighbour" and neighbour.form == "qa" and neighbour.answers == ("Laozi", "Lao Tzu")


def test_reimport_is_byte_identical(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert import_ort(FIX, a)["probes"] == import_ort(str(FIX), str(b))["probes"]
    assert a.read_bytes() == b.read_bytes()


def test_single_target_folder_and_folder_name_as_target(tmp_path):
    folder = tmp_path / "10_Bruce_Lee"
    folder.mkdir()
    (folder / "forget_level2.json").write_text(
        json.dumps([{"query": "Who played Lee in Enter the Dragon?", "answer": "Bruce Lee"}])
    )
    summary = import_ort(folder, tmp_path / "p.jsonl")
    [p] = read_probes(tmp_path / "p.jsonl")
    assert summary["target_names"] == ["Bruce Lee"] and p.fact_ids == ("ort:Bruce Lee:forget_level2:0",)
    assert target_from_folder("10_Prince_Harry,_Duke_of_Sussex") == "Prince Harry, Duke of Sussex"


@pytest.mark.parametrize(
    ("sample", "letter"),
    [
        ({"choices": ["x", "y", "z"], "answer": "z"}, "C"),
        ({"choices": {"B": "y", "A": "x"}, "answer": "(b)"}, "B"),
        ({"options": ["x", "y"], "answer": 0}, "A"),
        ({"options": ["x", "y"], "gold": "B. y"}, "B"),
        ({"options": ["Y", "x"], "label": "y"}, "A"),
    ],
)
def test_mcq_variants(tmp_path, sample, letter):
    folder = tmp_path / "data" / "1_T"
    folder.mkdir(parents=True)
    (folder / "forget_mcp.json").write_text(json.dumps([{"query": "Pick one.", "subject": "T", **sample}]))
    import_ort(tmp_path / "data", tmp_path / "p.jsonl")
    [p] = read_probes(tmp_path / "p.jsonl")
    assert p.answers == (letter,) and p.choices[p.gold_index] == letter


def _bad_folder(tmp_path: Path, name: str, content: str | list) -> tuple[Path, Path]:
    root = tmp_path / "data"
    shutil.copytree(FIX, root)
    path = root / "2_Confucius" / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return root, path


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("forget_level1.json", '[{"query": "x ___", ', "not valid JSON"),
        ("forget_level1.json", '{"query": "x"}', "expected a JSON array of samples"),
        ("forget_level2.json", [{"query": "q?", "answer": "a"}, {"answer": "a"}], "item 1: field 'query': missing"),
        ("forget_level2.json", [{"query": "q?"}], "item 0: field 'answer': missing"),
        ("forget_level2.json", [{"query": "q?", "answer": ""}], "item 0: field 'answer': must be a non-empty string"),
        ("neighbor_level1.json", ["just a string"], "item 0: expected a JSON object"),
        (
            "forget_mcp.json",
            [{"query": "q?", "options": ["a", "b"], "answer": "C"}],
            "item 0: field 'answer': 'C' is not among the options (A-B: a; b)",
        ),
        (
            "forget_mcp.json",
            [{"query": "q?", "options": ["a", "b"], "answer": "c"}],
            "item 0: field 'answer': 'c' is not among the options (A-B: a; b)",
        ),
        (
            "forget_mcp.json",
            [{"query": "q?", "options": ["a", "b"], "answer": "zebra"}],
            "item 0: field 'answer': 'zebra' is not among the options",
        ),
        (
            "forget_mcp.json",
            [{"query": "q?", "options": ["a", "b"], "answer": 5}],
            "item 0: field 'answer': index 5 is not among the 2 options",
        ),
        ("forget_mcp.json", [{"query": "q?", "answer": "A"}], "item 0: field 'options': missing"),
    ],
)
def test_bad_input_gives_one_line_error_naming_file_item_field(tmp_path, name, content, expected):
    root, path = _bad_folder(tmp_path, name, content)
    with pytest.raises(OrtBenchError) as err:
        import_ort(root, tmp_path / "p.jsonl")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ")
    assert expected in msg
    assert not (tmp_path / "p.jsonl").exists()


def test_not_a_folder_and_empty_folder(tmp_path):
    with pytest.raises(OrtBenchError, match="not a folder"):
        import_ort(tmp_path / "missing", tmp_path / "p.jsonl")
    (tmp_path / "empty" / "1_X").mkdir(parents=True)
    with pytest.raises(OrtBenchError, match="no ORT files found"):
        import_ort(tmp_path / "empty", tmp_path / "p.jsonl")


def test_same_target_from_two_folders_is_refused(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(FIX, root)
    shutil.copytree(root / "2_Confucius", root / "3_Confucius_again")
    with pytest.raises(OrtBenchError, match="target 'Confucius' also comes from folder"):
        import_ort(root, tmp_path / "p.jsonl")


def test_cli_import_ort(tmp_path, capsys):
    out = tmp_path / "X.jsonl"
    assert cli.main(["import-ort", str(FIX), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["probes"] == 22 and len(read_probes(out)) == 22


def test_cli_import_ort_bad_input_exits_1(tmp_path, capsys):
    root, path = _bad_folder(tmp_path, "forget_level2.json", [{"query": "q?"}])
    assert cli.main(["import-ort", str(root), "--out", str(tmp_path / "X.jsonl")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: item 0: field 'answer': missing"
