"""Trust no input: one writer per run folder, lent records only read, edited records not resumed,
every bad option value one line, spreadsheet-safe CSV, a bad submission reported (issue 14)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from test_submit import make_run  # tests/ is on sys.path (no package)

from ort_bench.benchmark import CURRENT
from ort_bench.board.leaderboard import build_leaderboard
from ort_bench.board.submit import submit
from ort_bench.cli import main
from ort_bench.errors import OrtBenchError
from ort_bench.scoring.evaluate import EvalConfig, evaluate
from ort_bench.scoring.records import RunLock, seal
from ort_bench.scoring.selection import select_probes

FIX = Path(__file__).parent / "fixtures"
FAST = EvalConfig(max_new_tokens=4, chunk_size=8)

pytestmark = pytest.mark.usefixtures("v3_unpinned")  # small runs; the pinning: tests/test_pinned.py


@pytest.fixture
def fixture_kb(monkeypatch):
    monkeypatch.setenv("ORT_BENCH_DATA", str(FIX / "kb"))
    monkeypatch.setenv("ORT_BENCH_TEMPLATES", str(FIX / "templates"))


def _one_line_exit(argv: list[str], capsys, code: int) -> str:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code, (argv, rc, err)
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.usefixtures("fixture_kb")
def test_a_second_evaluate_on_the_same_folder_is_refused_naming_the_holder(tiny_llama_dir, tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(OrtBenchError, match=r"another run is writing to this folder \(PID \d+\)"):
            evaluate(str(tiny_llama_dir), tmp_path / "run", splits=["utility"], limit=2, config=FAST, progress=False)
    # released: the run goes ahead
    evaluate(str(tiny_llama_dir), tmp_path / "run", splits=["utility"], limit=2, config=FAST, progress=False)
    assert (tmp_path / "run" / "results.json").is_file()


@pytest.mark.usefixtures("fixture_kb")
def test_reuse_only_reads_its_source_and_resume_refuses_an_edited_record(tiny_llama_dir, tmp_path):
    evaluate(str(tiny_llama_dir), tmp_path / "src", splits=["utility"], limit=3, config=FAST, progress=False)
    src = tmp_path / "src" / "records.jsonl"
    src.write_bytes(src.read_bytes() + b'{"key": "torn')  # a torn last line, as a killed run leaves
    before = src.read_bytes()
    res = evaluate(str(tiny_llama_dir), tmp_path / "dst", splits=["utility"], limit=3, config=FAST, progress=False,
                   reuse=[tmp_path / "src"])
    assert res["model"]["reused_records"] > 0 and src.read_bytes() == before  # the source is untouched

    dst = tmp_path / "dst" / "records.jsonl"
    lines = dst.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["primary"] = 1.0 - rec["primary"]  # a hand edit, not re-sealed
    dst.write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    with pytest.raises(OrtBenchError, match=r"records\.jsonl:1: record edited .* remove the line"):
        evaluate(str(tiny_llama_dir), tmp_path / "dst", splits=["utility"], limit=3, config=FAST, progress=False)


@pytest.mark.parametrize("argv", [
    ["evaluate", "--model", "embedded", "--out", "x", "--limit", "0"],
    ["evaluate", "--model", "embedded", "--out", "x", "--limit", "-1"],
    ["evaluate", "--model", "embedded", "--out", "x", "--limit", "forget=0"],
    ["evaluate", "--model", "embedded", "--out", "x", "--chunk-size", "0"],
    ["evaluate", "--model", "embedded", "--out", "x", "--max-new-tokens", "-5"],
    ["evaluate", "--model", "embedded", "--out", "x", "--batch-size", "zero"],
])
def test_bad_counts_are_one_usage_line(argv, capsys):
    line = _one_line_exit(argv, capsys, 2)
    assert "error: argument" in line


def test_counts_are_checked_from_python_too():
    with pytest.raises(OrtBenchError, match="chunk_size must be a whole number of at least 1"):
        EvalConfig(chunk_size=0)
    with pytest.raises(OrtBenchError, match="limit must be at least 1 item per split"):
        select_probes(["forget"], limit={"forget": 0})


def test_unknown_language_and_empty_template_folder_are_one_line(tmp_path, capsys, monkeypatch):
    line = _one_line_exit(["render", "--split", "forget", "--langs", "xx", "--out", str(tmp_path / "p.jsonl")],
                          capsys, 1)
    assert "unknown language 'xx'" in line and not (tmp_path / "p.jsonl").exists()
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("ORT_BENCH_TEMPLATES", str(tmp_path / "empty"))
    line = _one_line_exit(["templates", "validate"], capsys, 1)
    assert "no template files" in line


def test_leaderboard_out_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    line = _one_line_exit(["leaderboard", "build", "--version", "v2", "--out", str(tmp_path / "file")], capsys, 1)
    assert "exists and is not a folder" in line


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path):
    run = make_run(tmp_path / "run")
    submit(run, "entry", method="=HYPERLINK(\"http://evil\",\"x\")", model_name="@SUM(1+1)", root=tmp_path / "lb")
    build_leaderboard(root=tmp_path / "lb")
    row = next(csv.DictReader(io.StringIO((tmp_path / "lb" / CURRENT.name / "leaderboard.csv").read_text())))
    assert row["method"].startswith("'=") and row["model_name"].startswith("'@")


def test_a_bad_submission_stops_the_build_or_is_skipped_with_keep_going(tmp_path):
    root = tmp_path / "lb"
    submit(make_run(tmp_path / "a", model_fp="fp-a"), "good", root=root)
    submit(make_run(tmp_path / "b", model_fp="fp-b", seed=1), "broken", root=root)
    rec_path = root / CURRENT.name / "submissions" / "broken" / "records.jsonl"
    lines = rec_path.read_text().splitlines()
    rec_path.write_text("\n".join([json.dumps(seal({**json.loads(lines[0]), "primary": 0.5})), *lines[1:]]) + "\n")
    with pytest.raises(OrtBenchError, match=r"broken/records.jsonl: changed after submission .*--keep-going skips"):
        build_leaderboard(root=root)
    out = build_leaderboard(root=root, keep_going=True)
    assert out["names"] == ["good"] and len(out["skipped"]) == 1 and "broken" in out["skipped"][0]
