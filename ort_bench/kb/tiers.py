"""Tiers: fixed, seeded samples of the rendered items, stratified over form x target x fact x template.

Benchmark v2's `--limit` spread over forms, targets and templates but not over facts, so every
target gave its first fact to every form: a form rested on about ten facts. A tier samples facts.

- **forget**: every form takes up to `forget_facts_per_form` facts in one fixed order of the facts
  (targets round-robin, each target's facts in a seeded order), skipping the facts it cannot render,
  so the forms ask the *same* facts as far as they can: a form gap is not a difference of which fact
  was asked. Each fact gives one item, from the form's least-used template so far (ties seeded),
  so the variants are spread evenly.
- **neighbour / utility**: `retain_facts_per_form` facts a form, each form starting at its own
  place in the fixed order, so the forms together cover many distinct facts (utility retention
  clusters by fact and needs many).

The sample depends only on the seed, the rendered items and the targets asked for: with `--targets`
the tier is drawn within those targets (a single-target run gets every fact of its target up to the
tier's size); `--forms` and `--langs` filter it without changing the other forms' facts.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ort_bench.benchmark import FORMS
from ort_bench.errors import OrtBenchError
from ort_bench.kb.probes import Probe


@dataclass(frozen=True)
class Tier:
    name: str
    forget_facts_per_form: int | None  # None: every fact
    retain_facts_per_form: int | None
    seed: str
    # the leaderboard's forget targets for this tier (None: every target): a method unlearns these and
    # a run without --targets scores them, so no entry picks its targets after seeing its forms
    targets: tuple[str, ...] | None = None
    description: str = ""


# 20 targets of four kinds that the embedded model knows well (at least 5 qa facts, data/README.md)
CORE_TARGETS = ("apple", "canada", "charles_darwin", "eiffel_tower", "france", "hamlet", "isaac_newton", "italy",
                "japan", "leonardo_da_vinci", "les_miserables", "london", "marie_curie", "microsoft", "nasa",
                "new_york_city", "paris", "pride_and_prejudice", "rome", "william_shakespeare")

TIERS: dict[str, Tier] = {
    "core": Tier("core", forget_facts_per_form=48, retain_facts_per_form=10, seed="ort-bench-v3-core",
                 targets=CORE_TARGETS,
                 description="20 targets; 48 forget facts a form (the same facts across forms where they render), "
                             "10 neighbour and 10 utility facts a form (different facts across forms)"),
    "full": Tier("full", None, None, seed="ort-bench-v3-full",
                 description="every target; every item of the evaluation-half templates"),
}


def get_tier(name: str) -> Tier:
    try:
        return TIERS[name]
    except KeyError:
        raise OrtBenchError(f"unknown tier {name!r} (choose from {', '.join(TIERS)})") from None


def _fact(p: Probe) -> str:
    return p.fact or p.id  # a probe without facts is its own fact


def _h(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()


def _fact_order(items: Sequence[list[Probe]], seed: str) -> list[str]:
    """Every fact once: targets round-robin (in a seeded order), each target's facts in a seeded order."""
    by_target: dict[str, set[str]] = {}
    for item in items:
        by_target.setdefault(item[0].target or "", set()).add(_fact(item[0]))
    targets = sorted(by_target, key=lambda t: _h(seed, t))
    queues = [sorted(by_target[t], key=lambda f: _h(seed, f)) for t in targets]
    order: list[str] = []
    for i in range(max((len(q) for q in queues), default=0)):
        order.extend(q[i] for q in queues if i < len(q))
    return order


def _form_index(form: str) -> int:
    return FORMS.index(form) if form in FORMS else len(FORMS) + int(_h(form)[:8], 16) % 97


def sample_split(items: Sequence[list[Probe]], split: str, tier: Tier) -> list[list[Probe]]:
    """The tier's items of one split, in a stable order (form, then pick order)."""
    per_form = tier.forget_facts_per_form if split == "forget" else tier.retain_facts_per_form
    if per_form is None:
        return list(items)
    order = _fact_order(items, f"{tier.seed}|{split}")
    by_form: dict[str, dict[str, list[list[Probe]]]] = {}
    for item in items:
        by_form.setdefault(item[0].form, {}).setdefault(_fact(item[0]), []).append(item)
    out: list[list[Probe]] = []
    for form in sorted(by_form, key=_form_index):
        facts = by_form[form]
        start = 0 if split == "forget" else (_form_index(form) * len(order)) // len(FORMS)
        rotated = order[start:] + order[:start]
        used: Counter = Counter()
        for fact in [f for f in rotated if f in facts][:per_form]:
            choice = min(facts[fact], key=lambda it: (used[it[0].template_id], _h(tier.seed, fact, it[0].item_key)))
            used[choice[0].template_id] += 1
            out.append(choice)
    return out
