"""`ort-bench audit`: an honest entry re-scores to its records; rewritten outputs and another
checkpoint are caught; the leaderboard marks audited entries (issue 14)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_submit import forge

from ort_bench.benchmark import CURRENT
from ort_bench.board.audit import AUDIT_FILE, audit
from ort_bench.board.leaderboard import build_leaderboard
from ort_bench.board.submit import submit
from ort_bench.errors import OrtBenchError
from ort_bench.scoring.evaluate import EvalConfig, evaluate

LIMIT = {"forget": 11, "neighbour": 2, "utility": 2}  # one item per form: every form covered, seconds on a tiny model

pytestmark = pytest.mark.usefixtures("one_torch_thread", "v3_unpinned")


@pytest.fixture(scope="module")
def scored(make_tiny_model, tmp_path_factory) -> tuple[Path, Path, Path]:
    unlearned, original = make_tiny_model(seed=1), make_tiny_model(seed=0)
    run = tmp_path_factory.mktemp("audit") / "run"
    evaluate(str(unlearned), run, reference=str(original), targets=["france", "japan", "william_shakespeare"],
             limit=LIMIT, config=EvalConfig(max_new_tokens=4, batch_size=8), progress=False)
    return run, unlearned, original


def test_an_honest_entry_passes_and_is_marked_audited(scored, tmp_path):
    run, _, _ = scored
    root = tmp_path / "lb"
    submit(run, "honest", root=root)
    folder = root / CURRENT.name / "submissions" / "honest"
    report = audit(folder, sample=5, seed=3)
    assert report["sample"] == 5 and (folder / AUDIT_FILE).is_file()
    build_leaderboard(root=root)
    md = (root / CURRENT.name / "leaderboard.md").read_text()
    assert f"audited (5 items, {report['date']})" in md
    entry = json.loads((root / CURRENT.name / "leaderboard.json").read_text())["entries"][0]
    assert entry["audit"]["sample"] == 5


def test_an_audit_of_other_records_does_not_count(scored, tmp_path):
    run, _, _ = scored
    root = tmp_path / "lb"
    submit(run, "entry", root=root)
    folder = root / CURRENT.name / "submissions" / "entry"
    (folder / AUDIT_FILE).write_text(json.dumps({"sample": 999, "date": "2026-01-01", "records_sha256": "x"}))
    build_leaderboard(root=root)
    assert "not audited" in (root / CURRENT.name / "leaderboard.md").read_text()


def test_rewritten_outputs_pass_submit_but_not_the_audit(scored, tmp_path):
    run = tmp_path / "forged"
    shutil.copytree(scored[0], run)

    def claim_forgotten(recs):
        out = []
        for r in recs:
            if r["role"] == "model" and r["scorer"] == "answer_match":
                r = {**r, "output": "I do not know.", "rouge_l_recall": 0.0, "answer_match": 0.0,
                     "content_recall": 0.0, "primary": 0.0}
            out.append(r)
        return out
    forge(run, claim_forgotten)
    submit(run, "forged", root=tmp_path / "lb", dry_run=True)  # consistent records: submit cannot tell
    with pytest.raises(OrtBenchError, match=r"^audit failed: probe \w+: output differs"):
        audit(run, sample=30, write=False)


def test_another_checkpoint_is_refused(scored, make_tiny_model):
    run, _, _ = scored
    with pytest.raises(OrtBenchError, match="is not the submission's model fingerprint"):
        audit(run, model=str(make_tiny_model(seed=2)), write=False)


def test_the_audit_rescores_with_the_public_scoring_function(scored, monkeypatch):
    """Audit re-scores through `scoring_loop.score_probes`, the function evaluate scores with."""
    from ort_bench.scoring import scoring_loop

    calls: list[int] = []
    real = scoring_loop.score_probes
    monkeypatch.setattr(scoring_loop, "score_probes", lambda *a, **kw: calls.append(len(a[2])) or real(*a, **kw))
    report = audit(scored[0], sample=3, seed=1, write=False)
    assert calls == [report["probes"]] and report["probes"] >= 3
