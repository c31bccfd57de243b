"""The per-probe record (`Record`) and its store: append-only JSONL, keyed so that a killed run
resumes and one model never reuses another's answers.

A record's key hashes the model fingerprint, the backend, the scoring parameters and the probe's
content (not just its id: a template edited under the same id must be answered again). Each record
carries a hash of its own content, so an edited record is detected.

`Record` declares every field a record may hold. Evaluate builds records through it, submit
validates every submitted line with it, and the metrics read the DataFrame `records_frame` makes of
them. Files stay plain JSON lines and records travel as dicts (`Record.to_dict`) where a dict is
enough; the seal is always the hash of the JSON as written.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, PlainValidator
from pydantic_core import PydanticCustomError

from ort_bench.errors import OrtBenchError
from ort_bench.provenance import sha256_json

if TYPE_CHECKING:
    import pandas as pd

RECORD_FIELDS_HASHED_OUT = ("record_sha256",)


def _number(value: Any) -> float | int:
    """A score kept exactly as given (int or float): converting 1 to 1.0 would change the JSON that
    a seal hashes."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("number", "Input should be a number")
    return value


Number = Annotated[float, PlainValidator(_number)]


class Record(BaseModel):
    """One probe answered by one model: what keys it, the probe's fields repeated (so a record is
    read without the probes), the prompt as the model saw it, its answer and every score.

    Fields with a default are left out of the JSON when they do not apply: item fields (v1 records,
    probes that are items alone), per-option log-likelihoods (free-answer probes), neutral-prompt
    likelihoods and calibrated scores (only the calibrated choice scorer). `to_dict` keeps exactly
    the fields that were given, so a record read and written again seals to the same hash."""

    model_config = ConfigDict(strict=True, extra="forbid")

    # who answered what: `key` hashes fingerprint, backend, params_hash and probe_sha256 (`record_key`)
    key: str
    role: Literal["model", "reference"]
    model_fingerprint: str
    backend: str
    params_hash: str
    probe_id: str
    probe_sha256: str
    # the probe (board.rederive checks these against the probe ort-bench renders)
    split: str
    target: str | None
    form: str
    lang: str
    template_id: str
    fact_ids: list[str]
    scorer: str
    answers: list[str]
    item_id: str | None = None
    variant: str | None = None
    item_size: int | None = None
    # the answer and its scores (`primary`: the probe's decision under its scorer)
    prompt_text: str
    output: str
    rouge_l_recall: Number | None
    choice_acc: Number | None
    prob: Number | None  # None only from an engine without log-probabilities (`Backend.no_likelihoods`)
    choice_logprobs: list[Number] | None = None
    choice_logprobs_neutral: list[Number] | None = None
    choice_scores: list[Number] | None = None
    # benchmark v3 free answers: the content-word match (`ort_bench.answers`), its graded recall, and
    # the generation length the probe's form was given; the tokens the answer took (EOS not counted)
    answer_match: Number | None = None
    content_recall: Number | None = None
    max_new_tokens: int | None = None
    new_tokens: int | None = None
    primary: Number  # declared last but one: fields are written in this order
    record_sha256: str | None = None  # `seal`: the hash of every other field

    def to_dict(self) -> dict[str, Any]:
        """The record as stored: the fields it was given, values as given."""
        return self.model_dump(exclude_unset=True)


def _as_dict(record: Record | Mapping[str, Any]) -> dict[str, Any]:
    return record.to_dict() if isinstance(record, Record) else dict(record)


def records_frame(records: Iterable[Record | Mapping[str, Any]]) -> pd.DataFrame:
    """Records as the metrics read them: a row per record, a column per `Record` field present."""
    import pandas as pd

    return pd.DataFrame([_as_dict(r) for r in records])


def record_key(fingerprint: str, backend: str, params_hash: str, probe_hash: str) -> str:
    return hashlib.sha256(f"{fingerprint}|{backend}|{params_hash}|{probe_hash}".encode()).hexdigest()[:32]


def _body(data: Mapping[str, Any]) -> dict[str, Any]:
    """What a seal hashes: every field but the seal itself."""
    return {k: v for k, v in data.items() if k not in RECORD_FIELDS_HASHED_OUT}


def seal(record: Record | Mapping[str, Any]) -> dict[str, Any]:
    """Add `record_sha256`, the hash of every other field."""
    body = _body(_as_dict(record))
    return {**body, "record_sha256": sha256_json(body)}


def check_seal(record: Record | Mapping[str, Any]) -> bool:
    """Does the record still hash to its `record_sha256` (not edited since it was sealed)?"""
    data = _as_dict(record)
    return data.get("record_sha256") == sha256_json(_body(data))


def load_records(path: Path, repair: bool = True, check: bool = True) -> dict[str, dict[str, Any]]:
    """Records by key, as written (dicts; `Record.model_validate` one where typed fields are needed:
    the seal already guards a run's own records). A torn last line (a run killed while writing) is
    dropped with a warning, and cut from the file only with `repair` (a run's own file; another
    run's, lent by `--reuse`, is only read). A bad line anywhere else is an error naming the line;
    with `check`, so is a record whose hash does not match its content (edited by hand: a resumed
    run must not trust it)."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OrtBenchError(f"{path}: cannot read records ({exc})") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "key" not in rec:
                raise ValueError("not a record")
        except ValueError:
            if lineno == len(lines):
                print(f"warning: {path}:{lineno}: dropping a torn last line (run killed while writing)",
                      file=sys.stderr)
                if repair:
                    _truncate_last_line(path)
                break
            raise OrtBenchError(f"{path}:{lineno}: not a valid record line") from None
        if check and not check_seal(rec):
            raise OrtBenchError(f"{path}:{lineno}: record edited (record_sha256 does not match its content): "
                                "remove the line to score that probe again")
        out[rec["key"]] = rec
    return out


def put_in_order(path: Path, keys: list[str]) -> None:
    """Rewrite `path` so that the records of `keys` come first, in that order (a run's probe order,
    which submit checks against `hashes.probes_sha256`), followed by every other record it holds
    (other selections resumed in the same folder: nothing is dropped). Records arrive as batches
    finish and as reused runs lend them, so a finished run's file is put in order once; the
    rewrite goes to a temporary file and replaces the old one atomically."""
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    by_key = {json.loads(ln)["key"]: ln for ln in lines}
    first = list(dict.fromkeys(k for k in keys if k in by_key))
    placed = set(first)
    ordered = [by_key[k] for k in first] + [ln for k, ln in by_key.items() if k not in placed]
    if ordered == lines:
        return
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write("".join(ln + "\n" for ln in ordered))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _truncate_last_line(path: Path) -> None:
    data = path.read_bytes()
    cut = data.rstrip(b"\n").rfind(b"\n")
    path.write_bytes(data[: cut + 1] if cut >= 0 else b"")


class RunLock:
    """One writer per run folder: an exclusive, non-blocking `flock` on `DIR/.lock`, released when
    the process ends (even killed). A second `evaluate` on the same folder is refused with the PID of
    the one that holds it, instead of both appending to (and one replacing) the same records file."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self._fh: Any = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise OrtBenchError(f"{self.path.parent}: another run is writing to this folder (PID {holder}); wait "
                                "for it or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class RecordWriter:
    """Appends sealed records and makes them durable batch by batch."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: TextIO = path.open("a", encoding="utf-8", newline="\n")

    def write(self, records: Iterable[Record | Mapping[str, Any]]) -> None:
        for rec in records:
            self._fh.write(json.dumps(seal(rec), ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
