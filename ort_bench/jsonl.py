"""JSONL reading and writing with errors that name the file, the line and the field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ort_bench.errors import OrtBenchError

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(err: ValidationError) -> str:
    """The first problem of a pydantic error as 'field: message'."""
    first = err.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "(record)"
    return f"{field}: {first.get('msg', 'invalid')}"


def iter_jsonl(path: str | Path, model: type[M]) -> Iterator[M]:
    """Yield validated records; a bad line raises OrtBenchError naming file:line and the field."""
    for _, record in iter_jsonl_numbered(path, model):
        yield record


def iter_jsonl_numbered(path: str | Path, model: type[M]) -> Iterator[tuple[int, M]]:
    """Like `iter_jsonl`, with each record's line number (for errors found after parsing)."""
    path = Path(path)
    if not path.is_file():
        raise OrtBenchError(f"{path}: no such file")
    with path.open("rb") as fh:
        for lineno, raw_line in enumerate(fh, start=1):
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise OrtBenchError(f"{path}:{lineno}: not UTF-8 text (byte {raw_line[exc.start]:#04x} at column "
                                    f"{exc.start + 1})") from None
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise OrtBenchError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(raw, dict):
                raise OrtBenchError(f"{path}:{lineno}: expected a JSON object")
            try:
                yield lineno, model.model_validate(raw)
            except ValidationError as exc:
                raise OrtBenchError(f"{path}:{lineno}: {describe_validation_error(exc)}") from None


def read_jsonl(path: str | Path, model: type[M]) -> list[M]:
    return list(iter_jsonl(path, model))


def dumps(record: BaseModel | dict) -> str:
    """One canonical JSON line: the same record always gives the same bytes."""
    data = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def write_jsonl(path: str | Path, records: Iterable[BaseModel | dict]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(dumps(rec) + "\n")
            n += 1
    return n
