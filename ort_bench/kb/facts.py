"""The knowledge base: facts, relations (phrasings per language), targets and entity names.

Everything here is data loaded from `data/`; forms never hard-code a relation. Facts are JSONL
validated with pydantic, relations, targets and names are YAML read with `safe_load`.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ort_bench.errors import OrtBenchError
from ort_bench.jsonl import describe_validation_error, iter_jsonl_numbered
from ort_bench.paths import data_dir

LANGS: tuple[str, ...] = ("en", "fr", "de", "es", "zh")
SPLITS: tuple[str, ...] = ("forget", "neighbour", "utility")
FACT_FILES: tuple[str, ...] = (*SPLITS, "bridge")
TargetKind = Literal["person", "work", "place", "organisation", "concept"]
_ID = r"^[a-z0-9][a-z0-9_.\-]*$"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


RETAIN_HALVES: tuple[str, ...] = ("train", "eval")


def retain_half(fact_id: str) -> str:
    """Which half of the neighbour and utility facts a fact is in, by a hash of its id: "train"
    (what unlearning methods, attacks and ROCR's key corpus may see) or "eval" (what utility is
    scored on). Deterministic and independent of every other fact, so adding facts moves none."""
    return RETAIN_HALVES[int(hashlib.sha256(fact_id.encode("utf-8")).hexdigest()[:8], 16) % 2]


class Fact(BaseModel):
    """One (subject, relation, object) triple with the aliases its answers may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=_ID)
    subject: str = Field(min_length=1)
    relation: str = Field(min_length=1)
    object: str = Field(min_length=1)
    object_aliases: tuple[str, ...] = ()
    subject_aliases: tuple[str, ...] = ()
    target: str | None = None  # the forget target the fact belongs to (or whose neighbour it is)


def _check_placeholders(text: str) -> str:
    for name in _PLACEHOLDER.findall(text):
        if name not in ("subject", "object"):
            raise ValueError(f"unknown placeholder {{{name}}} (only {{subject}} and {{object}})")
    return text


class Phrasing(BaseModel):
    """How one relation is said in one language. `{subject}`/`{object}` are filled by plain
    substitution (never str.format, which would let data reach attributes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str
    cloze: str
    statement: str
    reverse_question: str | None = None
    paraphrases: tuple[str, ...] = ()
    noun_phrase: str | None = None  # "the capital of {subject}": builds two-hop questions

    @field_validator("question", "cloze", "statement", "reverse_question", "noun_phrase")
    @classmethod
    def _placeholders(cls, v: str | None) -> str | None:
        return None if v is None else _check_placeholders(v)

    @field_validator("paraphrases")
    @classmethod
    def _para_placeholders(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            _check_placeholders(p)
        return v

    @field_validator("cloze")
    @classmethod
    def _blank(cls, v: str) -> str:
        if "___" not in v:
            raise ValueError("a cloze phrasing needs a ___ blank")
        return v


class Relation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=_ID)
    description: str = ""
    phrasings: dict[str, Phrasing]

    @model_validator(mode="after")
    def _english(self) -> Relation:
        if "en" not in self.phrasings:
            raise ValueError("a relation needs English phrasings")
        return self


class Target(BaseModel):
    """A concept to forget, and the neighbours whose knowledge must survive."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=_ID)
    name: str
    kind: TargetKind
    aliases: tuple[str, ...] = ()
    neighbours: tuple[str, ...] = ()


def fill(text: str, subject: str, obj: str = "") -> str:
    return text.replace("{subject}", subject).replace("{object}", obj)


@dataclass
class KnowledgeBase:
    relations: dict[str, Relation]
    targets: dict[str, Target]
    facts: dict[str, list[Fact]]  # forget / neighbour / utility / bridge
    names: dict[str, dict[str, str]] = field(default_factory=dict)  # entity -> lang -> name
    root: Path | None = None
    content_hash: str = ""

    def name(self, entity: str, lang: str) -> str:
        """The entity's name in `lang`, or the English name when none is recorded."""
        return self.names.get(entity, {}).get(lang, entity) if lang != "en" else entity

    def all_facts(self) -> list[Fact]:
        return [f for part in FACT_FILES for f in self.facts.get(part, [])]

    @cached_property
    def objects_by_relation(self) -> dict[str, list[str]]:
        """Distinct objects seen per relation, sorted: the pool MCQ distractors come from."""
        pool: dict[str, set[str]] = defaultdict(set)
        for f in self.all_facts():
            pool[f.relation].add(f.object)
        return {rel: sorted(objs) for rel, objs in pool.items()}

    @cached_property
    def facts_by_relation(self) -> dict[str, list[Fact]]:
        out: dict[str, list[Fact]] = defaultdict(list)
        for f in self.all_facts():
            out[f.relation].append(f)
        return dict(out)

    @cached_property
    def bridges_into(self) -> dict[str, list[Fact]]:
        """Bridge facts indexed by their object: (X, r, S) lets a two-hop question reach S."""
        out: dict[str, list[Fact]] = defaultdict(list)
        for f in self.facts.get("bridge", []):
            out[f.object].append(f)
        return dict(out)


def _load_yaml(path: Path) -> object:
    if not path.is_file():
        raise OrtBenchError(f"{path}: no such file")
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise OrtBenchError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise OrtBenchError(f"{path}: not UTF-8 text (byte {byte:#04x} at offset {exc.start})") from None


def _load_relations(path: Path) -> dict[str, Relation]:
    raw = _load_yaml(path)
    if not isinstance(raw, dict):
        raise OrtBenchError(f"{path}: expected a mapping of relation id -> phrasings")
    out = {}
    for rid, body in raw.items():
        if not isinstance(body, dict):
            raise OrtBenchError(f"{path}: relation {rid}: expected a mapping")
        body = dict(body)
        desc = body.pop("description", "")
        try:
            out[rid] = Relation(id=rid, description=desc, phrasings=body)
        except ValidationError as exc:
            raise OrtBenchError(f"{path}: relation {rid}: {describe_validation_error(exc)}") from None
    return out


def _load_targets(path: Path) -> dict[str, Target]:
    raw = _load_yaml(path)
    if not isinstance(raw, list):
        raise OrtBenchError(f"{path}: expected a list of targets")
    out: dict[str, Target] = {}
    for i, item in enumerate(raw):
        try:
            t = Target.model_validate(item)
        except ValidationError as exc:
            raise OrtBenchError(f"{path}: target #{i + 1}: {describe_validation_error(exc)}") from None
        if t.id in out:
            raise OrtBenchError(f"{path}: target #{i + 1}: duplicate id {t.id!r}")
        out[t.id] = t
    return out


def _hash_files(root: Path, paths: list[Path]) -> str:
    """Content hash of the KB: file paths relative to the root and their bytes."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def _sections(root: Path) -> list[Path]:
    """The folders a knowledge base is made of: `root` itself and each sub-folder that holds KB files
    (the shipped KB keeps one folder per kind of target). Sorted, so loading is deterministic."""
    def is_section(d: Path) -> bool:
        return any((d / n).exists() for n in ("relations.yaml", "targets.yaml", "names.yaml", "facts"))

    subs = sorted(d for d in root.iterdir() if d.is_dir() and is_section(d)) if root.is_dir() else []
    return ([root] if is_section(root) else []) + subs


def _check_fact(f: Fact, part: str, where: str, target_names: dict[str, str]) -> None:
    """Benchmark v3's rules for one fact: every answer is something an answer can contain (not
    only stopwords, not shorter than a word: `answers.alias_problem`), and a retain fact (neighbour,
    utility) is about no forget target, since keeping "Macbeth -> William Shakespeare" while
    Shakespeare is forgotten tests nothing but contradiction."""
    from ort_bench.answers import alias_problem

    for field_name, names in (("object", (f.object, *f.object_aliases)), ("subject", (f.subject, *f.subject_aliases))):
        for name in names:
            problem = alias_problem(name, "en")
            if problem:
                raise OrtBenchError(f"{where}: {field_name}: answer {name!r} cannot be scored ({problem})")
    if part in ("neighbour", "utility"):
        named = (("subject", f.subject), ("object", f.object), *(("object", a) for a in f.object_aliases))
        for field_name, name in named:
            tid = target_names.get(name.casefold())
            if tid is not None:
                raise OrtBenchError(f"{where}: {field_name}: {name!r} is the forget target {tid!r}: a {part} fact "
                                    "about a forget target cannot be kept (it tests nothing but contradiction)")


def load_kb(root: str | Path | None = None) -> KnowledgeBase:
    """Load and cross-check the knowledge base under `root` (default: the shipped `data/`).

    `root` and each of its sub-folders may hold `relations.yaml`, `targets.yaml`, `names.yaml` and
    `facts/{forget,neighbour,utility,bridge}.jsonl`; all are merged, and an id defined twice is an error."""
    root = Path(root) if root is not None else data_dir()
    sections = _sections(root)
    if not sections:
        raise OrtBenchError(f"{root}: no knowledge base here (relations.yaml, targets.yaml, facts/)")
    relations: dict[str, Relation] = {}
    targets: dict[str, Target] = {}
    names: dict[str, dict[str, str]] = {}
    files: list[Path] = []
    for sec in sections:
        for fname, loader, into in (("relations.yaml", _load_relations, relations),
                                    ("targets.yaml", _load_targets, targets)):
            path = sec / fname
            if path.exists():
                files.append(path)
                for key, value in loader(path).items():
                    if key in into:
                        raise OrtBenchError(f"{path}: {key}: defined twice in the knowledge base")
                    into[key] = value
        path = sec / "names.yaml"
        if path.exists():
            files.append(path)
            raw = _load_yaml(path) or {}
            if not isinstance(raw, dict):
                raise OrtBenchError(f"{path}: expected a mapping of entity -> lang -> name")
            for k, v in raw.items():
                if not isinstance(v, dict):
                    raise OrtBenchError(f"{path}: {k}: expected a mapping of lang -> name")
                names.setdefault(str(k), {}).update({str(lk): str(lv) for lk, lv in v.items()})

    facts: dict[str, list[Fact]] = {part: [] for part in FACT_FILES}
    seen: dict[str, str] = {}
    target_names = {n.casefold(): t.id for t in targets.values() for n in (t.name, *t.aliases)}
    for sec in sections:
        for part in FACT_FILES:
            path = sec / "facts" / f"{part}.jsonl"
            if not path.exists():
                continue
            files.append(path)
            for lineno, f in iter_jsonl_numbered(path, Fact):
                where = f"{path}:{lineno}"
                if f.id in seen:
                    raise OrtBenchError(f"{where}: id: duplicate fact id {f.id!r} (also in {seen[f.id]})")
                seen[f.id] = str(path)
                if f.relation not in relations:
                    raise OrtBenchError(f"{where}: relation: unknown relation {f.relation!r}")
                if part in ("forget", "neighbour") and (f.target is None or f.target not in targets):
                    raise OrtBenchError(f"{where}: target: unknown target {f.target!r}")
                if part == "neighbour" and f.subject not in targets[f.target].neighbours:
                    raise OrtBenchError(f"{where}: subject: {f.subject!r} is not a neighbour of target {f.target!r}")
                _check_fact(f, part, where, target_names)
                facts[part].append(f)
    if not facts["forget"]:
        raise OrtBenchError(f"{root}: the knowledge base has no forget facts (facts/forget.jsonl)")
    return KnowledgeBase(relations, targets, facts, names, root, _hash_files(root, files))
