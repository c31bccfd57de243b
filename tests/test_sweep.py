"""`ort-bench sweep`: (checkpoint, shard) jobs as Ray tasks on a local Ray of 2 workers, merged per checkpoint
into the run one process writes; a killed job resumes alone; failures, timeouts and bad configs are one line
and never hang (issue 21, item 4)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_shards import CONFIG, LIMIT, TARGETS, close, numbers, records

from ort_bench.board.submit import submit
from ort_bench.cli import main
from ort_bench.errors import OrtBenchError
from ort_bench.scoring.evaluate import evaluate
from ort_bench.scoring.sweep import (
    DONE,
    EXAMPLE,
    SHARDS_DIR,
    SweepConfig,
    SweepFailed,
    check_reachable,
    check_resources,
    load_sweep_config,
    ray_session,
    sweep,
)

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.usefixtures("one_torch_thread", "v3_unpinned")


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray of 2 workers for the module, started as a sweep starts its own (`ray_session`); the
    module's sweeps find it initialised and use it, so the workers are started once."""
    def ray_env() -> dict:
        return {k: v for k, v in os.environ.items() if k.startswith("RAY_") or k == "PYTHONBREAKPOINT"}

    env = ray_env()
    cfg = SweepConfig.model_validate({"checkpoints": [{"name": "x", "model": "x"}], "local_ray": {"num_cpus": 2}})
    with ray_session(cfg, None) as (session, owned):
        assert owned and session.cluster_resources()["CPU"] == 2
        yield session.get_runtime_context().gcs_address
    assert not ray.is_initialized() and ray_env() == env  # shut down, and the variables ray.init set are gone


@pytest.fixture(scope="module")
def models(make_tiny_model) -> dict[str, Path]:
    return {"a": make_tiny_model(seed=1), "b": make_tiny_model(seed=2), "ref": make_tiny_model(seed=0)}


def config_dict(models: dict[str, Path], **kw) -> dict:
    return {"checkpoints": [{"name": n, "model": str(models[n])} for n in ("a", "b")], "reference": str(models["ref"]),
            "shards": 2, "selection": {"targets": TARGETS, "limit": LIMIT},
            "eval": {"max_new_tokens": CONFIG.max_new_tokens, "batch_size": CONFIG.batch_size},
            "resources": {"num_cpus": 1}, **kw}


@pytest.fixture(scope="module")
def swept(models, ray_local, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sweep")
    return out, sweep(SweepConfig.model_validate(config_dict(models)), out, progress=False)


def test_each_merged_run_is_the_single_process_run(swept, models, tmp_path):
    out, summary = swept
    jobs = [f"{who} shard {i}/2" for who in ("checkpoint a", "checkpoint b", f"reference {models['ref'].name}")
            for i in (1, 2)]
    assert sorted(summary["ran"]) == sorted(jobs)  # 2 checkpoints x 2 shards, and the reference's 2 shards once
    assert summary["failed"] == {} and summary["skipped"] == []
    for name in ("a", "b"):
        single = tmp_path / name
        evaluate(str(models[name]), single, reference=str(models["ref"]), targets=TARGETS, limit=LIMIT, config=CONFIG,
                 progress=False)
        assert close(numbers(out / name), numbers(single))
        assert close(records(out / name), records(single))  # same records in the same order
        merged = json.loads((out / name / "results.json").read_text())
        assert merged["model"]["shards"] == 2 and summary["results"][name]["comparison"] == merged["comparison"]
    summary_a = submit(out / "a", "a", dry_run=True, root=tmp_path / "lb")
    assert summary_a["worst_form"] == json.loads((tmp_path / "a" / "results.json").read_text())["worst_form"]


def test_the_reference_is_scored_once_per_shard_not_per_checkpoint(swept):
    out, _ = swept
    for name in ("a", "b"):
        for i in (1, 2):
            ref = json.loads((out / SHARDS_DIR / name / f"shard-{i}-of-2" / "results.json").read_text())["reference"]
            assert ref["new_records"] == 0 and ref["reused_records"] > 0 and "load_seconds" not in ref


def test_a_manifest_checkpoint_shares_the_reference_jobs_and_is_its_single_process_run(swept, models,
                                                                                      make_tiny_model, tmp_path):
    """One checkpoint per target (`evaluate --manifest`) in a sweep: its targets are the selection's, so it
    reuses the reference jobs already done and only its own two jobs run."""
    out = tmp_path / "sweep"
    shutil.copytree(swept[0], out)
    manifest = tmp_path / "per-target" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"checkpoints": {t: str(make_tiny_model(seed=10 + i)) for i, t in
                                                    enumerate(TARGETS)}}))
    cfg = config_dict(models)
    cfg["checkpoints"].append({"name": "per-target", "manifest": str(manifest)})
    summary = sweep(SweepConfig.model_validate(cfg), out, progress=False)
    assert sorted(summary["ran"]) == ["checkpoint per-target shard 1/2", "checkpoint per-target shard 2/2"]
    single = tmp_path / "single"
    evaluate(None, single, reference=str(models["ref"]), manifest=manifest, limit=LIMIT, config=CONFIG, progress=False)
    assert close(numbers(out / "per-target"), numbers(single))
    assert close(records(out / "per-target"), records(single))
    assert json.loads((out / "per-target" / "results.json").read_text())["model"]["protocol"] == "one_per_target"


def kill_mid_job(folder: Path) -> int:
    """What a sweep killed while this job ran leaves: no marker, no results, the first records written.
    Returns how many of the model's records are left."""
    (folder / DONE).unlink()
    (folder / "results.json").unlink()
    lines = (folder / "records.jsonl").read_text().splitlines()
    model_lines = [ln for ln in lines if json.loads(ln)["role"] == "model"]
    keep = len(model_lines) // 2
    (folder / "records.jsonl").write_text("\n".join(model_lines[:keep]) + "\n")
    return keep


def test_a_killed_job_resumes_alone_and_the_result_is_unchanged(swept, models, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(swept[0], out)
    killed = out / SHARDS_DIR / "a" / "shard-2-of-2"
    kept = kill_mid_job(killed)
    others = {p: p.stat().st_mtime_ns for p in (out / SHARDS_DIR).rglob("records.jsonl") if killed not in p.parents}
    b_bytes = (out / "b" / "records.jsonl").read_bytes()
    summary = sweep(SweepConfig.model_validate(config_dict(models)), out, progress=False)
    assert summary["ran"] == ["checkpoint a shard 2/2"] and len(summary["skipped"]) == 5
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["model"]["reused_records"] == kept > 0  # evaluate's own resume kept what was written
    assert {p: p.stat().st_mtime_ns for p in others} == others  # no other job touched its records
    assert close(numbers(out / "a"), numbers(swept[0] / "a"))
    assert close(records(out / "a"), records(swept[0] / "a"))
    assert (out / "b" / "records.jsonl").read_bytes() == b_bytes
    again = sweep(SweepConfig.model_validate(config_dict(models)), out, progress=False)  # all done: nothing runs
    assert again["ran"] == [] and len(again["skipped"]) == 6 and set(again["results"]) == {"a", "b"}


def broken_model(models: dict[str, Path], where: Path) -> Path:
    bad = where / "bad-model"
    shutil.copytree(models["a"], bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    return bad


def test_a_checkpoint_that_fails_to_load_is_one_line_and_the_other_is_merged(swept, models, tmp_path, capsys):
    out = tmp_path / "sweep"
    shutil.copytree(swept[0], out)
    shutil.rmtree(out / "a")
    (out / SHARDS_DIR / "a" / "sweep-merged.json").unlink()
    cfg = config_dict({**models, "b": broken_model(models, tmp_path)})
    with pytest.raises(SweepFailed) as info:
        sweep(SweepConfig.model_validate(cfg), out, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("checkpoint b shard ") and "and 1 more failed job" in msg
    summary = info.value.summary
    assert sorted(summary["failed"]) == ["checkpoint b shard 1/2", "checkpoint b shard 2/2"]
    assert summary["ran"] == [] and set(summary["results"]) == {"a"}  # a: done before, merged again
    assert close(numbers(out / "a"), numbers(swept[0] / "a"))
    # the command line: a's table, then one error line; exit 1
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "## a" in captured.out and "worst-form efficacy" in captured.out
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("error: checkpoint b shard ") and "the other jobs finished" in err


def stuck_job(models: dict[str, Path], out: Path, **kw) -> SweepConfig:
    """A sweep of one job that blocks forever: evaluate's resume reads its records file, a FIFO nothing writes to."""
    folder = out / SHARDS_DIR / "a" / "shard-1-of-1"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "records.jsonl")
    one = [{"name": "a", "model": str(models["a"])}]
    return SweepConfig.model_validate(config_dict(models, shards=1, checkpoints=one, reference=None, **kw))


def test_a_job_that_hangs_times_out_and_the_sweep_ends(models, ray_local, tmp_path):
    cfg = stuck_job(models, tmp_path / "out", job_timeout_s=1)
    with pytest.raises(SweepFailed, match=r"^checkpoint a shard 1/1: timed out after 1 s \(job_timeout_s\)"):
        sweep(cfg, tmp_path / "out", progress=False)


def test_a_job_whose_worker_dies_is_one_line_not_a_hang(models, ray_local, tmp_path):
    import signal
    import threading
    import time

    cfg = stuck_job(models, tmp_path / "out")
    started = tmp_path / "out" / SHARDS_DIR / "a" / "shard-1-of-1" / "sweep-started"

    def kill_the_worker() -> None:  # as the OOM killer would
        for _ in range(600):
            if started.exists() and started.read_text().strip():
                os.kill(int(started.read_text().split()[1]), signal.SIGKILL)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    try:
        with pytest.raises(SweepFailed, match=r"^checkpoint a shard 1/1: its worker died \(killed, or out of memory\)"):
            sweep(cfg, tmp_path / "out", progress=False)
    finally:
        killer.join()


def test_a_job_no_worker_can_take_ends_the_sweep(models, ray_local, tmp_path):
    cfg = config_dict(models, shards=1, checkpoints=[{"name": "a", "model": str(models["a"])}], reference=None,
                      resources={"num_cpus": 1, "num_gpus": 1}, start_timeout_s=1)
    with pytest.raises(SweepFailed, match=r"^checkpoint a shard 1/1: not started within 1 s \(start_timeout_s\)"):
        sweep(SweepConfig.model_validate(cfg), tmp_path / "out", progress=False)


def test_a_cluster_address_where_nothing_answers_is_refused_at_once():
    """Ray would retry it for about 14 minutes."""
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OrtBenchError, match=rf"^cannot connect to Ray at 127.0.0.1:{port}: nothing answers"):
        check_reachable(f"127.0.0.1:{port}", timeout=5)
    with pytest.raises(OrtBenchError, match=r"^--ray head-node: give HOST:PORT"):
        check_reachable("head-node")


def test_a_task_larger_than_the_ray_is_refused_locally_and_a_warning_on_a_cluster(capsys):
    class FakeRay:
        @staticmethod
        def cluster_resources() -> dict:
            return {"CPU": 2.0}

    cfg = SweepConfig.model_validate({"checkpoints": [{"name": "a", "model": "m"}],
                                      "resources": {"num_cpus": 1, "num_gpus": 1}})
    with pytest.raises(OrtBenchError, match=r"^resources.num_gpus: 1 per task, but the local Ray has 0"):
        check_resources(FakeRay, cfg, local=True)
    check_resources(FakeRay, cfg, local=False)
    assert capsys.readouterr().err.startswith("warning: resources.num_gpus: 1 per task, but the cluster has 0 now")
    check_resources(FakeRay, SweepConfig.model_validate({"checkpoints": [{"name": "a", "model": "m"}],
                                                         "resources": {"num_cpus": 2}}), local=True)


@pytest.mark.parametrize(("data", "match"), [
    ("checkpoints: [", "cannot read it as YAML"),
    ("- a", "expected a mapping"),
    ({"shards": 2}, "checkpoints: Field required"),
    ({"checkpoints": []}, "checkpoints: List should have at least 1 item"),
    ({"checkpoints": [{"name": "a", "model": "m"}], "bogus": 1}, "bogus: Extra inputs are not permitted"),
    ({"checkpoints": [{"name": "a", "model": "m"}, {"name": "a", "model": "n"}]}, "'a' given twice"),
    ({"checkpoints": [{"name": "a", "model": "m", "manifest": "x"}]}, "give model or manifest, not both"),
    ({"checkpoints": [{"name": "_a", "model": "m"}]}, "checkpoints.0.name: String should match pattern"),
    ({"checkpoints": [{"name": "a", "model": "m"}], "shards": 0}, "shards: Input should be greater than or equal"),
    ({"checkpoints": [{"name": "a", "model": "m"}], "eval": {"batch": 8}}, "eval: unknown option 'batch'"),
    ({"checkpoints": [{"name": "a", "model": "m"}], "eval": {"batch_size": "x"}}, "eval: batch_size: Input should"),
    ({"checkpoints": [{"name": "a", "model": "m"}], "eval": {"batch_size": 0}}, "batch_size must be a whole number"),
    ({"checkpoints": [{"name": "a", "model": "m"}], "eval": {"tensor_parallel_size": 2}}, "not run inside a Ray"),
    ({"checkpoints": [{"name": "a", "model": "m"}], "eval": {"backend": "openai", "dtype": "bfloat16"}},
     "eval: backend openai does not support --dtype"),
    ({"checkpoints": [{"name": "a", "model": "m"}], "selection": {"limit": 0}}, "every N must be at least 1"),
    ({"checkpoints": [{"name": "a", "model": "m"}], "selection": {"limit": {"forgot": 3}}}, "unknown split 'forgot'"),
])
def test_a_bad_config_is_one_line(data, match, tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    with pytest.raises(OrtBenchError, match=match) as info:
        load_sweep_config(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"sweep config {path}: ")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: sweep config") and err.count("\n") == 1


def test_the_documented_example_is_a_valid_config(tmp_path):
    (tmp_path / "sweep.yaml").write_text(EXAMPLE)
    cfg = load_sweep_config(tmp_path / "sweep.yaml")
    assert cfg.shards == 4 and [c.name for c in cfg.checkpoints] == ["npo", "rmu", "npo-per-target"]
    assert cfg.eval_config().tier == "core" and cfg.resources.num_gpus == 1


def test_an_out_folder_the_sweep_did_not_make_is_refused(models, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "mine.txt").write_text("keep me")
    with pytest.raises(OrtBenchError, match=r"a: exists and is not this sweep's merged run"):
        sweep(SweepConfig.model_validate(config_dict(models)), tmp_path, progress=False)
    assert (tmp_path / "a" / "mine.txt").read_text() == "keep me"


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ort_bench.cli", "sweep", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("how", ["existing cluster", "local ray"])
def test_the_command_line_on_a_cluster_and_on_a_local_ray(how, swept, models, ray_local, tmp_path):
    """`--ray ADDRESS` joins the module's Ray; without it, the command starts a local Ray of its own (and
    returns: a Ray left running or a task left hanging would make it time out)."""
    out = tmp_path / "sweep"
    shutil.copytree(swept[0], out)
    kill_mid_job(out / SHARDS_DIR / "b" / "shard-1-of-2")
    cfg = config_dict(models, local_ray={"num_cpus": 2}, out=str(out))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    proc = cli(str(tmp_path / "sweep.yaml"), *(["--ray", ray_local] if how == "existing cluster" else []))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "jobs: 1 run, 5 already done" in proc.stdout and "## b" in proc.stdout
    assert close(numbers(out / "b"), numbers(swept[0] / "b"))
