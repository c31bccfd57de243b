"""The leaderboard is built from the submission files: recomputed, ordered, escaped, byte-deterministic."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_submit import make_run  # tests/ is on sys.path (no package): the shared run-folder builder

from ort_bench.benchmark import CURRENT
from ort_bench.board.leaderboard import OUTPUT_FILES, build_leaderboard, csv_columns, portable
from ort_bench.board.page import JS, script_hash
from ort_bench.board.submit import submit
from ort_bench.errors import OrtBenchError
from ort_bench.kb.templates import FORMS

pytestmark = pytest.mark.usefixtures("v3_unpinned")  # small runs; the pinning: tests/test_pinned.py

EVIL_METHOD = "<script>alert('method')</script>"
EVIL_MODEL = '"><img src=x onerror=alert(1)>'
EVIL_LINK = "https://example.org/paper?a=1&b=\"><script>alert(2)</script>"


def populate(root: Path, tmp: Path) -> dict[str, float]:
    """Four entries: a tie on every score (same records, other fingerprint), a weak and a strong one."""
    specs = [
        ("strong", dict(seed=1, leak={f: 0.05 for f in FORMS}), {"method": "RMU", "link": "https://example.org/rmu"}),
        ("weak", dict(seed=2, leak={"mcq": 0.9, "qa": 0.02}), {"method": EVIL_METHOD, "model_name": EVIL_MODEL,
                                                                 "link": EVIL_LINK}),
        ("tie-b", dict(seed=3, model_fp="fp-tie-b"), {"method": "GA"}),
        ("tie-a", dict(seed=3, model_fp="fp-tie-a"), {"method": "GA"}),
    ]
    scores = {}
    for name, run_kw, meta in specs:
        run = make_run(tmp / f"run-{name}", **{"model_fp": f"fp-{name}", **run_kw})
        scores[name] = submit(run, name, date="2025-02-01", root=root, **meta)["ort_score"]
    return scores


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, v3_unpinned) -> tuple[Path, dict, dict[str, float]]:
    tmp = tmp_path_factory.mktemp("lb")
    root = tmp / "leaderboards"
    scores = populate(root, tmp)
    return root, build_leaderboard(root=root), scores


def test_build_writes_every_file_into_the_versioned_folder(built):
    root, out, _ = built
    assert out["out"] == str(root / CURRENT.name) and out["entries"] == 4
    for f in OUTPUT_FILES:
        assert (root / CURRENT.name / f).is_file()


def test_entries_are_ordered_by_ort_score_then_name(built):
    root, out, scores = built
    assert scores["tie-a"] == scores["tie-b"]
    expected = sorted(scores, key=lambda n: (-scores[n], n))
    assert out["names"] == expected and expected.index("tie-a") + 1 == expected.index("tie-b")
    doc = json.loads((root / CURRENT.name / "leaderboard.json").read_text())
    assert [e["name"] for e in doc["entries"]] == expected
    assert [e["rank"] for e in doc["entries"]] == [1, 2, 3, 4]


def test_numbers_come_from_the_records_not_the_submitted_file(built):
    root, _, _ = built
    doc = json.loads((root / CURRENT.name / "leaderboard.json").read_text())
    for e in doc["entries"]:
        res = json.loads((root / CURRENT.name / "submissions" / e["name"] / "results.json").read_text())
        # the leaderboard keeps 12 significant digits (`portable`: the last bits depend on the CPU's BLAS)
        assert e["ort_score"] == portable(res["ort_score"])
        assert e["worst_form_efficacy"] == portable(res["worst_form_efficacy"])
        by_form = {r["form"]: r for r in res["forms"]}
        for f in FORMS:
            assert e["forms"][f]["efficacy"] == portable(by_form[f]["efficacy"])
            assert e["forms"][f]["ci_low"] == portable(by_form[f]["efficacy_ci_low"])
    assert doc["directions"]["form_gap"] == "lower is better" and doc["directions"]["ort_score"] == "higher is better"


def test_csv_has_per_form_columns_with_cis(built):
    root, _, _ = built
    rows = list(csv.DictReader(io.StringIO((root / CURRENT.name / "leaderboard.csv").read_text())))
    assert list(rows[0]) == csv_columns(FORMS, prob=True, audit=True, v3=True)  # v2 on: Prob, audit; v3: more CIs
    assert {f"efficacy_{f}_ci_high" for f in FORMS} <= set(rows[0])
    # v3: the ORT score's and the rank's intervals hold the point; the strong entry is first in every interval
    for r in rows:
        assert float(r["ort_score_ci_low"]) <= float(r["ort_score"]) <= float(r["ort_score_ci_high"])
        if not r["name"].startswith("tie-"):  # the two tied entries share their ranks in every replicate
            assert int(r["rank_ci_low"]) <= int(r["rank"]) <= int(r["rank_ci_high"])
    assert rows[0]["rank_ci_low"] == "1"
    assert rows[0]["name"] == "strong" and float(rows[0]["ort_score"]) > float(rows[-1]["ort_score"])


def test_every_metric_column_states_its_direction(built):
    root, _, _ = built
    md = (root / CURRENT.name / "leaderboard.md").read_text()
    header = md.splitlines()[4]
    for label in ("Worst-form efficacy ↑", "Form gap ↓", "Utility ↑", "ORT score ↑", *(f"E {f} ↑" for f in FORMS)):
        assert label in header
    page = (root / CURRENT.name / "index.html").read_text()
    for label in ("Worst-form efficacy ↑</th>", "Form gap ↓</th>", "ORT score ↑</th>", "E subtoken ↑</th>"):
        assert label in page


def test_user_text_is_escaped_on_the_page_and_in_markdown(built):
    root, _, _ = built
    page = (root / CURRENT.name / "index.html").read_text()
    assert EVIL_METHOD not in page and "<img" not in page and "alert(2)</script>" not in page
    assert "&lt;script&gt;alert(&#39;method&#39;)&lt;/script&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count("<script") == 1, "only the page's own script"
    assert f"script-src '{script_hash(JS)}'" in page, "CSP allows only the page's own script"
    assert 'href="https://example.org/paper?a=1&amp;b=%22%3E%3Cscript%3Ealert(2)%3C/script%3E"' in page
    md = (root / CURRENT.name / "leaderboard.md").read_text()
    assert EVIL_METHOD not in md and "<img" not in md and "&lt;script&gt;" in md


def test_the_page_is_self_contained(built):
    root, _, _ = built
    page = (root / CURRENT.name / "index.html").read_text()
    for needle in ("<link", "src=\"http", "src='http", "@import", "cdn"):
        assert needle not in page
    assert "<svg" in page and "<style>" in page


def test_the_heatmap_is_vector_svg_without_a_date(built):
    root, _, _ = built
    svg = (root / CURRENT.name / "heatmap.svg").read_text()
    assert svg.startswith("<?xml") and "<dc:date>" not in svg and "data:image/png" not in svg
    assert "Matplotlib" not in svg  # no creator/version line either


def _digest(folder: Path) -> dict[str, str]:
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in OUTPUT_FILES}


def test_rebuilding_gives_byte_identical_files(built, tmp_path: Path):
    root, _, _ = built
    first = _digest(root / CURRENT.name)
    build_leaderboard(root=root)
    assert _digest(root / CURRENT.name) == first
    build_leaderboard(out=tmp_path / "elsewhere", root=root)
    assert _digest(tmp_path / "elsewhere") == first


def test_a_fresh_process_gives_byte_identical_files(built, tmp_path: Path):
    """Other hash seed, other process, copied submissions: the same bytes."""
    root, _, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(root / CURRENT.name / "submissions", copy / CURRENT.name / "submissions")
    code = ("import dataclasses, sys; from ort_bench import benchmark; from ort_bench.board.leaderboard import "
            "build_leaderboard; benchmark.VERSIONS['v3'] = dataclasses.replace(benchmark.V3, "
            "pinned_submissions=False); build_leaderboard(root=sys.argv[1])")  # `built`'s small runs (v3_unpinned)
    env = {**os.environ, "PYTHONHASHSEED": "12345", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    subprocess.run([sys.executable, "-c", code, str(copy)], check=True, env=env, timeout=300)
    assert _digest(copy / CURRENT.name) == _digest(root / CURRENT.name)


def test_an_empty_leaderboard_builds(tmp_path: Path):
    out = build_leaderboard(root=tmp_path)
    assert out["entries"] == 0
    assert "No submissions yet" in (tmp_path / CURRENT.name / "index.html").read_text()
    assert (tmp_path / CURRENT.name / "leaderboard.csv").read_text().count("\n") == 1


def _one_submission(tmp_path: Path) -> Path:
    root = tmp_path / "lb"
    submit(make_run(tmp_path / "run"), "entry", root=root)
    return root


def test_a_stored_submission_edited_afterwards_stops_the_build(tmp_path: Path):
    root = _one_submission(tmp_path)
    res = root / CURRENT.name / "submissions" / "entry" / "results.json"
    data = json.loads(res.read_text())
    data["ort_score"] = 0.99
    res.write_text(json.dumps(data, indent=2) + "\n")
    with pytest.raises(OrtBenchError, match=r"results\.json: changed after submission"):
        build_leaderboard(root=root)


def test_a_stored_submission_edited_with_its_hashes_is_still_recomputed(tmp_path: Path):
    """Someone edits results.json and the sha256 in submission.json: the recomputation catches it."""
    root = _one_submission(tmp_path)
    folder = root / CURRENT.name / "submissions" / "entry"
    data = json.loads((folder / "results.json").read_text())
    data["ort_score"] = 0.99
    (folder / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    meta = json.loads((folder / "submission.json").read_text())
    meta["files"]["results.json"] = hashlib.sha256((folder / "results.json").read_bytes()).hexdigest()
    (folder / "submission.json").write_text(json.dumps(meta))
    match = r"^submission entry: results\.json: ort_score is 0\.99 but the records give"
    with pytest.raises(OrtBenchError, match=match):
        build_leaderboard(root=root)


def test_a_hand_written_submission_json_with_html_in_the_name_is_refused(tmp_path: Path):
    root = _one_submission(tmp_path)
    folder = root / CURRENT.name / "submissions" / "entry"
    meta = json.loads((folder / "submission.json").read_text())
    meta["name"] = "<script>alert(1)</script>"
    (folder / "submission.json").write_text(json.dumps(meta))
    with pytest.raises(OrtBenchError, match=r"submission\.json: name .*must be a slug"):
        build_leaderboard(root=root)


_LONG_NUMBER = re.compile(r"-?\d+\.\d{7,}(?:e[-+]?\d+)?")


def _to_9_digits(text: str) -> str:
    """Numbers written with 12 significant digits, rounded to 9: a number computed on another CPU (SIMD
    summation order) may differ in its 12th digit; anything more than that still shows."""
    return _LONG_NUMBER.sub(lambda m: f"{float(m.group()):.9g}", text)


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_the_shipped_leaderboards_rebuild_byte_identically(version, tmp_path: Path):
    """v1 and v2 (closed, each with its own definitions) and v3 are regenerated from their stored submissions
    into a copy, and every generated file equals the shipped one byte for byte, but for the 10th to 12th
    digits of long numbers, which floating-point summation order may change from one CPU to another
    (measured: 4 of the v3 table's numbers differ in their 12th digit between two machines of this project)."""
    from ort_bench.paths import leaderboards_dir

    shipped = leaderboards_dir() / version
    shutil.copytree(shipped / "submissions", tmp_path / version / "submissions")
    build_leaderboard(root=tmp_path, version=version)
    for f in OUTPUT_FILES:
        built, kept = (tmp_path / version / f).read_text(encoding="utf-8"), (shipped / f).read_text(encoding="utf-8")
        assert _to_9_digits(built) == _to_9_digits(kept), f
