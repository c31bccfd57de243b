"""New form variants before anyone accepts them: drafts a person writes, proposals a model writes.

Issue 22: `ort-bench templates new` writes a commented draft, `templates propose` turns a model's
phrasings into proposal files, and `templates check` (`ort_bench.scoring.variant_check`) says whether
one measures its form. Nothing here is ever scored as part of the benchmark: an unreviewed variant lives
in `templates/drafts/<form>/` or `templates/proposals/<form>/`, which `load_templates` does not read, and
carries `status: draft|proposal`, which keeps it out even if it is moved with the mark still on
(`ort_bench.kb.templates.load_templates`). A person accepts one by moving it to `templates/<form>/` and
deleting the mark.

What a form needs is read from its accepted variants (their common metadata and the fields their
bodies all use), not from a table here: a form that changes its variants changes its skeleton.
This module needs no model: rendering on a sample of facts and the answer-in-prompt comparison live
here; scoring them is the scoring stage's.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ort_bench.answers import match_details
from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import LANGS, SPLITS, Fact, KnowledgeBase
from ort_bench.kb.probes import Probe, spread
from ort_bench.kb.render import LETTERS, ContextBuilder, RenderSummary, answers_for, render_fact, render_probes
from ort_bench.kb.templates import (
    BODIES,
    CONTEXT_FIELDS,
    FORMS,
    UNREVIEWED_DIRS,
    Template,
    TemplateFile,
    load_template,
    load_templates,
)
from ort_bench.paths import templates_dir
from ort_bench.scorers import SCORERS

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
META_FIELDS = ("scorer", "needs", "hops", "half", "answer_from", "choices")
LANG_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "zh": "Chinese (simplified)"}


# --------------------------------------------------------------------------------------------------
# Where unreviewed variants live, and finding one
# --------------------------------------------------------------------------------------------------


def unreviewed_dir(kind: str, form: str, root: Path | None = None) -> Path:
    """`templates/drafts/<form>` or `templates/proposals/<form>` (below `root`, default the templates folder)."""
    if kind not in UNREVIEWED_DIRS:
        raise ValueError(f"kind must be one of {UNREVIEWED_DIRS}")
    return (root or templates_dir()) / kind / form


def _file_id(path: Path) -> str | None:
    """The `id` a YAML file declares, read leniently (a half-written draft must not stop a search)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None


def unreviewed_files(root: Path | None = None) -> list[Path]:
    root = root or templates_dir()
    return sorted(p for kind in UNREVIEWED_DIRS for p in (root / kind).rglob("*.yaml")) if root.is_dir() else []


def taken_ids(root: Path | None = None) -> dict[str, Path]:
    """Every id in use: accepted templates, and drafts and proposals (an id is never reused: probe ids
    hash it). A file anywhere below the folder counts, marked or not."""
    root = root or templates_dir()
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.yaml")) if root.is_dir() else []:
        tid = _file_id(path)
        if tid is not None:
            out.setdefault(tid, path)
    return out


def find_variant(ref: str | Path, root: Path | None = None) -> Template:
    """A variant by file path, or by id among drafts, proposals and accepted templates."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise OrtBenchError(f"{path}: no such template file")
        return load_template(path)
    root = root or templates_dir()
    for p in unreviewed_files(root):
        if p.stem == str(ref) or _file_id(p) == str(ref):
            return load_template(p)
    for t in load_templates(root):
        if t.id == str(ref):
            return t
    raise OrtBenchError(f"unknown template {ref!r}: no accepted template, draft or proposal has this id "
                        "(give the file's path, or see `ort-bench templates list`)")


# --------------------------------------------------------------------------------------------------
# What a form needs, read from its accepted variants
# --------------------------------------------------------------------------------------------------


def body_variables(tpl: Template, bodies: Sequence[str] = ("prompt", "system", "prefill")) -> set[str]:
    """The context fields the given bodies use."""
    return set().union(*(v for b, v in tpl.variables().items() if b in bodies))


@dataclass
class FormProfile:
    """A form as its accepted variants define it: what they all share and what varies among them."""

    form: str
    variants: list[Template]

    def values(self, name: str) -> dict[Any, list[str]]:
        """Each value of a metadata field or body among the variants, with the ids that have it."""
        out: dict[Any, list[str]] = {}
        for t in self.variants:
            out.setdefault(getattr(t.spec, name), []).append(t.id)
        return out

    def shared(self, name: str) -> bool:
        return len(self.values(name)) == 1

    def used_by_all(self) -> list[str]:
        """The fields every variant needs: what the form asks through."""
        sets = [set(t.spec.needs) for t in self.variants]
        return sorted(set.intersection(*sets)) if sets else []

    def like(self, lang: str) -> Template:
        """The variant a new one starts from: an evaluation-half variant in `lang`, else any in `lang`,
        else an English one, else the first."""
        for pick in (lambda t: t.spec.lang == lang and t.spec.half == "eval", lambda t: t.spec.lang == lang,
                     lambda t: t.spec.lang == "en" and t.spec.half == "eval", lambda t: True):
            for t in self.variants:
                if pick(t):
                    return t
        raise OrtBenchError(f"form {self.form!r} has no accepted variant")


def form_profile(form: str, root: Path | None = None, templates: list[Template] | None = None) -> FormProfile:
    if form not in FORMS:
        raise OrtBenchError(f"unknown form {form!r} (known: {', '.join(FORMS)})")
    templates = templates if templates is not None else load_templates(root)
    variants = [t for t in templates if t.spec.form == form]
    if not variants:
        raise OrtBenchError(f"form {form!r} has no accepted variant to learn its fields from")
    return FormProfile(form, variants)


# --------------------------------------------------------------------------------------------------
# Writing template files (commented YAML that loads back to the same fields)
# --------------------------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    """One YAML value on one line (flow style: lists as [a, b])."""
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip().removesuffix(
        "\n...").removesuffix("...").strip()


def _body(name: str, text: str) -> str:
    """A body as a literal block when it reads back unchanged, else as one quoted scalar."""
    lines = text.split("\n")
    if text and text == text.strip() and not any(line != line.rstrip() for line in lines) and "\t" not in text:
        return f"{name}: |-\n" + "\n".join(f"  {line}" if line else "" for line in lines)
    return f"{name}: {_scalar(text)}"


def _comment(text: str) -> str:
    return "\n".join(f"# {line}".rstrip() for line in text.split("\n"))


def template_text(fields: dict[str, Any], header: str = "", notes: dict[str, str] | None = None) -> str:
    """A template file: `header` as comments on top, each field with its note as a comment above it."""
    notes = notes or {}
    out = [_comment(header)] if header else []
    for name, value in fields.items():
        if name in notes:
            out.append(_comment(notes[name]))
        if value is None and name in BODIES:
            continue
        out.append(_body(name, value) if name in BODIES and name != "target" else f"{name}: {_scalar(value)}")
    return "\n".join(out) + "\n"


def write_template(path: Path, fields: dict[str, Any], header: str = "", notes: dict[str, str] | None = None,
                   overwrite: bool = False) -> Template:
    """Write a template file and load it back: it must give the very fields written."""
    if path.exists() and not overwrite:
        raise OrtBenchError(f"{path}: exists already (choose another id or remove the file)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template_text(fields, header, notes), encoding="utf-8")
    tpl = load_template(path)
    written = tpl.spec.model_dump(exclude_unset=True)
    lost = [k for k, v in fields.items()
            if v is not None and written.get(k) != (tuple(v) if isinstance(v, list) else v)]
    if lost:  # a YAML quirk would make the file say something else than meant
        path.unlink()
        raise OrtBenchError(f"{path.name}: {lost[0]} does not read back as written; nothing written")
    return tpl


def _check_new_id(new_id: str, root: Path) -> None:
    if not ID_PATTERN.match(new_id):
        raise OrtBenchError(f"id {new_id!r}: use lowercase letters, digits, '-' and '_' (starting with a letter or "
                            "digit)")
    taken = taken_ids(root)
    if new_id in taken:
        raise OrtBenchError(f"id {new_id!r} is taken ({taken[new_id]}): ids are never reused, choose another")


def _varies(profile: FormProfile, name: str) -> str:
    parts = [f"{_scalar(v) if v is not None else 'none'} ({', '.join(ids)})" for v, ids in profile.values(name).items()]
    return f"varies among {profile.form} variants: " + "; ".join(parts)


def new_variant(form: str, lang: str, new_id: str, out: str | Path | None = None, like: str | None = None,
                root: Path | None = None) -> Path:
    """Write a commented draft of a new variant of `form` in `lang`: every field the form's variants
    share is filled in, every field that varies is the `like` variant's (default: one in `lang`) with
    the alternatives in a comment, and the bodies are `like`'s to be rewritten. The draft loads as a
    template (so `templates check` runs on it at once) and counts nowhere until accepted."""
    root = root or templates_dir()
    if lang not in LANGS:
        raise OrtBenchError(f"unknown language {lang!r} (known: {', '.join(LANGS)})")
    profile = form_profile(form, root)
    _check_new_id(new_id, root)
    if like is not None:
        base = next((t for t in profile.variants if t.id == like), None)
        if base is None:
            raise OrtBenchError(f"--like {like}: not an accepted {form} variant "
                                f"({', '.join(t.id for t in profile.variants)})")
    else:
        base = profile.like(lang)
    path = Path(out) if out is not None else unreviewed_dir("drafts", form, root) / f"{new_id}.yaml"
    if path.suffix != ".yaml":
        raise OrtBenchError(f"{path}: a template file ends in .yaml")
    fields: dict[str, Any] = {"id": new_id, "form": form, "lang": lang}
    notes: dict[str, str] = {}
    for name in META_FIELDS:
        value = getattr(base.spec, name)
        fields[name] = list(value) if isinstance(value, tuple) else value
        if name == "needs":
            notes[name] = (f"exactly the fields the bodies use; every {form} variant uses: "
                           f"{', '.join(profile.used_by_all()) or 'no common field'}")
        elif name == "half":
            halves = profile.values("half")
            notes[name] = ("train: `unlearn --train-form` trains on it; eval: evaluate scores it\n"
                           + "; ".join(f"{h}: {', '.join(ids)}" for h, ids in halves.items()))
        else:
            notes[name] = f"the same in every {form} variant" if profile.shared(name) else _varies(profile, name)
    fields["description"] = ""
    notes["description"] = "one line: what this variant does (templates/README.md lists it once accepted)"
    fields["status"] = "draft"
    notes["status"] = "delete this line when a person has checked the draft and moved it to templates/" + form + "/"
    for name in ("system", "prefill", "prompt", "target"):
        fields[name] = getattr(base.spec, name)
        have = [t.id for t in profile.variants if getattr(t.spec, name) is not None]
        if name == "target":
            notes[name] = f"the same in every {form} variant" if profile.shared(name) else _varies(profile, name)
        elif name == "prompt":
            notes[name] = f"the prompt of {base.id}: rewrite it" + (
                f" in {LANG_NAMES[lang]}" if base.spec.lang != lang else "")
        elif fields[name] is None:
            notes[name] = (f"{name} (optional): " + (f"used by {', '.join(have)}" if have else
                                                     f"no {form} variant has one") + f"; e.g. {name}: |-")
        else:
            notes[name] = f"{name} of {base.id} (optional: delete it for none)"
    usable = [k for k in CONTEXT_FIELDS if k != "answer" and (base.spec.hops == 2 or not k.startswith(("hop_",
                                                                                                   "bridge_")))]
    header = (
        f"Draft variant of the form `{form}` ({LANG_NAMES[lang]}), from `ort-bench templates new {form} --lang {lang} "
        f"--id {new_id}`,\nstarted from {base.id}. It counts in no tier and no run while it is marked "
        "`status: draft`.\n"
        f"  1. Rewrite the bodies; list in `needs` exactly the fields they use (`{{{{ field }}}}`).\n"
        f"  2. ort-bench templates check {new_id} --model embedded   (does it measure the form?)\n"
        f"  3. When it passes and reads well: move it to templates/{form}/{new_id}.yaml, delete the `status:` "
        "line,\n     and list it in templates/README.md.\n"
        "Fields the bodies may use (templates/README.md, Context fields):\n"
        + "\n".join(f"  {k}: {CONTEXT_FIELDS[k]}" for k in usable)
    )
    write_template(path, fields, header, notes)
    return path


def declared_chance(tpl: Template) -> float:
    """The chance level a variant's declaration implies: its scorer's `item_chance` over the probes of an
    item that a model can tell apart, each with the declared number of choices (a circular item whose
    prompt does not show the rotated options is one decision, as `mcq-rank-en`'s)."""
    scorer = SCORERS[tpl.spec.scorer]
    choices = tpl.spec.choices
    if choices is None:
        return scorer.item_chance([])
    n = len(LETTERS) if choices in ("options", "option_texts") else len(choices)
    prompts = {"single": 1, "pair": 2, "circular": len(LETTERS)}[scorer.item]
    if scorer.item == "circular" and not body_variables(tpl) & {"options", "answer_letter"}:
        prompts = 1
    return scorer.item_chance([n] * prompts)


# --------------------------------------------------------------------------------------------------
# Rendering variants on one sample of facts, and what of the answer their prompts show
# --------------------------------------------------------------------------------------------------


@dataclass
class Rendered:
    """One variant on one fact: its first item's probes, or why it renders none."""

    probes: list[Probe] = field(default_factory=list)
    skipped: str | None = None


def render_on(kb: KnowledgeBase, tpl: Template, facts: Sequence[Fact], split: str = "forget",
              builder: ContextBuilder | None = None) -> dict[str, Rendered]:
    """Per fact id, the first item `tpl` renders for it (two-hop: through its first bridge)."""
    builder = builder or ContextBuilder(kb)
    out: dict[str, Rendered] = {}
    for fact in facts:
        summary = RenderSummary()
        probes = render_fact(kb, builder, tpl, fact, split, summary)
        first = [p for p in probes if p.item_key == probes[0].item_key] if probes else []
        reason = next(iter(summary.skipped), (None, None))[1] if not first else None
        out[fact.id] = Rendered(first, reason)
    return out


def sample_facts(kb: KnowledgeBase, variants: Sequence[Template], limit: int | None, split: str = "forget",
                 ) -> list[Fact]:
    """The facts a check compares variants on: those every given variant renders (else those any
    renders), spread over targets in a fixed order, the first `limit`."""
    builder = ContextBuilder(kb)
    facts = sorted(kb.facts.get(split, []), key=lambda f: f.id)
    rendered = [{fid for fid, r in render_on(kb, t, facts, split, builder).items() if r.probes} for t in variants]
    common = set.intersection(*rendered) if rendered else set()
    keep = common or set().union(*rendered)
    chosen = spread([f for f in facts if f.id in keep], lambda f: f.target or "")
    return chosen[:limit] if limit else chosen


ANSWER_IN_PROMPT = "every answer stands in the prompt"  # render's skip reason


def _shown_text(p: Probe) -> list[str]:
    return [p.prompt, p.system or "", p.prefill or ""]


def _count(name: str, texts: Sequence[str]) -> int:
    pat = re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)", re.IGNORECASE)
    return sum(len(pat.findall(t)) for t in texts)


def gold_shown(kb: KnowledgeBase, fact: Fact, tpl: Template, rendered: Rendered) -> dict[str, Any]:
    """What of the gold answer each part of an item shows the model, per probe part (`variant`):
    free answers and true/false pairs, the gold's content terms standing in the prompt, system turn or
    prefill (as `answer_match` voids them); multiple choice, how many more times the gold option is
    named than the most-named other option. `{"all": True}` when render skipped the fact because every
    answer stands in the prompt."""
    if rendered.skipped == ANSWER_IN_PROMPT:
        return {"all": True}
    out: dict[str, Any] = {}
    options = None
    if SCORERS[tpl.spec.scorer].item == "circular":  # the option texts (a lettered probe's choices are letters)
        lang = tpl.spec.lang
        options = [kb.name(fact.object, lang), *(kb.name(d, lang) for d in ContextBuilder(kb).distractors(fact))]
    for p in rendered.probes:
        part = p.variant or "-"
        if options is not None:
            gold, *others = [_count(o, _shown_text(p)) for o in options]
            out[part] = gold - max(others, default=0)
        else:
            golds = answers_for(kb, fact, p.lang, tpl.spec.answer_from)
            voided = match_details("", golds, p.lang, _shown_text(p)).voided
            out[part] = frozenset(t for terms in voided.values() for t in terms)
    return out


def shows_more(new: dict[str, Any], existing: Sequence[dict[str, Any]]) -> bool:
    """Whether the new variant shows more of the gold than every one of the form's variants does on the
    same fact (a part the form's variants show as much of is not a leak of the new variant's)."""
    if new.get("all"):
        return not any(e.get("all") for e in existing)
    for part, value in new.items():
        seen = [e[part] for e in existing if part in e and not e.get("all")]
        if isinstance(value, int):
            if value > max(seen, default=0):
                return True
        elif value - frozenset().union(*seen):
            return True
    return False


# --------------------------------------------------------------------------------------------------
# Proposals: asking a model for phrasings, and turning its answer into proposal files
# --------------------------------------------------------------------------------------------------

PROPOSAL_PREFIX = "proposal"


def _one_line(body: str) -> str:
    return body.replace("\n", "\\n")


def proposal_examples(base: Template, profile: FormProfile) -> list[tuple[str, str]]:
    """(id, prompt) of the phrasings shown to the proposer: the base first, then the form's other
    variants in its language whose prompts use the same fields (their phrasings are interchangeable)."""
    want = body_variables(base, ("prompt",))
    out = [(base.id, base.spec.prompt)]
    for t in profile.variants:
        if (t.id != base.id and t.spec.lang == base.spec.lang and body_variables(t, ("prompt",)) == want
                and t.spec.prompt not in [p for _, p in out]):
            out.append((t.id, t.spec.prompt))
    return out


def proposal_request(base: Template, examples: list[tuple[str, str]], n: int) -> tuple[str, str]:
    """The prompt that asks a model for `n` new phrasings, and the prefill its reply starts with: the
    next number of the list, so that even a small model continues the list (SmolLM2-135M does, now and
    then with a usable line; asked instead to "rewrite this instruction", it wrote none in our trials)."""
    fields = sorted(body_variables(base, ("prompt",)))
    keep = " and ".join(f"{{{{ {f} }}}}" for f in fields) or "the wording's intent"
    listing = "\n".join(f"{i}. {_one_line(p)}" for i, (_, p) in enumerate(examples, 1))
    first = len(examples) + 1
    lang = "" if base.spec.lang == "en" else f" in {LANG_NAMES[base.spec.lang]}"
    prompt = (f"Here are {len(examples)} ways to word one quiz prompt.\n\n{listing}\n\n"
              f"Write {n} more{lang}, numbered {first} to {first + n - 1}. Keep {keep} in each; \\n marks a "
              "line break.")
    return prompt, f"{first}."


_NUMBERED = re.compile(r"^\s*(\d+)\s*[.):]\s*(.*)$")
_SINGLE_BRACES = re.compile(r"(?<!\{)\{\s*([A-Za-z_]+)\s*\}(?!\})")


def parse_proposals(reply: str, first: int, n: int, fields: Sequence[str] = ()) -> list[str]:
    """The phrasings in a reply (the prefill included): numbered lines from `first` on, at most `n`,
    quotes and code marks stripped, `\\n` turned into line breaks, and `{question}` (a placeholder in
    single braces, as small models write it) into `{{ question }}` for the fields in `fields`."""
    out: list[str] = []
    wanted = {f.lower(): f for f in fields}

    def braces(m: re.Match[str]) -> str:
        name = wanted.get(m.group(1).lower())
        return f"{{{{ {name} }}}}" if name else m.group(0)

    for line in reply.splitlines():
        m = _NUMBERED.match(line)
        if m is None or int(m.group(1)) < first:
            continue
        text = m.group(2).strip().strip("`").strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            text = text[1:-1].strip()
        out.append(_SINGLE_BRACES.sub(braces, text.replace("\\n", "\n")).strip())
        if len(out) == n:
            break
    return out


def proposal_id(base: Template, prompt: str) -> str:
    """A proposal's id, fixed by its text (the same phrasing proposed twice is one file)."""
    digest = hashlib.sha256(f"{base.id}\0{prompt}".encode()).hexdigest()[:8]
    return f"{base.spec.form.replace('_', '-')}-{PROPOSAL_PREFIX}-{digest}-{base.spec.lang}"


def proposal_fields(base: Template, prompt: str, proposed_by: str) -> dict[str, Any]:
    spec = base.spec
    return {
        "id": proposal_id(base, prompt), "form": spec.form, "lang": spec.lang, "scorer": spec.scorer,
        "needs": list(spec.needs), "hops": spec.hops, "half": spec.half, "answer_from": spec.answer_from,
        "choices": list(spec.choices) if isinstance(spec.choices, tuple) else spec.choices,
        "description": f"Proposed rephrasing of {base.id}'s prompt.", "status": "proposal",
        "proposed_by": proposed_by, "system": spec.system, "prefill": spec.prefill, "prompt": prompt,
        "target": spec.target,
    }


def proposal_problem(prompt: str, base: Template, profile: FormProfile, kb: KnowledgeBase) -> str | None:
    """Why a proposed phrasing cannot be a variant (None when it can): empty, an existing prompt, not a
    template that loads (Jinja syntax, a refused tag, a field the base does not declare), a field of
    the base's prompt dropped, or it fails to render, or renders nothing, over the knowledge base."""
    if not prompt.strip():
        return "empty"
    norm = " ".join(prompt.split())
    same = next((t.id for t in profile.variants if " ".join(t.spec.prompt.split()) == norm), None)
    if same is not None:
        return f"the prompt of {same}, not a new phrasing"
    fields = proposal_fields(base, prompt, "-")
    try:
        TemplateFile.model_validate(fields)
        with tempfile.TemporaryDirectory() as tmp:
            tpl = write_template(Path(tmp) / "proposal.yaml", fields)
    except OrtBenchError as exc:
        return str(exc).removeprefix("proposal.yaml: ")
    except ValueError as exc:  # pydantic
        return f"not a template: {str(exc).splitlines()[0]}"
    dropped = sorted(body_variables(base, ("prompt",)) - body_variables(tpl, ("prompt",)))
    if dropped:
        return "drops " + ", ".join(f"{{{{ {d} }}}}" for d in dropped) + f" (the prompt of {base.id} uses it)"
    try:
        counts = {s: len(render_probes(kb, [tpl], s)[0]) for s in SPLITS}
    except OrtBenchError as exc:
        return f"does not render over the knowledge base: {str(exc).removeprefix('proposal.yaml: ')}"
    if counts["forget"] == 0:
        return "renders no probe on the forget split"
    return None


def write_proposal(base: Template, prompt: str, proposed_by: str, folder: Path, request: str) -> Template:
    """Write one valid phrasing as a proposal file in `folder` (one per text: rewriting it is harmless)."""
    fields = proposal_fields(base, prompt, proposed_by)
    header = (
        f"Proposal: a rephrasing of {base.id}'s prompt written by a model ({proposed_by}),\n"
        "by `ort-bench templates propose`. It counts in no tier and no run while it is marked `status: proposal`.\n"
        f"Check it (ort-bench templates check {fields['id']} --model embedded), read it, and to accept it: move it to\n"
        f"templates/{base.spec.form}/, give it a lasting id, delete the `status:` line and list it in "
        "templates/README.md.\n"
        f"It was asked for with {len(request)} characters of prompt; the examples shown were the form's variants."
    )
    return write_template(folder / f"{fields['id']}.yaml", fields, header, overwrite=True)
