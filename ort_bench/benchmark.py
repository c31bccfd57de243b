"""Benchmark versions: the one place that says what a version scores and how.

A version fixes its forms (all required on the forget split of a leaderboard run), the scorers its
templates may use, the knowledge thresholds, the minimum evidence a form needs before it gets an
efficacy, how scores are aggregated and how intervals are drawn, and whether utility is scored on
held-out facts. Evaluate, metrics, submit and the leaderboard read it from here; nothing else spells
a version out. A version is a plain description: which metrics module computes its numbers is
decided in scoring (`ort_bench.scoring.results.version_compare` and its siblings), so this base
module imports nothing above it.

- **v1** (closed, read-only: its leaderboard still rebuilds from the stored records): one probe per
  item, probe-pooled means, probe bootstrap, utility on the retain set. Its choice forms measured
  answer bias (see docs/VALIDITY.md).
- **v2** (closed): true/false by pairs, multiple choice by rotations, scores above chance, means
  over targets with target-level intervals, utility on retain-eval facts no method saw.
- **v3** (current): free answers known only when the output holds the gold's content words that the
  prompt does not (`ort_bench.answers`); fixed seeded tiers sampled over facts (`core`, `full`);
  every form scored on the evaluation half of its templates (methods train on the training half);
  generation length per form; intervals with simulated coverage, the gap noise alone gives, and
  intervals over facts when a run has fewer than 3 targets; fluency as distance from the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ort_bench.errors import OrtBenchError
from ort_bench.scorers import SCORERS

FORMS: tuple[str, ...] = (
    "qa", "qa_paraphrase", "cloze", "mcq", "true_false", "cross_lingual",
    "translation", "multi_hop", "reverse", "subtoken", "adversarial",
)


@dataclass(frozen=True)
class BenchmarkVersion:
    name: str
    forms: tuple[str, ...]
    scorers: tuple[str, ...]  # scorers a probe of this version may carry
    min_known_items: int  # known items a form needs before it gets an efficacy
    min_known_targets: int  # targets those known items must come from
    aggregation: Literal["probes", "targets"]  # S_f: pooled over items, or mean over targets of target means
    resample: Literal["probes", "targets"]  # what the bootstrap resamples
    chance_corrected: bool  # scores reported above chance, (s - c) / (1 - c)
    retain_split: bool  # neighbour / utility scored on retain-eval facts only
    open_for_submissions: bool
    reports_prob: bool  # ORT's Prob per form in results, tables and leaderboard
    shows_audit: bool  # the leaderboard marks entries audited by re-scoring (ort-bench audit)
    description: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)
    metrics: Literal["v1", "v2", "v3"] = "v2"  # which metrics module computes this version's numbers
    tiers: tuple[str, ...] = ()  # fixed probe samples a run may score (`ort_bench.kb.tiers`); () = any selection
    template_halves: bool = False  # forms are scored on their templates' evaluation half only
    max_new_tokens: dict[str, int] = field(default_factory=dict)  # per form ("*": every other form)
    # where a free answer ends (`answers.cut_answer`): "sentence", "paragraph" or "none", per form ("*")
    answer_end: dict[str, str] = field(default_factory=dict)
    few_target_clusters: bool = False  # under min_known_targets targets: efficacy with intervals over facts
    pinned_submissions: bool = False  # submit takes whole tiers with the reference and the unlearn card

    def new_tokens(self, form: str, default: int) -> int:
        """Generation length of `form`'s free answers: the version's, else `default` (the run's)."""
        return self.max_new_tokens.get(form, self.max_new_tokens.get("*", default))

    def end_of_answer(self, form: str) -> str:
        """Where `form`'s free answers end before they are scored (the whole continuation by default)."""
        return self.answer_end.get(form, self.answer_end.get("*", "none"))

    @property
    def required_forms(self) -> tuple[str, ...]:
        """The forms a leaderboard run must cover on the forget split: every form of the version
        (a form the reference cannot be measured on is reported as such, not dropped)."""
        return self.forms

    def threshold(self, scorer: str) -> float:
        return self.thresholds.get(scorer, SCORERS[scorer].known_threshold)


V1 = BenchmarkVersion(
    name="v1", forms=FORMS, scorers=("rouge_l_recall", "prob", "choice_acc"), min_known_items=5,
    min_known_targets=0, aggregation="probes", resample="probes", chance_corrected=False, retain_split=False,
    open_for_submissions=False, reports_prob=False, shows_audit=False, metrics="v1",
    thresholds={"rouge_l_recall": 0.5, "choice_acc": 1.0, "prob": 0.1},
    description="closed: choice forms measured answer bias; utility was in-sample",
)
V2 = BenchmarkVersion(
    name="v2", forms=FORMS, scorers=("rouge_l_recall", "prob", "label_pair", "circular_choice", "choice_acc"),
    min_known_items=5, min_known_targets=3, aggregation="targets", resample="targets", chance_corrected=True,
    retain_split=True, open_for_submissions=False, reports_prob=True, shows_audit=True,
    description="closed: free answers credited for shared non-answer words; forms rested on ~10 facts; "
                "the trained prompts were scored",
)
V3 = BenchmarkVersion(
    name="v3", forms=FORMS, scorers=("answer_match", "prob", "label_pair", "circular_choice", "choice_acc"),
    min_known_items=5, min_known_targets=3, aggregation="targets", resample="targets", chance_corrected=True,
    retain_split=True, open_for_submissions=True, reports_prob=True, shows_audit=True, metrics="v3",
    tiers=("core", "full"), template_halves=True, few_target_clusters=True, pinned_submissions=True,
    max_new_tokens={"*": 48, "subtoken": 96, "translation": 64, "multi_hop": 64, "adversarial": 64},
    answer_end={"*": "sentence", "multi_hop": "paragraph", "subtoken": "paragraph"},
    description="content-word answers not in the prompt, tiers sampled over facts, evaluation-half templates, "
                "intervals with measured coverage, noise gap, few-target efficacy",
)
VERSIONS: dict[str, BenchmarkVersion] = {v.name: v for v in (V1, V2, V3)}
CURRENT = V3
BENCHMARK_VERSION = CURRENT.name


def get_version(name: str) -> BenchmarkVersion:
    try:
        return VERSIONS[name]
    except KeyError:
        raise OrtBenchError(f"unknown benchmark version {name!r} (this ort-bench knows "
                            f"{', '.join(VERSIONS)})") from None
