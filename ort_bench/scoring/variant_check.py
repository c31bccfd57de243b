"""Does a new form variant measure its form? `ort-bench templates check` and `templates propose` (issue 22).

A variant counts in a tier only once a person has accepted it (`ort_bench.kb.variants`); before that,
`check_variants` renders it over the knowledge base and scores the reference model on it and on the
form's accepted variants, on the same forget facts and through the same scoring path as `evaluate`
(`score_model`: any backend, any load option). The variant **measures the form** when all three hold:

1. **Known rate within the form's range.** The reference knows k of the n items the new variant renders
   (known as the benchmark decides it: the item's score reaches the scorer's threshold, `items_of`).
   The 95% Wilson score interval of k / n must meet [lowest, highest] known rate of the form's accepted
   variants on the same facts. The interval, not the point: with a few dozen items a rate moves by
   ±0.15 from sampling alone, and a variant is refused only when its rate is out of the range beyond
   that noise; the report says by how much.
2. **The answer is not in the prompt.** On no sampled fact does its prompt (system turn and prefill
   included) show more of the gold answer than every accepted variant of the form does on that fact:
   free answers and true/false pairs, the gold's content words that `answer_match` voids; multiple
   choice, the gold option named more often than another option (`ort_bench.kb.variants.gold_shown`).
   Relative to the form, because some forms show the answer by design (a true statement, the options).
3. **Chance level as declared.** It is scored by the form's scorer (it asks the same kind of decision);
   its items' chance level, as metrics compute it from what they render (`items_of`), is the one its
   scorer and choices declare (`ort_bench.kb.variants.declared_chance`); and the reference knows more
   items than chance explains: at least one for free answers, else a binomial tail below the
   benchmark's `CHANCE_ALPHA` (the rule a form needs for an efficacy).

`propose_variants` asks a model for new phrasings of a variant's prompt (as a probe through
`score_model`, so a served backend works as any other), keeps the phrasings that make valid
templates, writes them as proposals and checks each. A proposal enters no tier until a person moves it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from ort_bench.benchmark import CURRENT
from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import SPLITS, load_kb
from ort_bench.kb.probes import Probe
from ort_bench.kb.render import ContextBuilder, render_probes
from ort_bench.kb.templates import Template, load_templates
from ort_bench.kb.variants import (
    ANSWER_IN_PROMPT,
    Rendered,
    body_variables,
    declared_chance,
    find_variant,
    form_profile,
    gold_shown,
    parse_proposals,
    proposal_examples,
    proposal_problem,
    proposal_request,
    render_on,
    sample_facts,
    shows_more,
    unreviewed_dir,
    write_proposal,
)
from ort_bench.scoring.eval_config import EvalConfig
from ort_bench.scoring.metrics_v2 import CHANCE_ALPHA, binomial_tail, items_of
from ort_bench.scoring.records import records_frame
from ort_bench.scoring.scoring_loop import score_model

DEFAULT_MODEL = "embedded"
DEFAULT_LIMIT = 40  # forget facts: about a minute a variant for the embedded model on 2 CPU cores
WILSON_Z = 1.959963984540054  # two-sided 95%
TOKENS_PER_PROPOSAL = 48
EPS = 1e-9  # a Wilson bound at 0 of n or n of n is 0 or 1 only up to rounding


def wilson(k: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion k / n (95% by default): unlike the normal
    approximation it stays inside [0, 1] and is not empty at 0 of n or n of n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def fmt_chance(c: float) -> str:
    """1/4, 1/256, 0: a chance level as the fraction it is."""
    if c == 0:
        return "0"
    f = Fraction(c).limit_denominator(100_000)
    return f"{f.numerator}/{f.denominator}" if abs(float(f) - c) < 1e-12 else f"{c:.3g}"


@dataclass
class VariantRow:
    """One variant on the sampled facts: items rendered, items the reference knows, chance levels."""

    id: str
    half: str
    status: str | None
    items: int
    known: int
    chances: list[float]
    new: bool = False

    @property
    def rate(self) -> float | None:
        return self.known / self.items if self.items else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.known, self.items)


@dataclass
class Rule:
    name: str
    passed: bool
    detail: str


@dataclass
class VariantCheck:
    """The check of one variant: the table of rates and the three rules (module docstring)."""

    variant: str
    form: str
    path: str
    model: dict[str, Any]
    facts: int
    renders: dict[str, int]
    rows: list[VariantRow]
    rules: list[Rule]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules)

    def verdict(self) -> str:
        if self.passed:
            return (f"verdict: {self.variant} measures the form {self.form}; it counts in no tier until a person "
                    f"moves it to templates/{self.form}/ and deletes its `status:` line")
        failed = ", ".join(r.name for r in self.rules if not r.passed)
        return f"verdict: {self.variant} does not measure the form {self.form} ({failed})"

    def report(self) -> str:
        head = (f"check of {self.variant} ({self.path}), form {self.form}: reference {self.model.get('spec')} "
                f"(fingerprint {str(self.model.get('fingerprint', ''))[:12]}, backend {self.model.get('backend')}), "
                f"{self.facts} forget facts")
        cols = ("variant", "half", "items", "known", "rate", "95% Wilson", "chance")
        table = []
        for r in self.rows:
            lo, hi = r.interval
            table.append([r.id + (" (new)" if r.new else ""), r.status or r.half, str(r.items), str(r.known),
                          "—" if r.rate is None else f"{r.rate:.2f}", f"[{lo:.2f}, {hi:.2f}]" if r.items else "—",
                          ", ".join(sorted({fmt_chance(c) for c in r.chances})) or "—"])
        widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
        lines = [head, "", "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table]
        lines.append("")
        lines += [f"{r.name + ':':<18} {'pass' if r.passed else 'FAIL'}  {r.detail}" for r in self.rules]
        lines.append("renders over the knowledge base: " + ", ".join(f"{s} {n}" for s, n in self.renders.items())
                     + " probes")
        lines += [f"note: {n}" for n in self.notes]
        lines.append(self.verdict())
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["passed"] = self.passed
        for row, r in zip(d["rows"], self.rows, strict=True):
            row["rate"], row["interval"] = r.rate, list(r.interval)
        return d


@dataclass
class _Plan:
    """A candidate and what it is compared with: the form's accepted variants, the sampled facts, and
    each variant's item per fact."""

    cand: Template
    existing: list[Template]
    facts: list[Any]
    rendered: dict[str, dict[str, Rendered]]
    renders: dict[str, int]


@contextmanager
def _records_dir(out: str | Path | None) -> Iterator[Path]:
    """`out` (kept), or a temporary folder removed when the block ends."""
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="ort-bench-check-") as tmp:
        yield Path(tmp)


def _plan(cand: Template, accepted: list[Template], kb: Any, limit: int | None, cache: dict[tuple, Any]) -> _Plan:
    # rendered over the whole knowledge base first, as `templates validate` does: a failure names the file
    renders = {s: len(render_probes(kb, [cand], s)[0]) for s in SPLITS}
    profile = form_profile(cand.spec.form, templates=accepted)
    existing = [t for t in profile.variants if t.id != cand.id]
    if not existing:
        raise OrtBenchError(f"{cand.id}: form {cand.spec.form!r} has no other accepted variant to compare with")
    key = tuple(t.id for t in existing)
    if key not in cache:
        builder = ContextBuilder(kb)
        facts = sample_facts(kb, existing, limit)
        cache[key] = (facts, {t.id: render_on(kb, t, facts, builder=builder) for t in existing}, builder)
    facts, rendered, builder = cache[key]
    return _Plan(cand, existing, facts, {**rendered, cand.id: render_on(kb, cand, facts, builder=builder)}, renders)


def _rule_rate(new: VariantRow, others: list[VariantRow], n_facts: int, skipped: dict[str, int]) -> Rule:
    rates = [r.rate for r in others if r.rate is not None]
    if not rates:
        return Rule("known rate", False, "no accepted variant of the form renders an item on these facts")
    low, high = min(rates), max(rates)
    span = f"the form's variants {low:.2f} to {high:.2f} on the same facts"
    if not new.items:
        why = "; ".join(f"{n} {r}" for r, n in sorted(skipped.items())) or "nothing rendered"
        return Rule("known rate", False, f"renders no item on the {n_facts} sampled facts ({why})")
    lo, hi = new.interval
    own = f"the reference knows {new.known} of {new.items} items ({new.rate:.2f}, 95% Wilson [{lo:.2f}, {hi:.2f}])"
    if hi < low - EPS:
        return Rule("known rate", False, f"{own}: below {span}, by {low - hi:.2f} beyond the interval")
    if lo > high + EPS:
        return Rule("known rate", False, f"{own}: above {span}, by {lo - high:.2f} beyond the interval")
    return Rule("known rate", True, f"{own}: meets {span}")


def _rule_prompt(plan: _Plan, kb: Any) -> Rule:
    leaks: list[str] = []
    for fact in plan.facts:
        mine = plan.rendered[plan.cand.id][fact.id]
        if not mine.probes and mine.skipped != ANSWER_IN_PROMPT:
            continue
        theirs = [gold_shown(kb, fact, t, plan.rendered[t.id][fact.id]) for t in plan.existing
                  if plan.rendered[t.id][fact.id].probes]
        shown = gold_shown(kb, fact, plan.cand, mine)
        if shows_more(shown, theirs):
            words = sorted({str(w) for v in shown.values() if isinstance(v, frozenset) for w in v})
            what = ("every answer" if shown.get("all") else f"gold words {', '.join(words)}" if words
                    else "the gold option named more often than the others")
            leaks.append(f"{fact.id} ({what})")
    if leaks:
        return Rule("answer in prompt", False, f"its prompt shows more of the answer than every {plan.cand.spec.form} "
                    f"variant on {len(leaks)} of {len(plan.facts)} facts: " + "; ".join(leaks[:3]))
    return Rule("answer in prompt", True, f"on none of the {len(plan.facts)} facts does its prompt show more of the "
                "answer than the form's variants do")


def _rule_chance(new: VariantRow, cand: Template, existing: list[Template]) -> Rule:
    scorer = cand.spec.scorer
    form_scorers = sorted({t.spec.scorer for t in existing})
    if scorer not in form_scorers:
        return Rule("chance level", False, f"scored by {scorer}, the form's variants by {', '.join(form_scorers)}: "
                    "it asks another kind of decision")
    declared = declared_chance(cand)
    mine = sorted({round(c, 12) for c in new.chances})
    if not mine:
        return Rule("chance level", False, "no item to measure")
    if mine != [round(declared, 12)]:
        return Rule("chance level", False, f"its items' chance {', '.join(fmt_chance(c) for c in mine)} is not the "
                    f"{fmt_chance(declared)} its scorer and choices declare: the choices do not render as declared")
    if declared == 0:
        ok = new.known > 0
        beat = f"knows {new.known} of {new.items} items" + ("" if ok else ": none, so nothing is measured")
    else:
        p = binomial_tail(new.known, new.items, declared)
        ok = p < CHANCE_ALPHA
        beat = (f"knows {new.known} of {new.items} items, {'more than' if ok else 'no more than'} chance explains "
                f"(P = {p:.2g}, {'<' if ok else '>='} {CHANCE_ALPHA})")
    return Rule("chance level", ok, f"chance {fmt_chance(declared)} as declared ({scorer}, "
                f"{_choices_text(cand)}); the reference {beat}")


def _choices_text(tpl: Template) -> str:
    c = tpl.spec.choices
    if c is None:
        return "open answers"
    if isinstance(c, tuple):
        return "labels " + "/".join(c)
    return "4 options" + ("" if declared_chance(tpl) < 0.25 else ", not shown: the rotations are one decision")


def check_variants(
    refs: Sequence[str | Path | Template],
    model: str = DEFAULT_MODEL,
    limit: int | None = DEFAULT_LIMIT,
    config: EvalConfig | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    root: Path | None = None,
) -> list[VariantCheck]:
    """Check each variant (a path, an id of a draft, proposal or accepted template, or a `Template`)
    against its form's accepted variants on up to `limit` forget facts, scoring `model` as the reference
    with `config` (backend and load options). `out`: a folder that keeps the records, so a later check
    with the same model reuses the accepted variants' answers (default: a temporary folder)."""
    if limit is not None and limit < 1:
        raise OrtBenchError(f"--limit must be at least 1 fact (got {limit})")
    config = config or EvalConfig()
    kb, accepted = load_kb(), load_templates(root)
    cands = [r if isinstance(r, Template) else find_variant(r, root) for r in refs]
    cache: dict[tuple, Any] = {}
    plans = [_plan(c, accepted, kb, limit, cache) for c in cands]
    probes: dict[str, Probe] = {}
    for plan in plans:
        for per_fact in plan.rendered.values():
            for r in per_fact.values():
                probes.update((p.id, p) for p in r.probes)
    with _records_dir(out) as folder:
        records, info = score_model(model, list(probes.values()), folder / "records.jsonl", config, "reference",
                                    progress)
    items = items_of(records_frame(records), CURRENT)
    template_of = {p.item_key: p.template_id for p in probes.values()}
    by_template: dict[str, list[tuple[bool, float]]] = {}
    for row in items.itertuples(index=False):
        known = float(row.primary) >= CURRENT.threshold(row.scorer)
        by_template.setdefault(template_of[row.probe_id], []).append((known, float(row.chance)))
    model_info = {"spec": model, "fingerprint": info.get("fingerprint"), "backend": config.backend}
    return [_verdict(plan, by_template, model_info, kb) for plan in plans]


def _row(t: Template, by_template: dict[str, list[tuple[bool, float]]], new: bool) -> VariantRow:
    got = by_template.get(t.id, [])
    return VariantRow(t.id, t.spec.half, t.spec.status, len(got), sum(k for k, _ in got),
                      sorted({c for _, c in got}), new)


def _verdict(plan: _Plan, by_template: dict[str, list[tuple[bool, float]]], model: dict[str, Any], kb: Any,
             ) -> VariantCheck:
    others = [_row(t, by_template, False) for t in plan.existing]
    new = _row(plan.cand, by_template, True)
    skipped: dict[str, int] = {}
    for r in plan.rendered[plan.cand.id].values():
        if r.skipped:
            skipped[r.skipped] = skipped.get(r.skipped, 0) + 1
    rules = [_rule_rate(new, others, len(plan.facts), skipped), _rule_prompt(plan, kb),
             _rule_chance(new, plan.cand, plan.existing)]
    notes = []
    if skipped and new.items:
        notes.append(f"{plan.cand.id} renders {new.items} of the {len(plan.facts)} facts: "
                     + "; ".join(f"{n} {r}" for r, n in sorted(skipped.items())))
    mine = {f: tuple((p.system, p.prompt, p.prefill) for p in r.probes) for f, r in plan.rendered[plan.cand.id].items()}
    for t in plan.existing:
        if mine and all(mine[f] == tuple((p.system, p.prompt, p.prefill) for p in r.probes)
                        for f, r in plan.rendered[t.id].items()):
            notes.append(f"renders the very prompts of {t.id}: not a new phrasing")
    return VariantCheck(plan.cand.id, plan.cand.spec.form, str(plan.cand.path), model, len(plan.facts), plan.renders,
                        [*others, new], rules, notes)


# --------------------------------------------------------------------------------------------------
# Proposals
# --------------------------------------------------------------------------------------------------


@dataclass
class Proposal:
    """One phrasing from the model: the file written, or why it was rejected; its check."""

    text: str
    problem: str | None = None
    id: str | None = None
    path: str | None = None
    check: VariantCheck | None = None


@dataclass
class ProposeReport:
    form: str
    base: str
    model: dict[str, Any]
    asked: int
    request: str
    reply: str
    proposals: list[Proposal]

    def report(self) -> str:
        lines = [f"proposals for the form {self.form}, rephrasing {self.base}, from {self.model.get('spec')} "
                 f"(fingerprint {str(self.model.get('fingerprint', ''))[:12]}): {len(self.proposals)} phrasing(s) "
                 f"in the reply, {self.asked} asked"]
        for i, p in enumerate(self.proposals, 1):
            shown = p.text.replace("\n", "\\n")
            if p.problem is not None:
                lines.append(f"{i}. rejected ({p.problem}): {shown!r}")
                continue
            lines.append(f"{i}. written {p.path} (status: proposal): {shown!r}")
            if p.check is not None:
                lines += ["   " + line for line in p.check.report().splitlines()]
        if not self.proposals:
            lines.append(f"the reply held no numbered phrasing: {self.reply[:200]!r}")
        lines.append("no proposal counts in a tier: a person reads it, runs `ort-bench templates check`, and moves "
                     f"the ones to keep to templates/{self.form}/ without their `status:` line")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for row, p in zip(d["proposals"], self.proposals, strict=True):
            row["check"] = p.check.as_dict() if p.check is not None else None
        return d


def propose_variants(
    form: str,
    model: str = DEFAULT_MODEL,
    n: int = 3,
    base: str | None = None,
    config: EvalConfig | None = None,
    limit: int | None = DEFAULT_LIMIT,
    out: str | Path | None = None,
    folder: str | Path | None = None,
    check: bool = True,
    progress: bool = False,
    root: Path | None = None,
) -> ProposeReport:
    """Ask `model` for `n` new phrasings of `base`'s prompt (default: an evaluation-half English variant of
    `form`), write the valid ones as proposals in `folder` (default `templates/proposals/<form>/`) and,
    with `check`, check each. The request is scored as one probe through `score_model`, greedily, so
    any backend `config` names serves (a served model included); `out` keeps its record and the checks'."""
    if n < 1:
        raise OrtBenchError(f"--n must be at least 1 (got {n})")
    config = config or EvalConfig()
    kb, accepted = load_kb(), load_templates(root)
    profile = form_profile(form, templates=accepted)
    if base is None:
        base_t = next((t for t in profile.variants if t.spec.lang == "en" and t.spec.half == "eval"),
                      profile.variants[0])
    else:
        base_t = next((t for t in profile.variants if t.id == base), None)
        if base_t is None:
            raise OrtBenchError(f"--from {base}: not an accepted {form} variant "
                                f"({', '.join(t.id for t in profile.variants)})")
    examples = proposal_examples(base_t, profile)
    request, prefill = proposal_request(base_t, examples, n)
    digest = hashlib.sha256(f"{request}\0{prefill}".encode()).hexdigest()[:16]
    probe = Probe(id=f"proposal-request-{digest}", split="forget", target=None, form=form, lang=base_t.spec.lang,
                  template_id=f"propose:{base_t.id}", prompt=request, prefill=prefill,
                  answers=(base_t.spec.prompt,), scorer="answer_match")
    asking = dataclasses.replace(config, max_new_tokens=TOKENS_PER_PROPOSAL * n + 16)
    with _records_dir(out) as records_dir:
        [record], info = score_model(model, [probe], records_dir / "records.jsonl", asking, "model", progress)
        reply = f"{prefill} {record.get('output') or ''}"
        model_info = {"spec": model, "fingerprint": info.get("fingerprint"), "backend": config.backend}
        proposed_by = f"{model} (fingerprint {info.get('fingerprint')})"
        dest = Path(folder) if folder is not None else unreviewed_dir("proposals", form, root)
        proposals: list[Proposal] = []
        seen: dict[str, int] = {}
        for text in parse_proposals(reply, len(examples) + 1, n, sorted(body_variables(base_t, ('prompt',)))):
            prop = Proposal(text)
            if text in seen:
                prop.problem = f"the same as phrasing {seen[text]}"
            else:
                seen[text] = len(proposals) + 1
                prop.problem = proposal_problem(text, base_t, profile, kb)
            if prop.problem is None:
                tpl = write_proposal(base_t, text, proposed_by, dest, request)
                prop.id, prop.path = tpl.id, str(tpl.path)
            proposals.append(prop)
        written = [p for p in proposals if p.path is not None]
        if check and written:
            checks = check_variants([p.path for p in written if p.path], model, limit, config, records_dir,
                                    root=root)
            for p, c in zip(written, checks, strict=True):
                p.check = c
    return ProposeReport(form, base_t.id, model_info, n, request, reply, proposals)
