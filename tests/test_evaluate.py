"""`evaluate` end to end: records, results, resumption, model separation, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ort_bench.cli import main
from ort_bench.errors import OrtBenchError
from ort_bench.scoring.evaluate import EvalConfig, evaluate
from ort_bench.scoring.records import check_seal, sha256_json
from ort_bench.scoring.results import markdown_table, read_results

FIX = Path(__file__).parent / "fixtures"
FAST = EvalConfig(max_new_tokens=6, chunk_size=8)


@pytest.fixture(autouse=True)
def fixture_kb(monkeypatch):
    """Score the small fixture knowledge base, not the shipped one (seconds, not minutes)."""
    monkeypatch.setenv("ORT_BENCH_DATA", str(FIX / "kb"))
    monkeypatch.setenv("ORT_BENCH_TEMPLATES", str(FIX / "templates"))


def n_probes() -> int:
    """Probes of a full run on the fixture KB (items expanded: true/false pairs, MCQ rotations;
    neighbour and utility on retain-eval facts)."""
    from ort_bench.scoring.selection import select_probes

    return len(select_probes()[0])


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_evaluate_writes_sealed_records_and_a_typed_results_file(tiny_llama_dir, tmp_path):
    res = evaluate(str(tiny_llama_dir), tmp_path / "run", reference=str(tiny_llama_dir), config=FAST, progress=False)
    records = read_lines(tmp_path / "run" / "records.jsonl")
    assert len(records) == res["n_probes"] == n_probes()
    assert all(check_seal(r) for r in records)
    rec = records[0]
    for field in ("probe_id", "prompt_text", "output", "prob", "rouge_l_recall", "choice_acc", "primary",
                  "model_fingerprint", "backend", "params_hash", "probe_sha256"):
        assert field in rec
    mcq = next(r for r in records if r["form"] == "mcq")
    assert mcq["choice_acc"] in (0.0, 1.0) and mcq["output"] in "ABCD" and len(mcq["choice_logprobs"]) == 4
    assert all(0.0 < r["prob"] <= 1.0 for r in records)
    parsed = read_results(tmp_path / "run" / "results.json")
    assert parsed.model.fingerprint == rec["model_fingerprint"]
    assert parsed.hashes["data_sha256"] and parsed.hashes["templates_sha256"] and parsed.versions["torch"]
    assert parsed.config["max_new_tokens"] == 6
    assert "| form |" in markdown_table(res)


def test_table_of_a_model_alone_gives_each_form_its_ci(tiny_llama_dir, tmp_path):
    res = evaluate(str(tiny_llama_dir), tmp_path, splits=["forget"], config=FAST, progress=False)
    rows = [line for line in markdown_table(res).splitlines() if line.startswith("| forget |")]
    assert rows and all(re.search(r"\| [0-9.]+ \[[0-9.]+, [0-9.]+\] \|$", line) for line in rows)


def test_second_identical_run_redoes_nothing(tiny_llama_dir, tmp_path):
    evaluate(str(tiny_llama_dir), tmp_path, config=FAST, progress=False)
    before = (tmp_path / "records.jsonl").read_bytes()
    res = evaluate(str(tiny_llama_dir), tmp_path, config=FAST, progress=False)
    assert res["model"]["new_records"] == 0 and res["model"]["reused_records"] == n_probes()
    assert (tmp_path / "records.jsonl").read_bytes() == before


def test_another_model_never_reuses_answers(tiny_llama_dir, tiny_gpt2_dir, tmp_path):
    evaluate(str(tiny_llama_dir), tmp_path, config=FAST, progress=False)
    res = evaluate(str(tiny_gpt2_dir), tmp_path, config=FAST, progress=False)
    assert res["model"]["new_records"] == n_probes()
    fps = {r["model_fingerprint"] for r in read_lines(tmp_path / "records.jsonl")}
    assert len(fps) == 2


def test_reuse_copies_only_the_same_models_records(tiny_llama_dir, tiny_gpt2_dir, tmp_path):
    # the lent records come in another order (splits the other way round)
    evaluate(str(tiny_llama_dir), tmp_path / "ref", splits=["utility", "neighbour", "forget"], config=FAST,
             progress=False)
    res = evaluate(str(tiny_gpt2_dir), tmp_path / "run", reference=str(tiny_llama_dir), config=FAST,
                   progress=False, reuse=[tmp_path / "ref"])
    assert res["reference"]["new_records"] == 0 and res["reference"]["reused_records"] == n_probes()
    assert res["model"]["new_records"] == n_probes()  # the other model's answers are never borrowed
    records = read_lines(tmp_path / "run" / "records.jsonl")
    assert all(check_seal(r) for r in records)
    assert [r["role"] for r in records] == ["model"] * n_probes() + ["reference"] * n_probes()
    # the finished run's records are in probe order, as submit checks them
    for role_records in (records[:n_probes()], records[n_probes():]):
        assert sha256_json([r["probe_id"] for r in role_records]) == res["hashes"]["probes_sha256"]


def test_changed_parameters_are_scored_again(tiny_llama_dir, tmp_path):
    evaluate(str(tiny_llama_dir), tmp_path, config=FAST, progress=False)
    res = evaluate(str(tiny_llama_dir), tmp_path, config=EvalConfig(max_new_tokens=7), progress=False)
    assert res["model"]["new_records"] == n_probes()


def test_limit_spreads_over_forms(tiny_llama_dir, tmp_path):
    res = evaluate(str(tiny_llama_dir), tmp_path, splits=["utility"], limit=4, config=FAST, progress=False)
    forms = [r["form"] for r in read_lines(tmp_path / "records.jsonl")]
    items = {r.get("item_id") or r["probe_id"] for r in read_lines(tmp_path / "records.jsonl")}
    assert len(items) == 4 and len(set(forms)) == 4 and res["n_probes"] == len(forms)


def test_limit_spreads_over_targets_inside_a_form_and_can_differ_per_split(monkeypatch):
    from ort_bench.scoring.selection import select_probes

    monkeypatch.delenv("ORT_BENCH_DATA")  # the shipped KB: many targets
    monkeypatch.delenv("ORT_BENCH_TEMPLATES")
    every, _ = select_probes(["forget"], forms=["qa"])
    targets = sorted({p.target for p in every})
    assert len(targets) >= 2 and len(every) > len(targets)
    first, _ = select_probes(["forget"], forms=["qa"], limit=len(targets))
    assert sorted(p.target for p in first) == targets  # one each, not the first target's probes
    tf, _ = select_probes(["forget"], forms=["true_false"], limit=len(targets))
    per_target = {t: {p.answers[0] for p in tf if p.target == t} for t in targets}
    assert all(v == {"True", "False"} for v in per_target.values())  # one pair (both statements) per target
    all_mcq, _ = select_probes(["forget"], forms=["mcq"])
    mcq, _ = select_probes(["forget"], forms=["mcq"], limit=len(targets))
    # one item per target, yet every (evaluation-half) template variant: each target starts at another one
    assert {p.template_id for p in mcq} == {p.template_id for p in all_mcq} and len({p.template_id for p in mcq}) >= 2
    both, _ = select_probes(["forget", "utility"], limit={"forget": 2, "utility": 3})
    assert [p.split for p in both] == ["forget"] * len([p for p in both if p.split == "forget"]) + \
        ["utility"] * len([p for p in both if p.split == "utility"])
    assert [len({p.item_key for p in both if p.split == s}) for s in ("forget", "utility")] == [2, 3]


def test_bad_limit_is_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", "embedded", "--limit", "forgot=3", "--out", "x"])
    assert "give N or split=N" in capsys.readouterr().err


def test_unknown_backend_is_one_line(tiny_llama_dir, tmp_path, capsys):
    rc = main(["evaluate", "--model", str(tiny_llama_dir), "--backend", "onnx", "--out", str(tmp_path)])
    assert rc == 1
    assert capsys.readouterr().err.strip() == "error: unknown backend 'onnx' (choose from hf, openai, vllm)"


def test_missing_model_path_is_one_line(tmp_path, capsys):
    rc = main(["evaluate", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("error: ") and "nope" in err and "\n" not in err


def test_probes_from_a_newer_schema_are_refused(tiny_llama_dir, tmp_path):
    probes = tmp_path / "p.jsonl"
    probes.write_text(json.dumps({"schema_version": 3, "id": "x", "split": "forget", "target": "t", "form": "qa",
                                  "lang": "en", "template_id": "t", "prompt": "q", "answers": ["a"],
                                  "scorer": "prob"}) + "\n")
    with pytest.raises(OrtBenchError, match="schema version 3 is newer"):
        evaluate(str(tiny_llama_dir), tmp_path / "run", probes_file=probes, config=FAST, progress=False)


@pytest.mark.integration
def test_killed_run_resumes_without_redoing_finished_probes(embedded_model, tmp_path):
    """Start a real `ort-bench evaluate` on the embedded model, SIGKILL it once some chunks are on
    disk, start it again: it scores only what was missing."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ort_bench.cli", "evaluate", "--model", "embedded", "--out", str(out),
           "--chunk-size", "2", "--max-new-tokens", "16", "--splits", "forget,neighbour,utility"]
    proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "records.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if records.exists() and len(records.read_text().splitlines()) >= 4:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {json.loads(line)["key"] for line in records.read_text().splitlines() if line.endswith("}")}
    assert 4 <= len(done_before) < n_probes()
    res = evaluate("embedded", out, config=EvalConfig(max_new_tokens=16, chunk_size=2), progress=False)
    assert res["model"]["reused_records"] == len(done_before)
    assert res["model"]["new_records"] == n_probes() - len(done_before)
    keys = [json.loads(line)["key"] for line in records.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == n_probes()


@pytest.mark.integration
def test_embedded_model_knows_the_capital_of_france(embedded_model, tmp_path):
    res = evaluate("embedded", tmp_path, splits=["forget"], forms=["qa", "mcq"], config=FAST, progress=False)
    qa = next(r for r in read_lines(tmp_path / "records.jsonl") if r["form"] == "qa")
    assert "Paris" in qa["output"] and qa["rouge_l_recall"] == 1.0
    assert res["model"]["kind"] == "embedded"
