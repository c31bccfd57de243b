"""Scorers: how one probe is scored, what "known" means, and what a model with no knowledge gets.

One registry that rendering (how many probes an item renders into), evaluate (generation or
likelihoods, how a probe is decided), metrics (threshold and chance level), submit and the leaderboard
read. An **item** is what is known or not: one probe for free answers, the pair of a true and a false
statement for `label_pair`, the rotations of the option order for `circular_choice`. An item is
correct only if every one of its probes is, so a model that always gives the same label or option
(answer bias) has no correct item on a paired or circular form.

Chance level: the probability that an answerer picking uniformly at random gets an item right
(`Scorer.item_chance`); scores are reported above chance, `(s - c) / (1 - c)` (`metrics_v2`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ort_bench.errors import OrtBenchError

ItemKind = Literal["single", "pair", "circular"]
HIGHER_KNOWS = "higher means more knowledge"


@dataclass(frozen=True)
class Scorer:
    """One way of scoring a probe. `decide` names how the per-probe choice is made."""

    name: str
    description: str
    needs_generation: bool  # free text is generated (else likelihoods only)
    known_threshold: float  # an item is known (by the reference) when its score >= this
    item: ItemKind  # how the renderer expands one fact x template into probes
    decide: Literal["rouge", "match", "prob", "raw_loglik", "calibrated_per_byte"]
    known_rule: str  # what "known" means, in words (docs/VALIDITY.md, results.json)
    direction: str = HIGHER_KNOWS

    def item_chance(self, n_choices: Sequence[int]) -> float:
        """Chance that a random answerer gets the item right: every distinct prompt of the item must
        be answered right, each with 1 / its number of choices (pass one entry per distinct prompt:
        rotations a model cannot tell apart, such as ranked option texts not shown in the prompt,
        are one decision). Free answers: 0 (open vocabulary)."""
        if self.decide in ("rouge", "match", "prob"):
            return 0.0
        return math.prod(1.0 / n for n in n_choices) if n_choices else 0.0


SCORERS: dict[str, Scorer] = {}


def register(scorer: Scorer) -> Scorer:
    SCORERS[scorer.name] = scorer
    return scorer


register(Scorer(
    "rouge_l_recall", "ROUGE-L recall of the greedy answer against the gold answers (RWKU style)",
    needs_generation=True, known_threshold=0.5, item="single", decide="rouge",
    known_rule="ROUGE-L recall of the greedy answer >= 0.5 (at least half of the gold answer said)"))
register(Scorer(
    "answer_match", "benchmark v3: the greedy answer holds every content word of a gold answer (or alias) "
    "that the prompt, system turn and prefill do not already hold (`ort_bench.answers`)",
    needs_generation=True, known_threshold=1.0, item="single", decide="match",
    known_rule="the answer contains the gold's content words (stopwords, punctuation and words the prompt "
               "already holds never count)"))
register(Scorer(
    "prob", "ORT's Prob: exp(-mean token NLL) of the gold answer after the prompt",
    needs_generation=False, known_threshold=0.1, item="single", decide="prob",
    known_rule="mean per-token probability of the gold answer >= 0.1"))
register(Scorer(
    "choice_acc", "benchmark v1: the gold option has the highest summed log-likelihood, one probe per item",
    needs_generation=False, known_threshold=1.0, item="single", decide="raw_loglik",
    known_rule="the gold option wins on this one probe (v1: a constant answerer is right on the items "
               "whose gold option matches its bias)"))
register(Scorer(
    "label_pair", "true/false by pairs: the template's two label words ranked by log-likelihood after "
    "the prompt, for the true statement and for its false counterpart",
    needs_generation=False, known_threshold=1.0, item="pair", decide="raw_loglik",
    known_rule="both statements of the pair judged right (true as the first label, false as the second)"))
register(Scorer(
    "circular_choice", "multiple choice under every rotation of the option order (MMBench's CircularEval); "
    "options ranked by their log-likelihood after the prompt minus their log-likelihood after a neutral "
    "prompt (domain-conditional PMI), per UTF-8 byte of the option",
    needs_generation=False, known_threshold=1.0, item="circular", decide="calibrated_per_byte",
    known_rule="the gold option wins under every rotation of the option order; an option the model prefers "
               "whatever the question (a letter, a frequent name) gains nothing from the calibration"))

# The prompt an option's prior likelihood is measured after (same system turn and prefill as the probe):
# it asks for an answer without saying what about, so a preference that survives it is answer bias.
NEUTRAL_PROMPT = "Answer in a few words."

SCORER_NAMES: tuple[str, ...] = tuple(SCORERS)


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]
    except KeyError:
        raise OrtBenchError(f"unknown scorer {name!r} (known: {', '.join(SCORERS)})") from None


def n_bytes(text: str) -> int:
    """Length normaliser of option texts: UTF-8 bytes, which do not depend on the tokenizer (so two
    models with different tokenizers rank the same options the same way) and count a Chinese
    character as more than a Latin letter, as its information is."""
    return max(1, len(text.encode("utf-8")))


def choice_scores(scorer: Scorer, logprobs: Sequence[float], choices: Sequence[str],
                  neutral_logprobs: Sequence[float] | None = None) -> list[float]:
    """The numbers the options are ranked by: raw summed log-likelihoods, or (calibrated) the
    log-likelihood gained over the neutral prompt, per byte of the option. Per byte rather than per
    token: the ranking must not depend on how a tokenizer happens to split a name, and models with
    different tokenizers must rank the same options the same way."""
    if scorer.decide == "calibrated_per_byte":
        if neutral_logprobs is None:
            raise ValueError(f"scorer {scorer.name} needs the options' log-likelihoods after the neutral prompt")
        return [(lp - ln) / n_bytes(c.strip()) for lp, ln, c in zip(logprobs, neutral_logprobs, choices, strict=True)]
    return list(logprobs)


def decide_choice(scores: Sequence[float], gold_index: int) -> float:
    """1.0 if the gold option's score is strictly higher than every other option's.

    Ties count as wrong: a model that no longer prefers anything (equal scores, e.g. a collapsed
    unlearned model, or NaN) must not be credited with knowing the answer by the tie-break order."""
    if not 0 <= gold_index < len(scores):
        raise ValueError(f"gold_index {gold_index} out of range for {len(scores)} options")
    gold = scores[gold_index]
    return float(all(gold > s for i, s in enumerate(scores) if i != gold_index))
