"""The probe: one rendered item a model answers. Probes are JSONL and load as `datasets.Dataset`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ort_bench.jsonl import read_jsonl, write_jsonl

PROBE_SCHEMA_VERSION = 2  # 2: items (item_id, variant, item_size); scorers from ort_bench.scorers

T = TypeVar("T")


def spread(items: list[T], *keys: Callable[[T], str], start: int = 0) -> list[T]:
    """Round-robin over the groups of `keys[0]` (sorted, rotated to begin at group `start`), each
    group itself spread over `keys[1:]` beginning at its own position; items keep their order inside
    the last grouping. So the first N items cover every form, inside a form every target, and the
    targets begin at different templates, so a handful of probes per target still covers every
    template variant (`--limit N`) instead of the first target's first template."""
    if not keys:
        return list(items)
    groups: dict[str, list[T]] = {}
    for it in items:
        groups.setdefault(keys[0](it), []).append(it)
    queues = [spread(groups[k], *keys[1:], start=i) for i, k in enumerate(sorted(groups))]
    if queues:
        queues = queues[start % len(queues):] + queues[:start % len(queues)]
    out: list[T] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


SPREAD_FIELDS = ("form", "target", "fact", "template_id")


def _spread_key(p: Probe, field: str) -> str:
    return str(getattr(p, field) or "")


def spread_items(probes: list[Probe]) -> list[list[Probe]]:
    """The items (groups of probes sharing `item_id`: a true/false pair, the rotations of an MCQ),
    round-robin over forms, inside a form over targets, inside a target over facts, inside a fact over
    templates: the first N items (`--limit N`) cover every form, target, fact and variant instead of
    the first target's first fact, and an item is never cut in half."""
    groups: dict[str, list[Probe]] = {}
    for p in probes:
        groups.setdefault(p.item_key, []).append(p)
    heads = spread([g[0] for g in groups.values()], *(lambda p, f=f: _spread_key(p, f) for f in SPREAD_FIELDS))
    return [groups[h.item_key] for h in heads]


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = PROBE_SCHEMA_VERSION
    id: str
    split: Literal["forget", "neighbour", "utility"]
    target: str | None
    form: str
    lang: str
    template_id: str
    fact_ids: tuple[str, ...] = ()
    prompt: str = Field(min_length=1)
    system: str | None = None
    prefill: str | None = None
    answers: tuple[str, ...] = Field(min_length=1)
    choices: tuple[str, ...] | None = None
    scorer: str
    hops: int = 1
    item_id: str | None = None  # the item this probe is one part of (None: the probe is the item)
    variant: str | None = None  # which part: "true" / "false" of a pair, "rot0".."rot3" of an MCQ
    item_size: int = 1  # probes in the item

    @field_validator("scorer")
    @classmethod
    def _known_scorer(cls, v: str) -> str:
        from ort_bench.scorers import SCORERS

        if v not in SCORERS:
            raise ValueError(f"unknown scorer {v!r} (known: {', '.join(SCORERS)})")
        return v

    @model_validator(mode="before")
    @classmethod
    def _known_schema(cls, data: Any) -> Any:
        if isinstance(data, dict):
            v = data.get("schema_version", PROBE_SCHEMA_VERSION)
            if isinstance(v, int) and v > PROBE_SCHEMA_VERSION:
                raise ValueError(
                    f"probe schema version {v} is newer than this ort-bench reads "
                    f"({PROBE_SCHEMA_VERSION}): upgrade ort-bench"
                )
        return data

    @model_validator(mode="after")
    def _gold_among_choices(self) -> Probe:
        if self.choices is not None and self.answers[0] not in self.choices:
            raise ValueError(f"gold answer {self.answers[0]!r} is not one of the choices")
        return self

    @property
    def fact(self) -> str | None:
        """The fact the probe asks (a two-hop probe's last fact id; its first is the bridge)."""
        return asked_fact(self.fact_ids)

    @property
    def item_key(self) -> str:
        return self.item_id or self.id

    @property
    def gold_index(self) -> int | None:
        return None if self.choices is None else self.choices.index(self.answers[0])


def asked_fact(fact_ids: tuple[str, ...] | list[str]) -> str | None:
    """The fact a probe (or its record, from its `fact_ids`) asks: the last id; None without facts."""
    return fact_ids[-1] if fact_ids else None


def probe_id(template_id: str, fact_ids: tuple[str, ...] | list[str], variant: str | None = None) -> str:
    """Stable id: the same template over the same facts (and the same part of an item) always gets
    the same id. Without a variant it is also the item's id."""
    key = f"{template_id}|{'+'.join(fact_ids)}" + (f"|{variant}" if variant else "")
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def read_probes(path: str | Path) -> list[Probe]:
    return read_jsonl(path, Probe)


def write_probes(path: str | Path, probes: list[Probe]) -> int:
    return write_jsonl(path, probes)


def probes_dataset(probes: list[Probe]):
    """The probes as a `datasets.Dataset` (imported lazily: it is slow to import)."""
    import datasets

    rows = [p.model_dump(mode="json") for p in probes]
    for r in rows:  # arrow wants one type per column
        r["choices"] = r["choices"] or []
        r["system"] = r["system"] or ""
        r["prefill"] = r["prefill"] or ""
        r["target"] = r["target"] or ""
        r["item_id"] = r["item_id"] or r["id"]
        r["variant"] = r["variant"] or ""
    return datasets.Dataset.from_list(rows)
