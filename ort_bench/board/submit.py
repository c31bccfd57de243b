"""Leaderboard submissions that nobody has to take on trust.

A submission is an `ort-bench evaluate` run folder (`results.json` + `records.jsonl`, scored with a
reference) plus the submitter's metadata. `submit` checks it and copies it into
`leaderboards/<benchmark-version>/submissions/<name>/`:

- every record still carries its own hash (`record_sha256`), has the fields of a `Record` (a bad
  one is named by line and field) and a key that matches them;
- the records belong to the models `results.json` names (fingerprints), with its scoring
  parameters, and cover exactly the probes it says were scored, in order;
- the run was scored on a benchmark version open for entries, with a reference, on every form of it;
- the records agree with what this ort-bench recomputes itself (`ort_bench.board.rederive`): the probes of
  the recorded selection, the scores the stored outputs and likelihoods give, the parameters' hash;
- every number of `results.json` is recomputed from the records with the version's metrics (the
  submitted aggregates are never trusted) and must agree within `TOLERANCE`.

Each refusal is one `OrtBenchError` line. `verify_run` is also what `ort_bench.board.leaderboard` runs on
every stored submission before it builds the tables.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator

from ort_bench.benchmark import BENCHMARK_VERSION, VERSIONS, get_version
from ort_bench.board.rederive import TOLERANCE, checkpoints_of
from ort_bench.errors import OrtBenchError
from ort_bench.jsonl import iter_objects, validate_line
from ort_bench.provenance import file_sha256, sha256_json
from ort_bench.scoring.per_target import PER_TARGET_CARDS
from ort_bench.scoring.records import Record, check_seal, record_key
from ort_bench.scoring.results import Results, read_results
from ort_bench.scoring.shards import probes_for_target

SUBMISSION_SCHEMA_VERSION = 1
ROLES = ("model", "reference")
RESULTS_FILE, RECORDS_FILE, SUBMISSION_FILE = "results.json", "records.jsonl", "submission.json"
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
# Fields of results.json that are not derived from the records (when the run was made).
UNCHECKED_RESULT_FIELDS = ("created_at",)
HEADLINE_FIELDS = ("worst_form_efficacy", "worst_form", "form_gap", "train_form_gap", "utility", "ort_score",
                   "fluency", "forms")


def required_forms(benchmark_version: str = BENCHMARK_VERSION) -> tuple[str, ...]:
    """The forms a submission must cover (`ort_bench.benchmark`)."""
    return get_version(benchmark_version).required_forms


class SubmissionMeta(BaseModel):
    """What the submitter says about the entry; everything else comes from the run."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(description="folder name and leaderboard id: a slug")
    method: str | None = Field(default=None, max_length=120)
    model_name: str | None = Field(default=None, max_length=200)
    link: HttpUrl | None = Field(default=None, description="paper or code, http(s)")
    date: Date

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.match(NAME_PATTERN, v):
            raise ValueError("must be a slug of 1-64 lowercase letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
        return v

    @field_validator("method", "model_name")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        if v is not None and any(c in v for c in "\r\n\t\0"):
            raise ValueError("must be one line")
        return v or None


class SubmissionFile(SubmissionMeta):
    """`submission.json`: the metadata plus what ties it to the run files."""

    schema_version: int = SUBMISSION_SCHEMA_VERSION
    benchmark_version: str
    model_fingerprint: str
    reference_fingerprint: str
    files: dict[str, str]  # file name -> sha256 of its bytes


def _pydantic_line(what: str, err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "(all)"
    msg = first.get("msg", "invalid").removeprefix("Value error, ")
    value = first.get("input")
    shown = f" {value!r}" if isinstance(value, str) and len(value) <= 80 else ""
    return f"{what}: {field}{shown}: {msg}"


def make_meta(name: str, method: str | None = None, model_name: str | None = None, link: str | None = None,
              date: str | Date | None = None) -> SubmissionMeta:
    if date is None:
        date = datetime.now(timezone.utc).date()
    try:
        return SubmissionMeta(name=name, method=method, model_name=model_name, link=link, date=date)
    except ValidationError as exc:
        raise OrtBenchError(_pydantic_line("submission", exc)) from None


@dataclass
class VerifiedRun:
    """A run whose every number was recomputed from its records and agreed."""

    run_dir: Path
    results: Results
    recomputed: dict[str, Any]  # results.json as the records give it
    n_records: dict[str, int]
    probes: list[Any] | None = None  # the selection rebuilt from this repository (open versions only)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # checked records by role, file order


def _read_record_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, raw record) of a submitted records file, as written (the seal hashes it so)."""
    if not path.is_file():
        raise OrtBenchError(f"{path}: no such records file (a run folder has results.json and records.jsonl)")
    return iter_objects(path, name=path.name, not_json="not a JSON record (a torn or edited line)",
                        not_object="not a JSON record")


def _short(h: Any) -> str:
    return f"{h}"[:12] if h else repr(h)


def _check_records(path: Path, res: Results) -> dict[str, list[dict[str, Any]]]:
    """Seals, fields (`Record`), keys, fingerprints, parameters and roles of every record; the records
    by role, in file order, as written."""
    fingerprints = {"model": res.model.fingerprint, "reference": res.reference.fingerprint if res.reference else None}
    per_target = checkpoints_of(res)
    backend = res.config.get("backend")
    by_role: dict[str, list[dict[str, Any]]] = {r: [] for r in ROLES}
    seen: dict[str, int] = {}
    for lineno, raw in _read_record_lines(path):
        where = f"{path.name}:{lineno}"
        if not check_seal(raw):
            raise OrtBenchError(f"{where}: record edited without its hash (record_sha256 does not match its content)")
        if raw.get("role") not in ROLES:
            raise OrtBenchError(f"{where}: unknown role {raw.get('role')!r} (expected model or reference)")
        rec = validate_line(Record, raw, where)
        role, fp = rec.role, rec.model_fingerprint
        if per_target and role == "model":
            if fp not in per_target.values():
                raise OrtBenchError(f"{where}: model_fingerprint {_short(fp)} of this model record is not one of the "
                                    "checkpoints results.json names (one checkpoint per target)")
        elif fp != fingerprints[role]:
            raise OrtBenchError(f"{where}: model_fingerprint {_short(fp)} of this {role} record does not match the "
                                f"{role} fingerprint {_short(fingerprints[role])} in results.json")
        if rec.params_hash != res.params_hash:
            raise OrtBenchError(f"{where}: params_hash {rec.params_hash!r} does not match results.json's "
                                f"{res.params_hash!r}")
        if rec.backend != backend:
            raise OrtBenchError(f"{where}: backend {rec.backend!r} does not match results.json's {backend!r}")
        key = record_key(fp, rec.backend, rec.params_hash, rec.probe_sha256)
        if rec.key != key:
            raise OrtBenchError(f"{where}: key does not match the record's fingerprint, backend, params and probe")
        if rec.prob is None:  # only an engine without log-probabilities leaves it out, and such a run is no entry
            raise OrtBenchError(f"{where}: no prob (ORT's Prob): a leaderboard entry is scored with log-probabilities")
        if key in seen:
            raise OrtBenchError(f"{where}: duplicate record (same key as line {seen[key]})")
        seen[key] = lineno
        by_role[role].append(raw)
    if res.reference and res.reference.fingerprint == res.model.fingerprint and not by_role["reference"]:
        by_role["reference"] = list(by_role["model"])  # a model scored against itself: one set of answers
    return by_role


def _check_coverage(res: Results, by_role: dict[str, list[dict[str, Any]]]) -> None:
    model, ref = by_role["model"], by_role["reference"]
    if not model:
        raise OrtBenchError(f"{RECORDS_FILE}: no records of the model")
    if not ref:
        raise OrtBenchError(f"{RECORDS_FILE}: no reference records: a leaderboard entry needs the run scored "
                            "with --reference")
    per_target = checkpoints_of(res)
    role, ordered = ("reference", ref) if per_target else ("model", model)  # the records of the whole selection
    if len(ordered) != res.n_probes:
        raise OrtBenchError(f"{RECORDS_FILE}: {len(ordered)} {role} records but results.json says {res.n_probes} "
                            "probes were scored (records of another run in the folder?)")
    probes_sha = res.hashes.get("probes_sha256")
    if probes_sha is not None and sha256_json([r.get("probe_id") for r in ordered]) != probes_sha:
        # evaluate leaves a finished run's records in probe order (records.put_in_order)
        raise OrtBenchError(f"{RECORDS_FILE}: the {role} records are not the probes results.json lists, in its "
                            "order (hashes.probes_sha256 does not match)")
    if per_target:
        _check_per_target_coverage(per_target, model, ref)
    elif sorted(r["probe_sha256"] for r in ref) != sorted(r["probe_sha256"] for r in model):
        raise OrtBenchError(f"{RECORDS_FILE}: the reference records do not cover the same probes as the model records")
    need = required_forms(res.benchmark_version)
    have = {r.get("form") for r in model if r.get("split") == "forget"}
    missing = [f for f in need if f not in have]
    if missing:
        raise OrtBenchError(f"missing forms: {', '.join(missing)} (benchmark {res.benchmark_version} needs every "
                            f"form on the forget split: {', '.join(need)})")


def _check_per_target_coverage(per_target: dict[str, str], model: list[dict[str, Any]],
                               ref: list[dict[str, Any]]) -> None:
    """Each target's checkpoint answered its target's forget probes and every neighbour and utility probe, in
    the reference's (selection) order, and every forget target has a checkpoint."""
    without = sorted({r.get("target") for r in ref if r.get("split") == "forget"} - set(per_target), key=str)
    if without:
        raise OrtBenchError(f"{RECORDS_FILE}: forget target {without[0]!r} has no checkpoint in results.json's "
                            "model.checkpoints")
    for target, fp in per_target.items():
        mine = [r["probe_sha256"] for r in model if r["model_fingerprint"] == fp]
        want = [r["probe_sha256"] for r in ref if r.get("split") != "forget" or r.get("target") == target]
        if mine != want:
            raise OrtBenchError(f"{RECORDS_FILE}: the records of {target!r}'s checkpoint are not its target's forget "
                                "probes and every neighbour and utility probe, in order")


def _diff(submitted: Any, recomputed: Any, path: str) -> str | None:
    """The first place where the two JSON values differ (numbers within TOLERANCE), or None."""
    num = (int, float)
    if isinstance(submitted, num) and isinstance(recomputed, num) and not isinstance(submitted, bool) \
            and not isinstance(recomputed, bool):
        a, b = float(submitted), float(recomputed)
        if a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= TOLERANCE):
            return None
        return f"{path} is {submitted!r} but the records give {recomputed!r}"
    if isinstance(submitted, dict) and isinstance(recomputed, dict):
        keys = sorted(set(submitted) | set(recomputed), key=str)
        if not path:  # the headline numbers first: the clearest line to show
            keys = [k for k in HEADLINE_FIELDS if k in keys] + [k for k in keys if k not in HEADLINE_FIELDS]
        for k in keys:
            if k not in submitted or k not in recomputed:
                return f"{path}.{k} is {'missing' if k not in submitted else 'not given by the records'}"
            d = _diff(submitted[k], recomputed[k], f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    if isinstance(submitted, list) and isinstance(recomputed, list):
        if len(submitted) != len(recomputed):
            return f"{path} has {len(submitted)} entries but the records give {len(recomputed)}"
        for i, (a, b) in enumerate(zip(submitted, recomputed, strict=True)):
            d = _diff(a, b, f"{path}[{i}]")
            if d:
                return d
        return None
    if submitted != recomputed:
        return f"{path} is {submitted!r} but the records give {recomputed!r}"
    return None


def recompute_results(res: Results, by_role: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """results.json as `ort-bench evaluate` would write it from these records (`results_from_records`)."""
    from ort_bench.scoring.results import recompute_results as recompute

    try:
        return recompute(res, by_role["model"], by_role["reference"])
    except ValueError as exc:
        raise OrtBenchError(f"{RECORDS_FILE}: cannot score the records ({exc})") from None


def _card_files(run_dir: Path) -> list[str]:
    """The model card evaluate copied into the run (benchmark v3 entries carry it)."""
    from ort_bench.board.rederive import MODEL_CARD_FILES

    return [c for c in (*MODEL_CARD_FILES, PER_TARGET_CARDS) if (Path(run_dir) / c).is_file()]


def verify_run(run_dir: str | Path) -> VerifiedRun:
    """Check a run folder as a leaderboard entry; raise OrtBenchError (one line) on the first problem."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise OrtBenchError(f"{run_dir}: no such run folder")
    res = read_results(run_dir / RESULTS_FILE)
    if res.benchmark_version not in VERSIONS:
        raise OrtBenchError(f"results.json: benchmark version {res.benchmark_version!r} is not one this ort-bench "
                            f"knows ({', '.join(VERSIONS)})")
    if res.reference is None:
        raise OrtBenchError("results.json: no reference model: a leaderboard entry needs the run scored "
                            "with --reference (the model before unlearning)")
    shard = res.selection.get("shard")
    if shard:
        raise OrtBenchError(f"results.json: shard {shard.get('index')}/{shard.get('count')} of a run: join the "
                            "shards with `ort-bench merge` and submit the merged folder")
    by_role = _check_records(run_dir / RECORDS_FILE, res)
    _check_coverage(res, by_role)
    probes = None
    if get_version(res.benchmark_version).open_for_submissions:  # a closed version's probes are not rendered now
        from ort_bench.board import rederive

        rederive.check_params(res)
        pinned = get_version(res.benchmark_version).pinned_submissions
        if pinned:
            rederive.check_pinned_selection(res)
        probes = rederive.rebuild_probes(res)
        rederive.check_against_probes(probes, by_role["reference"], "reference")
        per_target = checkpoints_of(res)
        for target, fp in (per_target or {None: None}).items():  # one checkpoint per target: each on its own
            mine = by_role["model"] if target is None else [r for r in by_role["model"]
                                                            if r["model_fingerprint"] == fp]
            rederive.check_against_probes(probes if target is None else probes_for_target(probes, target), mine,
                                          "model" if target is None else f"model ({target})")
        rederive.check_two_models(res, by_role["model"], by_role["reference"])
        if pinned:
            rederive.check_card(res, run_dir, probes)
    recomputed = recompute_results(res, by_role)
    submitted = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    for k in UNCHECKED_RESULT_FIELDS:
        submitted.pop(k, None)
        recomputed.pop(k, None)
    d = _diff(submitted, recomputed, "")
    if d:
        raise OrtBenchError(f"results.json: {d} (scores are recomputed from the records, never taken as submitted)")
    return VerifiedRun(run_dir, res, recomputed, {r: len(v) for r, v in by_role.items()}, probes, by_role)


def submissions_dir(root: str | Path | None = None, benchmark_version: str = BENCHMARK_VERSION) -> Path:
    from ort_bench.paths import leaderboards_dir

    return Path(root if root is not None else leaderboards_dir()) / benchmark_version / "submissions"


def read_submission_file(folder: Path) -> SubmissionFile:
    path = folder / SUBMISSION_FILE
    if not path.is_file():
        raise OrtBenchError(f"{path}: no such file")
    try:
        return SubmissionFile.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise OrtBenchError(_pydantic_line(str(path), exc)) from None


def verify_submission(folder: str | Path) -> tuple[SubmissionFile, VerifiedRun]:
    """A stored submission: its submission.json, its files' hashes, and the run itself."""
    folder = Path(folder)
    sub = read_submission_file(folder)
    if sub.name != folder.name:
        raise OrtBenchError(f"{folder}: submission.json names {sub.name!r}, not the folder's name")
    for fname in (RESULTS_FILE, RECORDS_FILE, *(c for c in sub.files if c not in (RESULTS_FILE, RECORDS_FILE))):
        if not (folder / fname).is_file():
            raise OrtBenchError(f"{folder / fname}: no such file")
        if file_sha256(folder / fname) != sub.files.get(fname):
            raise OrtBenchError(f"{folder / fname}: changed after submission (sha256 differs from submission.json)")
    try:
        run = verify_run(folder)
    except OrtBenchError as exc:
        raise OrtBenchError(f"submission {sub.name}: {exc}") from None
    if run.results.benchmark_version != sub.benchmark_version or folder.parent.parent.name != sub.benchmark_version:
        raise OrtBenchError(f"{folder}: benchmark version of submission.json, results.json and folder disagree")
    if (run.results.model.fingerprint, run.results.reference.fingerprint) != (sub.model_fingerprint,
                                                                              sub.reference_fingerprint):
        raise OrtBenchError(f"{folder}: fingerprints in submission.json do not match results.json")
    return sub, run


def submit(run_dir: str | Path, name: str, method: str | None = None, link: str | None = None,
           date: str | Date | None = None, dry_run: bool = False, root: str | Path | None = None,
           model_name: str | None = None) -> dict[str, Any]:
    """Check `run_dir` as a leaderboard entry and (unless `dry_run`) copy it into
    `<root>/<benchmark-version>/submissions/<name>/`. Returns a summary of the entry."""
    meta = make_meta(name, method, model_name, link, date)
    run_dir = Path(run_dir)
    run = verify_run(run_dir)
    res = run.results
    if not get_version(res.benchmark_version).open_for_submissions:
        raise OrtBenchError(f"results.json: benchmark {res.benchmark_version} is closed to new entries (its "
                            f"leaderboard is read-only); score the model again for {BENCHMARK_VERSION}")
    subs = submissions_dir(root, res.benchmark_version)
    dest = subs / meta.name
    if dest.exists():
        raise OrtBenchError(f"a submission named {meta.name!r} already exists in {subs} (pick another --name)")
    records_sha = file_sha256(run_dir / RECORDS_FILE)
    if subs.is_dir():
        for other in sorted(p for p in subs.iterdir() if p.is_dir()):
            other_sha = file_sha256(other / RECORDS_FILE) if (other / RECORDS_FILE).is_file() else None
            if other_sha == records_sha:
                raise OrtBenchError(f"these records are already submitted as {other.name!r}")
    sub = SubmissionFile(
        **meta.model_dump(), benchmark_version=res.benchmark_version, model_fingerprint=res.model.fingerprint,
        reference_fingerprint=res.reference.fingerprint,
        files={RESULTS_FILE: file_sha256(run_dir / RESULTS_FILE), RECORDS_FILE: records_sha,
               **{c: file_sha256(run_dir / c) for c in _card_files(run_dir)}},
    )
    summary: dict[str, Any] = {
        "name": meta.name, "benchmark_version": res.benchmark_version, "dry_run": dry_run,
        "dest": str(dest), "model": res.model.spec, "reference": res.reference.spec,
        "records": run.n_records,
        **{k: run.recomputed.get(k) for k in ("worst_form_efficacy", "worst_form", "form_gap", "utility",
                                              "ort_score")},
    }
    if dry_run:
        return summary
    subs.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{meta.name}.", dir=subs))
    try:
        for fname in (RESULTS_FILE, RECORDS_FILE, *_card_files(run_dir)):
            shutil.copyfile(run_dir / fname, tmp / fname)
        (tmp / SUBMISSION_FILE).write_text(
            json.dumps(sub.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
