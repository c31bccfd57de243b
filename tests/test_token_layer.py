"""The token layer every backend shares (`TokenBackend`): a new engine writes only its two token-level
calls and gets the prompt rules, the window, the answer string and `score` from the base. Tested with
a small engine of our own (a deterministic rule over token ids, no model), so each rule shows alone."""

from __future__ import annotations

import math

import pytest

from ort_bench.errors import OrtBenchError
from ort_bench.scoring.backends import GenerationParams, LogLikelihood, ScoreRequest, TokenBackend


class RuleEngine(TokenBackend):
    """Answers with the tokens of "ok" then EOS; a continuation token's log-probability is
    -(1 + its position in the whole sequence) / 100, so truncation and offsets show in the sum."""

    name = "rule"

    def __init__(self, tokenizer, max_length: int | None = None):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.prompts_seen: list[list[int]] = []
        self.pairs_seen: list[tuple[list[int], list[int]]] = []

    def _generate_tokens(self, prompts, params):
        self.prompts_seen += prompts
        answer = self.encode(" ok")
        return [answer[: params.max_new_tokens] for _ in prompts]

    def _loglikelihood_tokens(self, requests):
        self.pairs_seen += requests
        return [LogLikelihood(-sum(1 + len(ctx) + j for j in range(len(cont))) / 100, len(cont))
                for ctx, cont in requests]


@pytest.fixture()
def engine(tiny_llama_dir):
    from transformers import AutoTokenizer

    return RuleEngine(AutoTokenizer.from_pretrained(str(tiny_llama_dir)))


def test_prompts_are_tokenized_without_special_tokens_and_answers_finished(engine):
    assert engine.generate(["The capital of France is", ""], GenerationParams(max_new_tokens=5)) == ["ok", "ok"]
    assert engine.prompts_seen[0] == engine.tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]
    assert engine.prompts_seen[1] == [engine.tokenizer.bos_token_id]  # an empty prompt starts from BOS
    assert engine.generate(["x"], GenerationParams(max_new_tokens=5, stop=("k",))) == ["o"]


def test_continuations_are_tokenized_apart_and_empty_ones_cost_nothing(engine):
    ctx = "The capital of France is"
    got = engine.loglikelihood([(ctx, " Paris"), (ctx, ""), ("", "Paris")])
    n_ctx, n_cont = len(engine.encode(ctx)), len(engine.encode(" Paris"))
    assert got[0] == LogLikelihood(-sum(1 + n_ctx + j for j in range(n_cont)) / 100, n_cont)
    assert got[1] == LogLikelihood(0.0, 0)
    assert engine.pairs_seen[-1][0] == [engine.tokenizer.bos_token_id]  # an empty context: BOS


def test_the_window_drops_the_oldest_tokens(engine):
    engine.max_length = 12
    long = "the capital of France " * 10
    engine.generate([long], GenerationParams(max_new_tokens=4))
    assert engine.prompts_seen[-1] == engine.encode(long)[-8:]  # room for the 4 answer tokens
    (ll,) = engine.loglikelihood([(long, " Paris and more words here than fit")])
    ctx, cont = engine.pairs_seen[-1]
    assert len(ctx) + len(cont) == 12 and len(ctx) >= 1 and ll.n_tokens == len(cont)


def test_score_rides_continuations_on_the_prompt_and_keeps_order(engine):
    reqs = [ScoreRequest("Q1", (" a", "", " b"), GenerationParams(max_new_tokens=3)),
            ScoreRequest("Q2", (" c",), None), ScoreRequest("Q1", (" a",), None)]
    got = engine.score(reqs)
    assert [g.text for g in got] == ["ok", None, None]
    assert got[0].new_tokens == len(engine.encode(" ok")[:3]) and got[1].new_tokens is None
    assert got[0].loglikelihoods[1] == LogLikelihood(0.0, 0)
    assert got[0].loglikelihoods[0] == got[2].loglikelihoods[0]
    assert all(ll.logprob < 0 for g in got for ll in g.loglikelihoods if ll.n_tokens)
    n_ctx, n_cont = len(engine.encode("Q2")), len(engine.encode(" c"))
    assert math.isclose(got[1].loglikelihoods[0].logprob, -sum(1 + n_ctx + j for j in range(n_cont)) / 100)


def test_an_empty_prompt_without_start_token_is_refused(engine):
    engine.tokenizer.bos_token = None
    engine.tokenizer.eos_token = None
    with pytest.raises(OrtBenchError, match="no BOS or EOS"):
        engine.generate([""], GenerationParams())
