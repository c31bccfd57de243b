"""Facts x templates -> probes. Deterministic: the same data and templates give the same file."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ort_bench.answers import all_aliases_in_context
from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import LANGS, RETAIN_HALVES, SPLITS, Fact, KnowledgeBase, fill, load_kb, retain_half
from ort_bench.kb.probes import Probe, probe_id, write_probes
from ort_bench.kb.templates import Template, load_templates
from ort_bench.scorers import SCORERS

LETTERS = ("A", "B", "C", "D")
# Context fields an item kind renders from, beyond the template's own needs (`item_variants`).
ITEM_NEEDS: dict[str, tuple[str, ...]] = {"pair": ("false_statement",), "circular": ("options", "answer_letter")}
N_EXAMPLES = 3


@dataclass
class RenderSummary:
    """What was rendered, and what was skipped and why (counted, never silent)."""

    by_form: Counter = field(default_factory=Counter)
    by_lang: Counter = field(default_factory=Counter)
    targets: set = field(default_factory=set)
    skipped: Counter = field(default_factory=Counter)  # (template id, reason) -> count

    @property
    def total(self) -> int:
        return sum(self.by_form.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "probes": self.total,
            "forms": dict(sorted(self.by_form.items())),
            "langs": dict(sorted(self.by_lang.items())),
            "targets": len(self.targets),
            "skipped": {f"{t}: {r}": n for (t, r), n in sorted(self.skipped.items())},
        }


def _rank(seed: str, items: Iterable[str]) -> list[str]:
    """A fixed pseudo-random order of `items` that depends only on `seed`."""
    return sorted(items, key=lambda s: hashlib.sha256(f"{seed}|{s}".encode()).hexdigest())


def _dedupe(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for s in items:
        if s and s not in out:
            out.append(s)
    return out


class ContextBuilder:
    """Builds the template context for one fact in one language; fields it cannot build are
    left out, so a template needing them is skipped for that fact with the reason counted."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}

    def distractors(self, fact: Fact) -> list[str]:
        gold = {fact.object, *fact.object_aliases}
        pool = [o for o in self.kb.objects_by_relation.get(fact.relation, []) if o not in gold]
        return _rank(fact.id, pool)[: len(LETTERS) - 1]

    def examples(self, fact: Fact) -> list[Fact]:
        pool = [
            f for f in self.kb.facts_by_relation.get(fact.relation, [])
            if f.subject != fact.subject
            and (fact.target is None or f.target != fact.target)
        ]
        by_id = {f.id: f for f in pool}
        return [by_id[i] for i in _rank(fact.id, by_id)[:N_EXAMPLES]]

    def phrasings(self, fact: Fact, lang: str, subject: str) -> dict[str, Any] | None:
        rel = self.kb.relations[fact.relation]
        ph = rel.phrasings.get(lang)
        if ph is None:
            return None
        obj = self.kb.name(fact.object, lang)
        out: dict[str, Any] = {
            "question": fill(ph.question, subject, obj),
            "cloze": fill(ph.cloze, subject, obj),
            "statement": fill(ph.statement, subject, obj),
        }
        if ph.reverse_question:
            out["reverse_question"] = fill(ph.reverse_question, subject, obj)
        return out

    def build(self, fact: Fact, lang: str) -> dict[str, Any]:
        """The context of `fact` in `lang`, built once and shared by every template of that language."""
        key = (fact.id, lang)
        if key not in self._cache:
            self._cache[key] = self._build(fact, lang)
        return self._cache[key]

    def _build(self, fact: Fact, lang: str) -> dict[str, Any]:
        kb = self.kb
        subject = kb.name(fact.subject, lang)
        ctx: dict[str, Any] = {
            "subject": subject,
            "object": kb.name(fact.object, lang),
            "relation": fact.relation,
            "target": kb.targets[fact.target].name if fact.target in kb.targets else "",
            "lang": lang,
        }
        local = self.phrasings(fact, lang, subject)
        if local is not None:
            ctx.update(local)
        en_ph = kb.relations[fact.relation].phrasings["en"]
        ctx["en"] = self.phrasings(fact, "en", fact.subject)
        ctx["paraphrases"] = [fill(p, fact.subject, fact.object) for p in en_ph.paraphrases]
        distractors = self.distractors(fact)
        if distractors and local is not None:
            ph = kb.relations[fact.relation].phrasings[lang]
            ctx["false_statement"] = fill(ph.statement, subject, kb.name(distractors[0], lang))
        if len(distractors) == len(LETTERS) - 1:
            options = _rank(fact.id + "|options", [fact.object, *distractors])
            ctx["options"] = [kb.name(o, lang) for o in options]
            ctx["letters"] = list(LETTERS)
            ctx["answer_letter"] = LETTERS[options.index(fact.object)]
        examples = self.examples(fact)
        if len(examples) == N_EXAMPLES and local is not None:
            ph = kb.relations[fact.relation].phrasings[lang]
            ctx["examples"] = [
                {"question": fill(ph.question, kb.name(e.subject, lang)), "answer": kb.name(e.object, lang)}
                for e in examples
            ]
        return ctx

    def hop_contexts(self, fact: Fact, lang: str, base: dict[str, Any]) -> list[tuple[Fact, dict[str, Any]]]:
        """One context per bridge fact (X, r, subject) whose relation has a noun phrase."""
        out = []
        ph = self.kb.relations[fact.relation].phrasings.get(lang)
        if ph is None:
            return out
        for bridge in self.kb.bridges_into.get(fact.subject, []):
            bph = self.kb.relations[bridge.relation].phrasings.get(lang)
            if bph is None or not bph.noun_phrase:
                continue
            phrase = fill(bph.noun_phrase, self.kb.name(bridge.subject, lang))
            out.append((bridge, {
                **base,
                "bridge_subject": self.kb.name(bridge.subject, lang),
                "bridge_phrase": phrase,
                "hop_question": fill(ph.question, phrase),
            }))
        return out


def answers_for(kb: KnowledgeBase, fact: Fact, lang: str, answer_from: str) -> list[str]:
    if answer_from == "subject":
        return _dedupe([kb.name(fact.subject, lang), fact.subject, *fact.subject_aliases])
    return _dedupe([kb.name(fact.object, lang), fact.object, *fact.object_aliases])


def _choices(tpl: Template, ctx: dict[str, Any]) -> tuple[str, ...] | None:
    """What a choice probe scores: the letters, the option texts of this fact, or a fixed list."""
    c = tpl.spec.choices
    if c is None:
        return None
    if c == "option_texts":
        return tuple(ctx["options"])
    return LETTERS if c == "options" else tuple(c)


def item_variants(tpl: Template, ctx: dict[str, Any], answers: list[str]) -> list[tuple[str | None, dict, list[str]]]:
    """The probes one fact x template renders into, as (variant, context, answers), by the item kind
    of the template's scorer: one probe; the true and the false statement (`pair`, gold = the first
    and the second label); every rotation of the option order (`circular`)."""
    item = SCORERS[tpl.spec.scorer].item
    if item == "pair":
        true_label, false_label = tpl.spec.choices  # type: ignore[misc]
        return [("true", ctx, [true_label]), ("false", {**ctx, "statement": ctx["false_statement"]}, [false_label])]
    if item == "circular":
        out = []
        options, gold = ctx["options"], LETTERS.index(ctx["answer_letter"])
        for k in range(len(options)):
            rotated = options[k:] + options[:k]
            out.append((f"rot{k}", {**ctx, "options": rotated, "answer_letter": LETTERS[(gold - k) % len(options)]},
                        answers))
        return out
    return [(None, ctx, answers)]


def render_fact(kb: KnowledgeBase, builder: ContextBuilder, tpl: Template, fact: Fact, split: str,
                summary: RenderSummary) -> list[Probe]:
    spec = tpl.spec
    base = builder.build(fact, spec.lang)
    if spec.hops == 2:
        contexts = [((bridge.id, fact.id), ctx) for bridge, ctx in builder.hop_contexts(fact, spec.lang, base)]
        if not contexts:
            summary.skipped[(spec.id, "no bridge into the subject")] += 1
    else:
        contexts = [((fact.id,), base)]
    needs = [*spec.needs, *ITEM_NEEDS.get(SCORERS[spec.scorer].item, ())]
    probes = []
    for fact_ids, ctx in contexts:
        missing = [n for n in needs if n not in ctx or (n == "en" and ctx["en"] is None)]
        if missing:
            has_lang = spec.lang in kb.relations[fact.relation].phrasings
            reason = f"no {missing[0]} for this fact" if has_lang else f"relation has no {spec.lang} phrasing"
            summary.skipped[(spec.id, reason)] += 1
            continue
        variants = item_variants(tpl, ctx, answers_for(kb, fact, spec.lang, spec.answer_from))
        item_id = probe_id(spec.id, fact_ids)
        for variant, vctx, answers in variants:
            out = tpl.render(vctx, answers)
            choices = _choices(tpl, vctx)
            if choices is not None and (not out["answers"] or out["answers"][0] not in choices):
                raise OrtBenchError(f"{tpl.path.name}: target renders {out['answers'][:1]} which is not a choice")
            if not out["prompt"] or not out["answers"]:
                empty = "prompt" if not out["prompt"] else "target"
                raise OrtBenchError(f"{tpl.path.name}: {empty}: renders empty for fact {fact.id!r}")
            if choices is None and all_aliases_in_context(out["answers"], spec.lang,
                                                          [out["prompt"], out["system"] or "", out["prefill"] or ""]):
                summary.skipped[(spec.id, "every answer stands in the prompt")] += 1
                break
            probes.append(Probe(
                id=probe_id(spec.id, fact_ids, variant), split=split, target=fact.target, form=spec.form,
                lang=spec.lang, template_id=spec.id, fact_ids=fact_ids, prompt=out["prompt"],
                system=out["system"], prefill=out["prefill"],
                answers=out["answers"][:1] if choices else out["answers"], choices=choices, scorer=spec.scorer,
                hops=spec.hops, item_id=item_id if variant else None, variant=variant, item_size=len(variants),
            ))
    return probes


def check_filters(kb: KnowledgeBase, templates: list[Template], forms: list[str] | None, langs: list[str] | None,
                  targets: list[str] | None) -> None:
    """Every target, language and form asked for exists (one line naming the first that does not)."""
    if targets:
        unknown = [t for t in targets if t not in kb.targets]
        if unknown:
            raise OrtBenchError(f"unknown target {unknown[0]!r} (see data/targets.yaml)")
    for lang in langs or []:
        if lang not in LANGS:
            raise OrtBenchError(f"unknown language {lang!r} (known: {', '.join(LANGS)})")
    known_forms = {t.spec.form for t in templates}
    for f in forms or []:
        if f not in known_forms:
            raise OrtBenchError(f"unknown form {f!r} (known: {', '.join(sorted(known_forms))})")


def render_probes(
    kb: KnowledgeBase,
    templates: list[Template],
    split: str = "forget",
    forms: list[str] | None = None,
    langs: list[str] | None = None,
    targets: list[str] | None = None,
    retain: str | None = None,
) -> tuple[list[Probe], RenderSummary]:
    """Render every fact of `split` with every selected template; return probes and a summary.
    `retain` ("train" or "eval") keeps, on the neighbour and utility splits, only the facts of that
    half (`facts.retain_half`): methods see retain-train, evaluation scores retain-eval."""
    if split not in SPLITS:
        raise OrtBenchError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    check_filters(kb, templates, forms, langs, targets)
    if retain not in (None, *RETAIN_HALVES):
        raise OrtBenchError(f"unknown retain half {retain!r} (choose from {', '.join(RETAIN_HALVES)})")
    chosen = [t for t in templates
              if (not forms or t.spec.form in forms) and (not langs or t.spec.lang in langs)]
    facts = [f for f in kb.facts.get(split, []) if (not targets or f.target in targets)
             and (retain is None or split == "forget" or retain_half(f.id) == retain)]
    builder = ContextBuilder(kb)
    summary = RenderSummary()
    probes: list[Probe] = []
    for fact in facts:
        for tpl in chosen:
            for p in render_fact(kb, builder, tpl, fact, split, summary):
                probes.append(p)
                summary.by_form[p.form] += 1
                summary.by_lang[p.lang] += 1
                if p.target:
                    summary.targets.add(p.target)
    probes.sort(key=lambda p: (p.target or "", p.form, p.template_id, p.fact_ids))
    return probes, summary


def validate_templates(
    templates_root: str | Path | None = None, data_root: str | Path | None = None,
    skipped: Counter | None = None,
) -> tuple[list[Template], dict[str, int]]:
    """Load every template (variables checked against the schema), then render it over the whole
    knowledge base, so a template that fails on some fact fails here. Returns probes per template;
    `skipped`, when given, gathers the (template id, reason) counts of what was not rendered."""
    templates = load_templates(templates_root)
    kb = load_kb(data_root)
    counts = {t.id: 0 for t in templates}
    for split in SPLITS:
        probes, summary = render_probes(kb, templates, split)
        for p in probes:
            counts[p.template_id] += 1
        if skipped is not None:
            skipped.update(summary.skipped)
    return templates, counts


def render(
    split: str = "forget",
    forms: list[str] | None = None,
    langs: list[str] | None = None,
    targets: list[str] | None = None,
    out: str | Path | None = None,
    kb: KnowledgeBase | None = None,
    templates: list[Template] | None = None,
    retain: str | None = None,
) -> tuple[list[Probe], RenderSummary]:
    """Render probes of one split; write them as JSONL when `out` is given. `retain` ("train" or
    "eval") keeps one half of the neighbour and utility facts (`facts.retain_half`)."""
    kb = kb or load_kb()
    templates = templates if templates is not None else load_templates()
    probes, summary = render_probes(kb, templates, split, forms, langs, targets, retain=retain)
    if out is not None:
        write_probes(out, probes)
    return probes, summary
