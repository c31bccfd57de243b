"""JSONL reading and writing with errors that name the file, the line and the field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

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
    for lineno, raw in iter_objects(path):
        yield lineno, validate_line(model, raw, f"{path}:{lineno}")


def iter_objects(path: str | Path, *, name: str | None = None, not_json: str = "not valid JSON ({msg})",
                 not_object: str = "expected a JSON object") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) for every non-blank line, not yet validated: for readers that need
    the raw object (a record's seal hashes it as written) or build something other than a model. A
    line that is not UTF-8, not JSON or not an object raises OrtBenchError naming `name` (default: the
    path) and the line; `not_json` (may use `{msg}`) and `not_object` are the reader's own wording."""
    path = Path(path)
    name = str(path) if name is None else name
    if not path.is_file():
        raise OrtBenchError(f"{path}: no such file")
    with path.open("rb") as fh:
        for lineno, raw_line in enumerate(fh, start=1):
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise OrtBenchError(f"{name}:{lineno}: not UTF-8 text (byte {raw_line[exc.start]:#04x} at column "
                                    f"{exc.start + 1})") from None
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise OrtBenchError(f"{name}:{lineno}: {not_json.format(msg=exc.msg)}") from None
            if not isinstance(raw, dict):
                raise OrtBenchError(f"{name}:{lineno}: {not_object}")
            yield lineno, raw


def validate_line(model: type[M], raw: Any, where: str) -> M:
    """`raw` as `model`; an invalid one raises OrtBenchError '`where`: field: message' (one line)."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise OrtBenchError(f"{where}: {describe_validation_error(exc)}") from None


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
