"""The transformers backend: batching must not change a single answer or likelihood."""

from __future__ import annotations

import pytest
import torch

from ort_bench.errors import OrtBenchError
from ort_bench.models import resolve_model
from ort_bench.models.load_options import LoadOptions
from ort_bench.models.prompting import format_prompt, join_continuation
from ort_bench.scoring.backends import GenerationParams, LogLikelihood, get_backend
from ort_bench.scoring.backends.base import cut_at_stop
from ort_bench.scoring.backends.hf import HFBackend

QUESTIONS = [
    "Hi",
    "What is the capital of France? Answer in one word, and be quick about it please.",
    "Who was Ada Lovelace?",
    "La capitale de Norway est",
    "汉字 and emoji 🙂",
    "Question: Which city is the capital of Kenya?",
    "x",
]


@pytest.fixture(scope="module")
def llama_backend(tiny_llama_dir):
    return get_backend("hf")(resolve_model(str(tiny_llama_dir)), LoadOptions(device="cpu"), batch_size=3)


@pytest.fixture(scope="module")
def gpt2_backend(tiny_gpt2_dir):
    return get_backend("hf")(resolve_model(str(tiny_gpt2_dir)), LoadOptions(device="cpu"), batch_size=4)


def _prompts(backend: HFBackend) -> list[str]:
    return [format_prompt(backend.tokenizer, q) for q in QUESTIONS]


def test_registered_and_settings(llama_backend):
    assert get_backend("hf") is HFBackend
    assert llama_backend.settings() == {"backend": "hf", "dtype": "float32", "device": "cpu", "batch_size": 3}
    assert not llama_backend.model.training


@pytest.mark.parametrize("name", ["llama_backend", "gpt2_backend"])
def test_batched_generate_equals_one_at_a_time(name, request):
    backend = request.getfixturevalue(name)
    prompts = _prompts(backend)
    lengths = {len(backend.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts}
    assert len(lengths) >= 5  # really different lengths: padding is exercised
    params = GenerationParams(max_new_tokens=8)
    batched = backend.generate(prompts, params)
    single = [backend.generate([p], params)[0] for p in prompts]
    assert batched == single
    assert len(set(batched)) >= 3  # outputs differ per prompt, so a mix-up of order would show
    assert backend.generate(list(reversed(prompts)), params) == list(reversed(batched))


def test_generate_matches_plain_transformers(llama_backend):
    """The first prompt's answer equals a direct greedy `model.generate` with no padding at all."""
    tok, model = llama_backend.tokenizer, llama_backend.model
    prompt = _prompts(llama_backend)[1]
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert llama_backend.generate([prompt], GenerationParams(max_new_tokens=6)) == [expected]


def test_stop_strings_cut_the_output(llama_backend):
    prompts = _prompts(llama_backend)[:3]
    full = llama_backend.generate(prompts, GenerationParams(max_new_tokens=10))
    stop = next(ch for ch in full[0][1:] if not ch.isspace())  # a character that really occurs
    cut = llama_backend.generate(prompts, GenerationParams(max_new_tokens=10, stop=(stop,)))
    assert cut[0] == full[0][: full[0].index(stop)].strip()
    assert len(cut[0]) < len(full[0])
    assert all(stop not in c for c in cut)
    assert cut_at_stop("Paris.\nQuestion: x", ("\nQuestion", "zzz")) == "Paris."


def _manual_loglikelihood(backend: HFBackend, context: str, continuation: str) -> tuple[float, int]:
    tok, model = backend.tokenizer, backend.model
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    total = sum(logprobs[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))
    return total, len(cont)


@pytest.mark.parametrize("name", ["llama_backend", "gpt2_backend"])
def test_batched_loglikelihood_equals_unbatched_and_manual(name, request):
    backend = request.getfixturevalue(name)
    prompts = _prompts(backend)
    answers = ["Paris", "Ada Lovelace was a mathematician", "Oslo", "42", "Nairobi, the capital", "B", "true"]
    requests = [(p, join_continuation(p, a)) for p, a in zip(prompts, answers, strict=True)]
    requests.append((prompts[1], join_continuation(prompts[1], "Madrid")))  # same context, other answer
    batched = backend.loglikelihood(requests)
    assert all(isinstance(r, LogLikelihood) for r in batched)
    single = [backend.loglikelihood([r])[0] for r in requests]
    for (ctx, cont), b, s in zip(requests, batched, single, strict=True):
        manual, n = _manual_loglikelihood(backend, ctx, cont)
        assert b.n_tokens == s.n_tokens == n > 0
        assert b.logprob == pytest.approx(s.logprob, abs=1e-4)
        assert b.logprob == pytest.approx(manual, abs=1e-4)
        assert b.logprob < 0
    assert len({round(b.logprob, 3) for b in batched}) == len(batched)  # nothing got swapped or repeated


@pytest.mark.parametrize("name", ["llama_backend", "gpt2_backend"])
def test_continuations_sharing_a_context_match_the_manual_sum(name, request):
    """Aliases and options share one cached pass over their context: each still equals its own sum."""
    backend = request.getfixturevalue(name)
    backend.batch_size = 2  # several batches, some contexts with more continuations than the batch
    prompts = _prompts(backend)[:3]
    answers = [["Paris", "Paris, France", "the city of Paris on the Seine", "P"],
               ["1809", "in the year 1809"], ["A", "B", "C", "D", "true", "false"]]
    requests = [(p, join_continuation(p, a)) for p, alts in zip(prompts, answers, strict=True) for a in alts]
    for (ctx, cont), got in zip(requests, backend.loglikelihood(requests[::-1])[::-1], strict=True):
        manual, n = _manual_loglikelihood(backend, ctx, cont)
        assert got.n_tokens == n and got.logprob == pytest.approx(manual, abs=1e-4)


def test_loglikelihood_edge_cases(llama_backend):
    prompt = _prompts(llama_backend)[0]
    empty_cont, empty_ctx = llama_backend.loglikelihood([(prompt, ""), ("", "Paris")])
    assert empty_cont == LogLikelihood(0.0, 0)
    # an empty context is scored from the BOS token
    bos = llama_backend.tokenizer.bos_token
    manual, n = _manual_loglikelihood(llama_backend, bos, "Paris")
    assert empty_ctx.n_tokens == n and empty_ctx.logprob == pytest.approx(manual, abs=1e-4)
    assert llama_backend.loglikelihood([]) == [] and llama_backend.generate([], GenerationParams()) == []


def test_long_prompt_is_truncated_not_crashing(llama_backend):
    long = format_prompt(llama_backend.tokenizer, "the capital of France " * 120)  # > 256 positions
    assert len(llama_backend.tokenizer(long, add_special_tokens=False)["input_ids"]) > 256
    (ll,) = llama_backend.loglikelihood([(long, " Paris")])
    assert ll.n_tokens >= 1 and ll.logprob < 0
    assert isinstance(llama_backend.generate([long], GenerationParams(max_new_tokens=4))[0], str)


def test_bad_batch_size(tiny_llama_dir):
    with pytest.raises(OrtBenchError, match="batch size"):
        HFBackend(resolve_model(str(tiny_llama_dir)), batch_size=0)


def test_lora_backend_runs(tiny_llama_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)),
                           LoraConfig(r=2, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.3)
    model.save_pretrained(str(tmp_path / "lora"))
    lora = HFBackend(resolve_model(str(tmp_path / "lora")), batch_size=2)
    base = HFBackend(resolve_model(str(tiny_llama_dir)), batch_size=2)
    req = [(_prompts(base)[1], " Paris")]
    assert lora.loglikelihood(req)[0].logprob != pytest.approx(base.loglikelihood(req)[0].logprob, abs=1e-3)
    prompts = _prompts(lora)[:4]
    params = GenerationParams(max_new_tokens=5)
    assert lora.generate(prompts, params) == [lora.generate([p], params)[0] for p in prompts]


@pytest.mark.integration
def test_embedded_batched_equals_single(embedded_model):
    backend = HFBackend(embedded_model, batch_size=8)
    tok = backend.tokenizer
    prompts = [format_prompt(tok, q) for q in ("What is the capital of France?", "Who wrote Hamlet?",
                                               "What is the chemical symbol for gold? Answer briefly.")]
    params = GenerationParams(max_new_tokens=12)
    batched = backend.generate(prompts, params)
    assert "Paris" in batched[0]
    assert batched == [backend.generate([p], params)[0] for p in prompts]
    reqs = [(prompts[0], "The capital of France is Paris."), (prompts[2], "The chemical symbol for gold is Au.")]
    for b, s in zip(backend.loglikelihood(reqs), [backend.loglikelihood([r])[0] for r in reqs], strict=True):
        assert b.logprob == pytest.approx(s.logprob, abs=1e-3) and b.n_tokens == s.n_tokens


# --------------------------------------------------------------------------- the fast path (issue 20)

SYSTEM = "You are a careful assistant. Answer the question in a few words, and say nothing else at all."


def _system_prompts(backend: HFBackend) -> list[str]:
    """Prompts that share a long system turn, and one with another system turn (it must not spoil the rest)."""
    prompts = [format_prompt(backend.tokenizer, q, SYSTEM) for q in QUESTIONS]
    return prompts + [format_prompt(backend.tokenizer, "Hi there", "Another system turn.")]


@pytest.mark.parametrize("name", ["llama_backend", "gpt2_backend"])
def test_shared_prefix_changes_no_answer(name, request):
    """The system turn is run once and its cache copied to every row: answers equal one prompt at a
    time (no sharing possible), and fewer tokens went through the model."""
    backend = request.getfixturevalue(name)
    prompts = _system_prompts(backend)
    n, shared = backend._shared_prefix([backend.encode(p) for p in prompts])
    assert n > len(backend.encode(SYSTEM))  # the whole system turn is shared
    assert shared == set(range(len(QUESTIONS)))  # the odd system turn is left out, the rest share
    params = GenerationParams(max_new_tokens=6)
    before = backend.tokens_processed
    batched = backend.generate(prompts, params)
    spent = backend.tokens_processed - before
    single = [backend.generate([p], params)[0] for p in prompts]
    assert batched == single
    unshared = sum(len(backend.encode(p)) for p in prompts)
    assert spent < unshared  # the prefix once, not once per prompt (decoding steps included)
    requests = [(p, join_continuation(p, "Paris is the answer")) for p in prompts]
    for (ctx, cont), got in zip(requests, backend.loglikelihood(requests), strict=True):
        manual, k = _manual_loglikelihood(backend, ctx, cont)
        assert got.n_tokens == k and got.logprob == pytest.approx(manual, abs=1e-4)


@pytest.mark.parametrize("name", ["llama_backend", "gpt2_backend"])
def test_score_equals_generate_and_loglikelihood(name, request):
    """One `score` call (answer and likelihoods on one prefill) gives what the two calls give apart."""
    from ort_bench.scoring.backends import ScoreRequest

    backend = request.getfixturevalue(name)
    prompts = _system_prompts(backend)
    params = GenerationParams(max_new_tokens=7)
    conts = [(join_continuation(p, "Paris"), join_continuation(p, "the city of Oslo")) for p in prompts]
    reqs = [ScoreRequest(p, c, params if k % 3 else None) for k, (p, c) in enumerate(zip(prompts, conts, strict=True))]
    got = backend.score(reqs)
    for r, g in zip(reqs, got, strict=True):
        if r.params is None:
            assert g.text is None and g.new_tokens is None
        else:
            (text,) = backend.generate([r.context], params)
            assert g.text == text and 0 < g.new_tokens <= params.max_new_tokens
        apart = backend.loglikelihood([(r.context, c) for c in r.continuations])
        for a, b in zip(g.loglikelihoods, apart, strict=True):
            assert a.n_tokens == b.n_tokens and a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_decoding_pool_is_refilled_without_changing_answers(tiny_llama_dir):
    """Rows leave the decoding pool at their stop string or limit and new prompts join it (prefilled
    one at a time, caches of other lengths merged in): every answer equals its answer alone."""
    backend = HFBackend(resolve_model(str(tiny_llama_dir)), batch_size=1, decode_batch=2, progress=False)
    prompts = _prompts(backend) * 5
    mixed = [GenerationParams(max_new_tokens=2 + k % 7) for k in range(len(prompts))]
    from ort_bench.scoring.backends import ScoreRequest

    widths: list[int] = []
    forward = backend._forward

    def recording(ids, mask, pos, cache, keep):
        widths.append(mask.shape[1])
        return forward(ids, mask, pos, cache, keep)

    backend._forward = recording
    got = backend.score([ScoreRequest(p, (), m) for p, m in zip(prompts, mixed, strict=True)])
    backend._forward = forward
    # the pool drops the columns of rows that left: never wider than its longest row (a few columns of
    # slack), where keeping every column would widen it by one a step for the whole call
    longest = max(len(backend.encode(p)) + m.max_new_tokens for p, m in zip(prompts, mixed, strict=True))
    assert max(widths) <= longest + 4 < sum(m.max_new_tokens for m in mixed) // backend.decode_batch
    alone = [backend.generate([p], m)[0] for p, m in zip(prompts, mixed, strict=True)]
    assert [g.text for g in got] == alone
    assert [g.new_tokens for g in got] == [m.max_new_tokens for m in mixed]  # a random model meets no EOS


def test_rows_leave_at_their_stop_string(llama_backend):
    """A row that meets its stop string stops decoding (fewer tokens through the model), same text."""
    prompts = _prompts(llama_backend)[:3]
    full = llama_backend.generate(prompts, GenerationParams(max_new_tokens=12))
    stop = next(ch for ch in full[0][1:] if not ch.isspace())
    before = llama_backend.tokens_processed
    llama_backend.generate(prompts, GenerationParams(max_new_tokens=12))
    spent_full = llama_backend.tokens_processed - before
    before = llama_backend.tokens_processed
    cut = llama_backend.generate(prompts, GenerationParams(max_new_tokens=12, stop=(stop,)))
    assert llama_backend.tokens_processed - before < spent_full
    assert cut[0] == full[0][: full[0].index(stop)].strip()
