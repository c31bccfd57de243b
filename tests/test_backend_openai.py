"""The openai backend against a small local stub of an OpenAI-compatible server (no model, no network).

The stub (`Stub`, http.server on 127.0.0.1 with port 0, one thread per request) serves /v1/models and
/v1/completions deterministically: text splits as GPT-2's pre-tokenizer splits it (a word or one
other character, with at most one leading space; other whitespace apart), each token's
log-probability is a fixed function of its text, and answers are the first words of a fixed
sentence. Knobs make it fail (statuses to return first, or every request after N), answer slowly,
echo no log-probabilities, ask for a key, and it counts requests in flight. What it returns is
computed again here, so each test knows the exact numbers the backend must read off. The real
server is tested in tests/test_served_vllm.py (vLLM stage).
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ort_bench.errors import OrtBenchError
from ort_bench.models import served as served_mod
from ort_bench.scoring.backends import GenerationParams, ScoreRequest, checked_backend, get_backend
from ort_bench.scoring.eval_config import EvalConfig

FIX = Path(__file__).parent / "fixtures"
ANSWER = "Paris is the capital of France".split()
KEY = "sk-test-5f3a9c1e7b"


def stub_tokens(text: str) -> list[str]:
    return re.findall(r" ?[A-Za-z0-9]+| ?[^\sA-Za-z0-9]|\s+(?!\S)|\s+", text)  # GPT-2's split, ASCII


def stub_logprob(token: str) -> float:
    return -round(0.05 + (sum(map(ord, token)) % 97) / 10, 4)


def expected_ll(context: str, continuation: str) -> tuple[float, int]:
    toks = stub_tokens(context + continuation)
    n_ctx = len(stub_tokens(context))
    return sum(stub_logprob(t) for t in toks[n_ctx:]), len(toks) - n_ctx


class Stub:
    def __init__(self, root: str) -> None:
        self.root = root
        self.owned_by = "stub"
        self.name = "stub-model"  # the id it serves (`vllm serve DIR` serves DIR under its own path)
        self.key: str | None = None
        self.fail: list[int] = []  # statuses returned (and consumed) before any success
        self.fail_after: int | None = None  # completions answered before every later one gets 503
        self.delay = 0.0
        self.echo = True  # echo prompt log-probabilities when asked
        self.refuse_echo = False  # answer 400 to a request with echo (as chat-only providers do)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = self.max_in_flight = self.answered = 0
        self.gate: threading.Barrier | None = None  # the first requests wait here until that many are in flight
        self.gated = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                stub.handle(self, None)

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                stub.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def completions(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("prompt") is not None]

    def handle(self, h: BaseHTTPRequestHandler, body: dict[str, Any] | None) -> None:
        with self.lock:
            self.headers.append(dict(h.headers))
            if body is not None:
                self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            gate = self.gate
            if gate is not None:  # the first `parties` requests wait for each other, later ones pass
                self.gated += 1
                if self.gated == gate.parties:
                    self.gate, self.gated = None, 0
        try:
            if gate is not None:
                try:
                    gate.wait(timeout=10)
                except threading.BrokenBarrierError:
                    pass  # fewer came at once: max_in_flight tells
            time.sleep(self.delay)
            status, data = self.answer(h, body)
            payload = json.dumps(data).encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
        except OSError:
            pass  # the client gave up (timeout test)
        finally:
            with self.lock:
                self.in_flight -= 1

    def answer(self, h: BaseHTTPRequestHandler, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        if self.key is not None and h.headers.get("Authorization") != f"Bearer {self.key}":
            return 401, {"error": {"message": "invalid API key"}}
        if h.path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": self.name, "object": "model", "created": time.time(),
                                                     "owned_by": self.owned_by, "root": self.root,
                                                     "max_model_len": 2048}]}
        with self.lock:
            if self.fail:
                return self.fail.pop(0), {"error": {"message": "busy, try later"}}
            if self.fail_after is not None and self.answered >= self.fail_after:
                return 503, {"error": {"message": "down"}}
            self.answered += 1
        if self.refuse_echo and (body or {}).get("echo"):
            return 400, {"error": {"message": "echo is not supported for this model"}}
        return 200, self.complete(body or {})

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt, n = body["prompt"], body["max_tokens"]
        new = [" " + w for w in ANSWER[:n]]
        eos = n > len(ANSWER)
        choice: dict[str, Any] = {"index": 0, "text": "".join(new), "logprobs": None,
                                  "finish_reason": "stop" if eos else "length", "stop_reason": None}
        toks = stub_tokens(prompt)
        if body.get("echo") and self.echo:
            choice["text"] = prompt + "".join(new)
            if body.get("logprobs") is not None:
                all_toks = toks + new
                offsets = [sum(map(len, all_toks[:i])) for i in range(len(all_toks))]
                lps = [None] + [stub_logprob(t) for t in all_toks[1:]]
                choice["logprobs"] = {"tokens": all_toks, "text_offset": offsets, "token_logprobs": lps,
                                      "top_logprobs": None}
        usage = {"prompt_tokens": len(toks), "completion_tokens": len(new) + eos}
        return {"id": "cmpl-1", "object": "text_completion", "model": body.get("model"), "choices": [choice],
                "usage": usage, "system_fingerprint": "stub-1"}


@pytest.fixture
def stub(tiny_llama_dir):
    s = Stub(str(tiny_llama_dir))
    yield s
    s.server.shutdown()
    s.server.server_close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(served_mod, "RETRY_BACKOFF_S", 0.001)


def config(stub: Stub, **kw: Any) -> EvalConfig:
    return EvalConfig(**{"backend": "openai", "base_url": stub.url, **kw})


def backend(stub: Stub, **kw: Any):
    cfg = config(stub, **kw)
    settings = cfg.backend_settings()
    cls = checked_backend("openai", cfg, **settings)
    return cls(cls.resolve("stub-model", cfg, **settings), cfg, **settings)


# --------------------------------------------------------------------------- requests and answers


def test_greedy_answers_and_likelihoods_read_off_the_echo(stub):
    b = backend(stub)
    ctx = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    stub.requests.clear()
    out = b.score([ScoreRequest(ctx, ("Paris", "The answer is Paris", ""), GenerationParams(max_new_tokens=3)),
                   ScoreRequest("The capital of Japan is", (" Tokyo",))])
    assert out[0].text == "Paris is the" and out[0].new_tokens == 3
    assert out[1].text is None
    for got, (c, cont) in zip([*out[0].loglikelihoods[:2], out[1].loglikelihoods[0]],
                              [(ctx, "Paris"), (ctx, "The answer is Paris"), ("The capital of Japan is", " Tokyo")],
                              strict=True):
        lp, n = expected_ll(c, cont)
        assert got.n_tokens == n and got.logprob == pytest.approx(lp, abs=1e-9)
    assert out[0].loglikelihoods[2].n_tokens == 0  # an empty continuation asks nothing
    gen = next(r for r in stub.requests if not r.get("echo"))
    assert gen["temperature"] == 0.0 and gen["top_p"] == 1.0 and gen["max_tokens"] == 3 and gen["seed"] == 0
    assert "top_k" not in gen  # not a vLLM server: only OpenAI's own parameters
    ll = [r for r in stub.requests if r.get("echo")]
    assert len(ll) == 3 and all(r["logprobs"] == 1 and r["max_tokens"] == 1 for r in ll)
    b.close()


def test_an_answer_that_ends_on_eos_does_not_count_it(stub):
    b = backend(stub)
    (res,) = b.score([ScoreRequest("Q:", (), GenerationParams(max_new_tokens=20))])
    assert res.text == " ".join(ANSWER) and res.new_tokens == len(ANSWER)
    b.close()


def test_vllm_servers_get_their_own_knobs_pinned(stub):
    stub.owned_by = "vllm"
    b = backend(stub)
    stub.requests.clear()
    b.score([ScoreRequest("Q:", (" A",), GenerationParams(max_new_tokens=2))])
    gen = next(r for r in stub.requests if not r.get("echo"))
    assert gen["top_k"] == 0 and gen["repetition_penalty"] == 1.0 and gen["add_special_tokens"] is False
    assert next(r for r in stub.requests if r.get("echo"))["add_special_tokens"] is False
    assert b.settings()["vllm_server"] is True
    b.close()


def test_the_boundary_comes_from_the_offsets():
    from ort_bench.scoring.backends.openai import continuation_logprob

    def echo(tokens: list[str], lps: list[float | None]) -> dict[str, Any]:
        offsets = [sum(map(len, tokens[:i])) for i in range(len(tokens))]
        return {"choices": [{"text": "".join(tokens), "logprobs": {"tokens": tokens, "text_offset": offsets,
                                                                   "token_logprobs": lps}}],
                "usage": {"prompt_tokens": len(tokens) - 1}}

    # the continuation's first token starts exactly where the context ends
    ll = continuation_logprob(echo(["The", " sky", " is", " blue", " X"], [None, -1.0, -2.0, -0.5, -9.0]),
                              "The sky is", " blue", "u")
    assert (ll.logprob, ll.n_tokens) == (-0.5, 1)
    # a token runs across the boundary ("Answer: " + "Paris" tokenized as "Answer", ":", " Paris")
    with pytest.raises(OrtBenchError, match="do not split context and continuation"):
        continuation_logprob(echo(["Answer", ":", " Paris", "!"], [None, -1.0, -2.0, -3.0]), "Answer: ", "Paris", "u")
    # token texts that do not add up to the continuation (a server that drops partial characters)
    bad = echo(["Q", ":", " 北京", "!"], [None, -1.0, -2.0, -3.0])
    bad["choices"][0]["logprobs"]["tokens"][2] = " 北"
    with pytest.raises(OrtBenchError, match="do not add up"):
        continuation_logprob(bad, "Q:", " 北京", "u")
    # without usage, the prompt's tokens are those that start inside the text
    no_usage = echo(["Q", ":", " A", " B"], [None, -1.0, -2.0, -5.0])
    del no_usage["usage"]
    ll = continuation_logprob(no_usage, "Q:", " A", "u")
    assert (ll.logprob, ll.n_tokens) == (-2.0, 1)


def test_an_endpoint_without_prompt_logprobs_is_found_before_any_probe(stub, capsys):
    stub.echo = False
    b = backend(stub)
    assert "returns no prompt log-probabilities" in b.no_likelihoods and "\n" not in b.no_likelihoods
    said = [line for line in capsys.readouterr().err.splitlines() if "choice forms are not scored" in line]
    assert len(said) == 1  # said once, in one line
    assert all(not r.get("echo") or r["prompt"].endswith("Paris") for r in stub.completions())  # only the check
    with pytest.raises(OrtBenchError,
                       match=r"no prompt log-probabilities \(echo with logprobs\): no likelihood can be scored"):
        b.loglikelihood([("Q: capital of France?\nA:", " Paris")])
    stub.echo, stub.refuse_echo = True, True
    assert "refuses echo with logprobs (HTTP 400: echo is not supported for this model)" in backend(stub).no_likelihoods


def test_without_prompt_logprobs_free_answers_are_scored_and_results_name_the_unscored_forms(stub, tmp_path,
                                                                                           monkeypatch):
    """Free answers keep their decisions (the same as with log-probabilities) and lose only ORT's Prob; no
    choice probe gets a record, and results.json says which forms were not scored and why."""
    from ort_bench.scoring.evaluate import evaluate

    monkeypatch.setenv("ORT_BENCH_DATA", str(FIX / "kb"))
    monkeypatch.setenv("ORT_BENCH_TEMPLATES", str(FIX / "templates"))
    cfg = config(stub, max_new_tokens=4)
    full = evaluate("stub-model", tmp_path / "full", reference="stub-model", limit=6, progress=False, config=cfg)
    stub.echo = False
    res = evaluate("stub-model", tmp_path / "free", reference="stub-model", limit=6, progress=False, config=cfg)
    recs = {r["probe_id"]: r for r in map(json.loads, (tmp_path / "free" / "records.jsonl").read_text().splitlines())
            if r["role"] == "model"}
    every = {r["probe_id"]: r for r in map(json.loads, (tmp_path / "full" / "records.jsonl").read_text().splitlines())
             if r["role"] == "model"}
    choice = {pid for pid, r in every.items() if r.get("choice_acc") is not None}
    assert choice and set(recs) == set(every) - choice  # every free answer, no choice probe
    assert all(r["prob"] is None and r["output"] == every[pid]["output"] and r["primary"] == every[pid]["primary"]
               for pid, r in recs.items())
    unscored = res["model"]["unscored"]
    assert unscored["probes"] == len(choice) and "no prompt log-probabilities" in unscored["why"]
    assert set(unscored["forms"]) == {every[pid]["form"] for pid in choice}
    assert res["reference"]["unscored"] == unscored
    assert not {row["form"] for row in res["forms"]} & set(unscored["forms"]) - {every[p]["form"] for p in recs}
    assert full["model"].get("unscored") is None
    again = evaluate("stub-model", tmp_path / "free", reference="stub-model", limit=6, progress=False, config=cfg)
    assert again["model"]["new_records"] == 0 and again["model"]["unscored"] == unscored  # a rerun says it again


# --------------------------------------------------------------------------- retries, timeouts, concurrency


def test_429_and_503_are_retried_then_succeed(stub):
    b = backend(stub)
    stub.fail = [429, 503, 502]
    stub.requests.clear()
    assert b.generate(["Q:"], GenerationParams(max_new_tokens=1)) == ["Paris"]
    assert len(stub.requests) == 4  # three refusals, then the answer
    b.close()


def test_retries_give_up_in_one_line(stub):
    b = backend(stub, max_retries=2)
    stub.fail = [503] * 10
    with pytest.raises(OrtBenchError, match=r"HTTP 503: busy, try later, 3 attempts: giving up") as err:
        b.generate(["Q:"], GenerationParams(max_new_tokens=1))
    assert "\n" not in str(err.value)
    assert len(stub.fail) == 7
    b.close()


def test_a_closed_client_stops_retrying_so_a_failed_run_exits(stub, monkeypatch):
    """After `close` (a run that failed or was interrupted), a request in its backoff makes no further
    attempt and no new request starts: nothing keeps the process waiting on retries."""
    monkeypatch.setattr(served_mod, "RETRY_BACKOFF_S", 30.0)  # a long wait between attempts
    b = backend(stub, max_retries=5)
    stub.fail = [503] * 10
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            b.client.post("/completions", {"model": "stub-model", "prompt": "Q:", "max_tokens": 1})
        except BaseException as exc:  # noqa: BLE001 - what the thread ended with is the assertion
            errors.append(exc)

    t = threading.Thread(target=ask)
    t.start()
    while len(stub.fail) == 10:  # the first attempt has been answered 503: now it waits 30 s to retry
        threading.Event().wait(0.01)
    b.close()
    t.join()
    assert len(stub.fail) == 9  # one attempt, no retry after close
    assert len(errors) == 1 and "the client was closed" in str(errors[0])
    with pytest.raises(OrtBenchError, match="the client was closed"):
        b.client.get("/models")


def test_other_request_failures_are_one_line(stub):
    b = backend(stub)
    b.client.base_url = "http://[::1"  # an invalid URL: requests raises InvalidURL, not a connection error
    with pytest.raises(OrtBenchError) as err:
        b.client.get("/models")
    assert "\n" not in str(err.value) and "InvalidURL" in str(err.value)
    b.close()


def test_a_client_error_is_not_retried(stub):
    b = backend(stub)
    stub.fail = [400]
    stub.requests.clear()
    with pytest.raises(OrtBenchError, match="HTTP 400"):
        b.generate(["Q:"], GenerationParams(max_new_tokens=1))
    assert len(stub.requests) == 1
    b.close()


def test_a_slow_server_times_out(stub):
    b = backend(stub, request_timeout=0.2, max_retries=1)
    stub.delay = 1.0
    with pytest.raises(OrtBenchError, match=r"no answer within 0.2 s, 2 attempts: giving up"):
        b.generate(["Q:"], GenerationParams(max_new_tokens=1))
    stub.delay = 0.0
    b.close()


def test_a_refused_connection_is_one_line(tiny_llama_dir):
    cfg = EvalConfig(backend="openai", base_url="http://127.0.0.1:9/v1", max_retries=1)
    with pytest.raises(OrtBenchError, match=r"127.0.0.1:9/v1/models: cannot connect"):
        get_backend("openai").resolve("stub-model", cfg, **cfg.backend_settings())


def test_requests_in_flight_are_bounded(stub):
    b = backend(stub, max_concurrency=3)
    stub.max_in_flight = 0
    stub.gate = threading.Barrier(3)  # the first three requests wait for each other: three at once, then more
    stub.delay = 0.01
    out = b.score([ScoreRequest(f"Q{i}:", (" A", " B"), GenerationParams(max_new_tokens=1)) for i in range(8)])
    assert [r.text for r in out] == ["Paris"] * 8
    assert stub.max_in_flight == 3  # reached (the gate) and never passed (the pool)
    b.close()


# --------------------------------------------------------------------------- the key, bad settings


def test_the_key_is_sent_and_never_stored(stub, tmp_path, monkeypatch, capsys, caplog):
    from ort_bench.scoring.evaluate import evaluate

    monkeypatch.setenv("ORT_BENCH_DATA", str(FIX / "kb"))
    monkeypatch.setenv("ORT_BENCH_TEMPLATES", str(FIX / "templates"))
    monkeypatch.setenv("STUB_KEY", KEY)
    stub.key = KEY
    evaluate("stub-model", tmp_path / "run", limit=3, progress=False,
             config=config(stub, api_key_env="STUB_KEY", max_new_tokens=4))
    assert all(h.get("Authorization") == f"Bearer {KEY}" for h in stub.headers)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert files and not any(KEY in p.read_text(errors="replace") for p in files)
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err + caplog.text
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["api_key_env"] == "STUB_KEY"
    # a wrong key: one line, and the key is not in it
    monkeypatch.setenv("STUB_KEY", "sk-wrong")
    with pytest.raises(OrtBenchError, match="HTTP 401: invalid API key") as err:
        backend(stub, api_key_env="STUB_KEY")
    assert "sk-wrong" not in str(err.value)
    monkeypatch.delenv("STUB_KEY")
    with pytest.raises(OrtBenchError, match="STUB_KEY: that environment variable is not set"):
        backend(stub, api_key_env="STUB_KEY")


def test_bad_settings_are_one_line(stub, tiny_llama_dir):
    with pytest.raises(OrtBenchError, match="needs --base-url"):
        get_backend("openai").resolve("stub-model", EvalConfig(backend="openai"))
    with pytest.raises(OrtBenchError, match="no credentials in the URL"):
        backend(stub, base_url="http://user:pw@127.0.0.1:1/v1")
    with pytest.raises(OrtBenchError, match="serves no model 'other' \\(it serves: stub-model\\)"):
        cfg = config(stub)
        get_backend("openai").resolve("other", cfg, **cfg.backend_settings())
    with pytest.raises(OrtBenchError, match="backend openai does not support --dtype"):
        checked_backend("openai", EvalConfig(backend="openai", dtype="bfloat16"))
    with pytest.raises(OrtBenchError, match="backend hf does not support --base-url"):
        cfg = EvalConfig(base_url=stub.url)
        checked_backend("hf", cfg, **cfg.backend_settings())


# --------------------------------------------------------------------------- fingerprint, results, resume


def test_the_fingerprint_is_the_servers_report_and_fixed_answers(stub):
    cfg = config(stub)
    resolve = get_backend("openai").resolve
    one = resolve("stub-model", cfg, **cfg.backend_settings())
    assert one.kind == "served" and one.served["weak_fingerprint"] is True
    assert "weaker than a weight hash" in one.served["note"]
    assert one.served["card"] == {"id": "stub-model", "owned_by": "stub", "root": stub.root, "max_model_len": 2048}
    assert resolve("stub-model", cfg, **cfg.backend_settings()).fingerprint == one.fingerprint  # `created` left out
    global ANSWER
    saved, ANSWER = ANSWER, "Lyon is the capital of France".split()
    try:
        assert resolve("stub-model", cfg, **cfg.backend_settings()).fingerprint != one.fingerprint
    finally:
        ANSWER = saved
    plain = resolve("stub-model", config(stub, tokenizer="none"), **config(stub, tokenizer="none").backend_settings())
    assert plain.fingerprint != one.fingerprint  # other prompts (no chat template), other fingerprint


def test_a_killed_run_resumes_and_results_say_the_model_is_served(stub, tmp_path, monkeypatch):
    from ort_bench.scoring.evaluate import evaluate

    monkeypatch.setenv("ORT_BENCH_DATA", str(FIX / "kb"))
    monkeypatch.setenv("ORT_BENCH_TEMPLATES", str(FIX / "templates"))
    cfg = config(stub, max_new_tokens=4, chunk_size=2, max_retries=1)
    run = tmp_path / "run"
    stub.fail_after = 40  # the fingerprint, the check and a few chunks, then the server goes down
    with pytest.raises(OrtBenchError, match="HTTP 503"):
        evaluate("stub-model", run, limit=4, progress=False, config=cfg)
    kept = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert kept, "chunks finished before the failure are on disk"
    stub.fail_after = None
    stub.requests.clear()
    res = evaluate("stub-model", run, limit=4, progress=False, config=cfg)
    assert res["model"]["new_records"] == res["n_probes"] - len(kept) and res["model"]["reused_records"] == len(kept)
    asked = {r["prompt"] for r in stub.completions()}
    assert not any(r["prompt_text"] in asked for r in kept)  # nothing kept was asked again
    assert res["model"]["kind"] == "served" and res["model"]["served"]["weak_fingerprint"] is True
    assert res["model"]["backend"]["backend"] == "openai"
    # a clean run gives the same records
    clean = evaluate("stub-model", tmp_path / "clean", limit=4, progress=False, config=cfg)
    def strip(path: Path) -> dict[str, Any]:
        return {r["key"]: (r["output"], r["prob"]) for r in map(json.loads, path.read_text().splitlines())}
    assert strip(run / "records.jsonl") == strip(tmp_path / "clean" / "records.jsonl")
    assert clean["model"]["fingerprint"] == res["model"]["fingerprint"]


# --------------------------------------------------------------------------- the leaderboard


def test_the_leaderboard_marks_a_served_entry(tmp_path, v3_unpinned):
    from test_submit import make_run  # tests/ is on sys.path: the shared run-folder builder

    from ort_bench.board.leaderboard import build_leaderboard
    from ort_bench.board.submit import submit

    root = tmp_path / "leaderboards"
    for name in ("served-one", "local-one"):
        run = make_run(tmp_path / name, model_fp=f"fp-{name}", seed=1)
        if name == "served-one":  # what evaluate writes for a model behind an endpoint
            res = json.loads((run / "results.json").read_text())
            res["model"].update(kind="served", served={"weak_fingerprint": True, "note": served_mod.FINGERPRINT_NOTE})
            (run / "results.json").write_text(json.dumps(res))
        submit(run, name, date="2025-02-01", root=root)
    build_leaderboard(root=root)
    out = next(p for p in root.iterdir() if (p / "leaderboard.md").is_file())
    md = (out / "leaderboard.md").read_text()
    rows = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| ") and "-one" in line}
    assert "(served: model)" in rows["served-one"] and "served" not in rows["local-one"]
    assert "weaker than a weight hash" in md
    table = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert {r["name"]: r["served"] for r in table} == {"served-one": "model", "local-one": ""}
    doc = json.loads((out / "leaderboard.json").read_text())
    assert {e["name"]: e.get("served") for e in doc["entries"]} == {"served-one": ["model"], "local-one": None}
    assert "(served: model)" in (out / "index.html").read_text()


def test_an_audit_rescores_a_served_run_at_its_endpoint(stub, tmp_path, v3_unpinned):
    """`audit` resolves the model through the run's backend: the endpoint recorded in results.json is asked
    again (the stub's served model is also the reference here: it only needs to be a scored run)."""
    from ort_bench.board.audit import audit
    from ort_bench.scoring.evaluate import evaluate

    run = tmp_path / "run"  # one item per form (as tests/test_audit.py): what a run needs to be verified
    evaluate("stub-model", run, reference="stub-model", targets=["france", "japan", "william_shakespeare"],
             limit={"forget": 11, "neighbour": 2, "utility": 2}, progress=False, config=config(stub, max_new_tokens=4))
    before = len(stub.completions())
    report = audit(run, sample=3, seed=0, write=False)
    assert report["backend"] == "openai" and report["probes"] >= 3
    assert len(stub.completions()) > before  # re-asked at the endpoint, not read back from the records
    stub.fail_after = 0  # the endpoint is gone: the audit cannot pass
    with pytest.raises(OrtBenchError):
        audit(run, sample=3, seed=0, write=False)


def test_templates_check_scores_with_a_served_reference(stub, capsys):
    """`templates check --backend openai` takes the same endpoint flags as evaluate: the reference it scores
    the variants with is the served one."""
    from ort_bench.cli import main

    rc = main(["templates", "check", "qa-direct-en", "--backend", "openai", "--base-url", stub.url,
               "--model", "stub-model", "--limit", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc in (0, 1) and out[0]["variant"] == "qa-direct-en"
    assert len(stub.completions()) > 3  # the fingerprint, the check and the variants' probes, asked there


def test_a_checkpoint_served_under_its_own_path_brings_its_card(stub, tmp_path, monkeypatch):
    """`vllm serve runs/npo` names the model runs/npo: its unlearn card is read there, as for a local
    checkpoint (results.json's unlearned_with, the card copied into the run); a plain name has none."""
    from ort_bench.scoring.evaluate import evaluate

    monkeypatch.setenv("ORT_BENCH_DATA", str(FIX / "kb"))
    monkeypatch.setenv("ORT_BENCH_TEMPLATES", str(FIX / "templates"))
    ckpt = tmp_path / "npo"
    ckpt.mkdir()
    (ckpt / "unlearn_card.json").write_text(json.dumps({"method": "npo", "train_form": "qa", "targets": ["france"]}))
    stub.name = str(ckpt)
    res = evaluate(str(ckpt), tmp_path / "run", limit=3, progress=False, config=config(stub, max_new_tokens=4))
    assert res["model"]["kind"] == "served" and res["model"]["unlearned_with"]["method"] == "npo"
    assert (tmp_path / "run" / "unlearn_card.json").is_file()
    stub.name = "stub-model"
    plain = evaluate("stub-model", tmp_path / "plain", limit=3, progress=False, config=config(stub, max_new_tokens=4))
    assert "unlearned_with" not in plain["model"] and not (tmp_path / "plain" / "unlearn_card.json").exists()
