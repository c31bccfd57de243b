"""Form templates: one YAML file per form variant under `templates/`, with metadata and Jinja bodies.

Bodies are rendered in `ImmutableSandboxedEnvironment` with `StrictUndefined`, so a template that
names a missing field fails with the template and the field, and a template from a stranger
cannot reach Python internals. Adding a form is adding a file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from jinja2 import meta
from jinja2.sandbox import SecurityError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ort_bench.benchmark import CURRENT, FORMS
from ort_bench.errors import OrtBenchError
from ort_bench.jsonl import describe_validation_error
from ort_bench.kb.sandbox import BoundedSandbox, TemplateBudgetError, refused_tags, render_bounded
from ort_bench.paths import templates_dir
from ort_bench.scorers import SCORERS

TEMPLATE_SCORERS: tuple[str, ...] = tuple(s for s in CURRENT.scorers if s != "choice_acc")  # choice_acc: v1

# Every variable a body may use, and what it holds. `answer` only exists in the target body.
CONTEXT_FIELDS: dict[str, str] = {
    "subject": "subject name in the template's language",
    "object": "object name (the gold answer) in the template's language",
    "relation": "relation id",
    "target": "name of the target the fact belongs to ('' for utility facts)",
    "lang": "the template's language code",
    "question": "the relation's question, filled, in the template's language",
    "paraphrases": "list of other wordings of the English question, filled",
    "cloze": "cloze statement with a ___ blank, in the template's language",
    "statement": "true statement, in the template's language",
    "false_statement": "the statement with a distractor object, in the template's language",
    "reverse_question": "question asking for the subject given the object (template language)",
    "en": "the English phrasings, filled: en.question, en.cloze, en.statement, en.reverse_question",
    "options": "list of 4 answer options (gold + 3 distractors of the same relation), fixed order",
    "letters": "option letters, ['A', 'B', 'C', 'D']",
    "answer_letter": "letter of the gold option",
    "examples": "3 other facts of the same relation: list of {question, answer} (template language)",
    "hop_question": "two-hop question through a bridge entity (hops: 2 only)",
    "bridge_subject": "the bridge entity (hops: 2 only)",
    "bridge_phrase": "noun phrase naming the fact's subject through the bridge (hops: 2 only)",
    "answer": "target body only: one accepted answer (gold or alias) to render",
}


class TemplateMeta(BaseModel):
    """Metadata of one form variant: everything but the Jinja bodies."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    form: Literal[FORMS]  # type: ignore[valid-type]
    lang: Literal["en", "fr", "de", "es", "zh"]
    scorer: Literal[TEMPLATE_SCORERS]  # type: ignore[valid-type]
    needs: tuple[str, ...] = ()
    hops: Literal[1, 2] = 1
    answer_from: Literal["object", "subject"] = "object"
    # "options": the letters A-D; "option_texts": the four options themselves; or a fixed list
    choices: Literal["options", "option_texts"] | tuple[str, ...] | None = None
    description: str = ""
    # benchmark v3: "train" variants are what `unlearn` trains on for this form, "eval" variants what
    # evaluate scores, so a trained prompt is never the test (docs/VALIDITY.md)
    half: Literal["train", "eval"] = "eval"


class TemplateFile(TemplateMeta):
    prompt: str
    target: str
    system: str | None = None
    prefill: str | None = None
    # an unreviewed variant (`ort-bench templates new` writes drafts, `templates propose` proposals): it
    # counts in no tier and no run until a person has checked it, moved it and deleted this mark
    status: Literal["draft", "proposal"] | None = None
    proposed_by: str | None = None  # the model that wrote a proposal (spec and fingerprint): provenance

    @property
    def meta(self) -> TemplateMeta:
        return TemplateMeta.model_validate(self.model_dump(include=set(TemplateMeta.model_fields)))


BODIES = ("prompt", "target", "system", "prefill")
# Folders below the templates folder that hold unreviewed variants: never read by `load_templates`
UNREVIEWED_DIRS = ("drafts", "proposals")

_ENV = BoundedSandbox()


@dataclass
class Template:
    """A loaded, compiled template; `render` turns a context into prompt/system/prefill/targets."""

    spec: TemplateFile
    path: Path
    sha256: str
    _compiled: dict[str, jinja2.Template] = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.spec.id

    def variables(self) -> dict[str, set[str]]:
        """The undeclared (context) variables each body uses."""
        out = {}
        for body in BODIES:
            src = getattr(self.spec, body)
            if src is not None:
                out[body] = meta.find_undeclared_variables(_ENV.parse(src))
        return out

    def _render(self, body: str, ctx: dict[str, Any]) -> str:
        try:
            if body not in self._compiled:
                self._compiled[body] = _ENV.from_string(getattr(self.spec, body))
            return render_bounded(self._compiled[body], ctx).strip()
        except jinja2.UndefinedError as exc:
            raise OrtBenchError(f"{self.path.name}: {body}: {exc.message}") from None
        except SecurityError as exc:
            raise OrtBenchError(f"{self.path.name}: {body}: refused by the sandbox ({exc})") from None
        except TemplateBudgetError as exc:
            raise OrtBenchError(f"{self.path.name}: {body}: refused: {exc}") from None
        except RecursionError:
            raise OrtBenchError(f"{self.path.name}: {body}: refused: recursion too deep") from None
        except jinja2.TemplateError as exc:
            raise OrtBenchError(f"{self.path.name}: {body}: {exc}") from None
        except (TypeError, ValueError, ArithmeticError, AttributeError, IndexError, KeyError, MemoryError) as exc:
            raise OrtBenchError(f"{self.path.name}: {body}: {type(exc).__name__}: {str(exc)[:200]}") from None

    def render(self, ctx: dict[str, Any], answers: list[str]) -> dict[str, Any]:
        """Render every body; the target body once per accepted answer (deduplicated, in order)."""
        out: dict[str, Any] = {"prompt": self._render("prompt", ctx)}
        for body in ("system", "prefill"):
            out[body] = self._render(body, ctx) if getattr(self.spec, body) is not None else None
        targets: list[str] = []
        for ans in answers:
            t = self._render("target", {**ctx, "answer": ans})
            if t and t not in targets:
                targets.append(t)
        out["answers"] = targets
        return out


def load_template(path: str | Path) -> Template:
    """Read, validate and compile one template file; errors name the file."""
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
        raw = yaml.safe_load(raw_bytes.decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise OrtBenchError(f"{path.name}: cannot read template ({exc})") from None
    if not isinstance(raw, dict):
        raise OrtBenchError(f"{path.name}: expected a mapping of metadata and bodies")
    try:
        spec = TemplateFile.model_validate(raw)
    except ValidationError as exc:
        raise OrtBenchError(f"{path.name}: {describe_validation_error(exc)}") from None
    for body in BODIES:
        src = getattr(spec, body)
        if src is None:
            continue
        try:
            ast = _ENV.parse(src)
        except jinja2.TemplateSyntaxError as exc:
            raise OrtBenchError(f"{path.name}: {body}: Jinja syntax error line {exc.lineno}: {exc.message}") from None
        except RecursionError:
            raise OrtBenchError(f"{path.name}: {body}: refused: nested too deeply") from None
        refused = refused_tags(ast)
        if refused:
            raise OrtBenchError(f"{path.name}: {body}: refused: a template may not use {{% {refused[0]} %}} "
                                "(one template is one file)")
    tpl = Template(spec, path, hashlib.sha256(raw_bytes).hexdigest())
    check_variables(tpl)
    return tpl


def check_variables(tpl: Template) -> None:
    """Every variable a body names must be a known context field declared in `needs`."""
    name = tpl.path.name
    for need in tpl.spec.needs:
        if need not in CONTEXT_FIELDS or need == "answer":
            raise OrtBenchError(f"{name}: {need}: unknown field in needs")
    for body, names in tpl.variables().items():
        for var in sorted(names):
            if var == "answer" and body == "target":
                continue
            if var not in CONTEXT_FIELDS or var == "answer":
                raise OrtBenchError(f"{name}: {var}: unknown variable in {body}")
            if var not in tpl.spec.needs:
                raise OrtBenchError(f"{name}: {var}: used in {body} but not declared in needs")
    if tpl.spec.choices == "option_texts" and "options" not in tpl.spec.needs:
        raise OrtBenchError(f"{name}: options: an option_texts template scores the options: declare them in needs")
    if tpl.spec.choices == "options" and not {"options", "answer_letter"} & set(tpl.spec.needs):
        raise OrtBenchError(f"{name}: options: a choice template must show its options")
    item = SCORERS[tpl.spec.scorer].item
    if item == "pair" and (not isinstance(tpl.spec.choices, tuple) or len(tpl.spec.choices) != 2
                           or "statement" not in tpl.spec.needs):
        raise OrtBenchError(f"{name}: choices: a label_pair template judges {{{{ statement }}}} with two labels "
                            "(choices: [TRUE_LABEL, FALSE_LABEL])")
    if item == "circular" and tpl.spec.choices not in ("options", "option_texts"):
        raise OrtBenchError(f"{name}: choices: a circular_choice template ranks the options "
                            "(choices: options or option_texts)")


def is_unreviewed(path: Path, root: Path) -> bool:
    """A file in `drafts/` or `proposals/` below `root`: a variant no person has accepted yet."""
    rel = path.relative_to(root).parts
    return len(rel) > 1 and rel[0] in UNREVIEWED_DIRS


def load_templates(root: str | Path | None = None) -> list[Template]:
    """All accepted templates under `root`, sorted by id; duplicate ids are an error. Unreviewed
    variants are left out, so they change no tier, probe or templates hash: the folders `drafts/` and
    `proposals/` are not read (a half-written draft cannot break a run), and a file still marked
    `status: draft|proposal` is skipped wherever it lies."""
    root = Path(root) if root is not None else templates_dir()
    if not root.is_dir():
        raise OrtBenchError(f"{root}: no such templates folder")
    out: dict[str, Template] = {}
    unreviewed = 0
    for path in sorted(root.rglob("*.yaml")):
        if is_unreviewed(path, root):
            continue
        tpl = load_template(path)
        if tpl.spec.status is not None:
            unreviewed += 1
            continue
        if tpl.id in out:
            raise OrtBenchError(f"{path.name}: duplicate template id {tpl.id!r} (also {out[tpl.id].path.name})")
        out[tpl.id] = tpl
    if not out:
        more = f" (only {unreviewed} marked draft or proposal: see `ort-bench templates check`)" if unreviewed else ""
        raise OrtBenchError(f"{root}: no template files (*.yaml) in this folder{more}")
    return [out[k] for k in sorted(out)]


def templates_hash(templates: list[Template]) -> str:
    h = hashlib.sha256()
    for t in templates:
        h.update(t.id.encode() + b"\0" + t.sha256.encode())
    return h.hexdigest()
