"""Sweeps: many checkpoints, each scored in N shards as Ray tasks, merged into one run per checkpoint.

A sweep is `evaluate --shard I/N` for every (checkpoint, shard) pair, run as Ray tasks with the CPUs and
GPUs each asks for, on a local Ray started for the purpose (and shut down after) or on an existing
cluster (`--ray ADDRESS`). Each task loads its model once and scores every form of its shard. When the
shards of a checkpoint are all done, the driver joins them with `merge_shards` into `OUT/<name>/`: the
run one process would have written, which `submit` takes.

The reference is scored once per shard, not once per checkpoint: a reference job per (reference, shard)
scores it into `OUT/_shards/_reference-.../shard-I-of-N/`, and each checkpoint's job of that shard
waits for it (a Ray dependency) and copies its records (`evaluate --reuse`), so the reference model is
not even loaded there. A checkpoint's shard folder is `OUT/_shards/<name>/shard-I-of-N/`.

Resume: a job whose folder holds the done-marker of the same job (model and reference, their files'
sizes and times, selection, options, shard) is skipped; any other job runs again, and evaluate's own
resume keeps the records a killed run had written. So a sweep that was killed, or had a failed job, is
finished by running it again. A failed job is one line naming the checkpoint and shard; the other jobs
go on, and the sweep ends with an error (the CLI exits 1). No hangs: a job whose worker dies is an
error (Ray retries it `retries` times, default 0), `job_timeout_s` ends a job that runs too long, and if
no job starts within `start_timeout_s` (a cluster without the resources a job asks for) the sweep stops;
a task larger than the local Ray is refused before anything runs, and a cluster address where nothing
answers in seconds (Ray itself would retry it for minutes). Interrupted (Ctrl-C), the sweep shuts Ray down,
which ends its tasks, also on a cluster. `tensor_parallel_size > 1` is refused: an engine that needs a
placement group of its own inside a Ray task is where lm-evaluation-harness's Ray runs hang.
On a cluster, OUT and the checkpoints must be on a filesystem every node sees (paths are made absolute);
a cluster with token authentication needs `RAY_AUTH_MODE=token` and its token on the driver.

An example config is `EXAMPLE` below (`ort-bench sweep --help` prints it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ort_bench.errors import OrtBenchError, one_line
from ort_bench.jsonl import describe_validation_error, validate_line
from ort_bench.kb.facts import SPLITS
from ort_bench.provenance import sha256_json
from ort_bench.scoring.eval_config import EvalConfig

EXAMPLE = """\
# ort-bench sweep sweep.yaml   (relative paths: from the current directory)
out: runs/sweep
shards: 4                    # per checkpoint
reference: embedded          # every checkpoint's, unless it names its own
checkpoints:
  - {name: npo, model: runs/npo}
  - {name: rmu, model: runs/rmu}
  - {name: npo-per-target, manifest: runs/npo-opt/manifest.json}
selection: {targets: [france, japan]}   # forms, langs, targets, splits, limit, probes, train_form
eval: {tier: core, batch_size: 16, dtype: bfloat16}    # EvalConfig fields, as evaluate's flags
resources: {num_cpus: 4, num_gpus: 1}                  # what each task asks Ray for
local_ray: {num_cpus: 16}     # the local Ray's size, without --ray (default: the machine's)
job_timeout_s: 7200           # optional; also retries (default 0), start_timeout_s (default 1800)
"""

SHARDS_DIR = "_shards"  # OUT/_shards/: the jobs' folders (a checkpoint's name cannot start with "_")
DONE = "sweep-job.json"  # a job's folder: written when its evaluate returned, names the job
STARTED = "sweep-started"  # a job's folder: written when its task starts (job_timeout_s counts from it)
MERGED = "sweep-merged.json"  # OUT/_shards/<name>/: the jobs the merged OUT/<name>/ was made from
POLL_S = 1.0  # how often the driver looks at timeouts between two finished jobs


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckpointSpec(_Strict):
    """One checkpoint: a model (as `evaluate --model` takes) or a manifest of one checkpoint per target."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: str | None = None
    manifest: str | None = None
    reference: str | None = None  # default: the sweep's reference

    @model_validator(mode="after")
    def _one_model(self) -> CheckpointSpec:
        if (self.model is None) == (self.manifest is None):
            raise ValueError("give model or manifest, not both")
        return self


class Selection(_Strict):
    """evaluate's selection options (the tier is an `eval` option, as it is EvalConfig's)."""

    forms: list[str] | None = None
    langs: list[str] | None = None
    targets: list[str] | None = None
    splits: list[str] = Field(default_factory=lambda: list(SPLITS))
    limit: int | dict[str, int] | None = None
    probes: str | None = None
    train_form: str | None = None

    @model_validator(mode="after")
    def _check_limit(self) -> Selection:
        limits = self.limit if isinstance(self.limit, dict) else {"": self.limit} if self.limit is not None else {}
        unknown = sorted(set(limits) - {"", *SPLITS})
        if unknown:
            raise ValueError(f"limit: unknown split {unknown[0]!r} (splits: {', '.join(SPLITS)})")
        if any(n < 1 for n in limits.values()):
            raise ValueError("limit: every N must be at least 1")
        return self


class Resources(_Strict):
    """What each task asks Ray for."""

    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0)


class LocalRay(_Strict):
    """The local Ray a sweep starts when no `--ray ADDRESS` is given (None: what the machine has)."""

    num_cpus: int | None = Field(None, ge=1)
    num_gpus: int | None = Field(None, ge=0)


class SweepConfig(_Strict):
    """A sweep: checkpoints x shards, the selection and evaluate options they share, resources per task."""

    checkpoints: list[CheckpointSpec] = Field(min_length=1)
    reference: str | None = None
    shards: int = Field(1, ge=1)
    out: str | None = None
    selection: Selection = Field(default_factory=Selection)
    eval: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    local_ray: LocalRay = Field(default_factory=LocalRay)
    retries: int = Field(0, ge=0)  # Ray's retries of a job whose worker died (evaluate resumes)
    job_timeout_s: float | None = Field(None, gt=0)
    start_timeout_s: float = Field(1800, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        names = [c.name for c in self.checkpoints]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"checkpoint name {twice[0]!r} given twice")
        unknown = sorted(set(self.eval) - {f.name for f in fields(EvalConfig)})
        if unknown:
            raise ValueError(f"eval: unknown option {unknown[0]!r} (EvalConfig fields: "
                             f"{', '.join(f.name for f in fields(EvalConfig))})")
        return self

    def eval_config(self, source: str = "sweep config") -> EvalConfig:
        """The `eval` section as the EvalConfig every job runs with (types checked by pydantic, values by
        EvalConfig); `source` starts an error's line."""
        from pydantic import TypeAdapter

        try:
            config = TypeAdapter(EvalConfig).validate_python(self.eval)
        except ValidationError as exc:
            raise OrtBenchError(f"{source}: eval: {describe_validation_error(exc)}") from None
        except OrtBenchError as exc:
            raise OrtBenchError(f"{source}: eval: {exc}") from None
        if config.tensor_parallel_size > 1:
            raise OrtBenchError(f"{source}: eval.tensor_parallel_size > 1 is not run inside a Ray task (the "
                                "engine would need a placement group of its own and can hang): run evaluate --shard "
                                "for such a model")
        from ort_bench.scoring.backends import checked_backend

        try:  # a load option or engine setting the backend refuses fails here, not in every job after Ray starts
            checked_backend(config.backend, config, **config.backend_settings())
        except OrtBenchError as exc:
            raise OrtBenchError(f"{source}: eval: {exc}") from None
        return config


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read and check a sweep config (YAML or JSON); every mistake is one line naming the file and field."""
    where = f"sweep config {path}"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise OrtBenchError(f"{where}: cannot read it as YAML ({exc})") from None
    if not isinstance(data, dict):
        raise OrtBenchError(f"{where}: expected a mapping with checkpoints: [...]")
    config = validate_line(SweepConfig, data, where)
    config.eval_config(where)  # its errors now, before Ray starts
    return config


@dataclass(eq=False)
class Job:
    """One Ray task: evaluate of one shard of a checkpoint, or of its reference alone."""

    label: str  # "checkpoint npo shard 1/4", what messages name
    checkpoint: str | None  # None: a reference job
    folder: Path
    key: str  # hash of what the job computes; its done-marker holds it
    spec: dict[str, Any]  # evaluate's arguments
    needs: Job | None = None  # the reference job whose records it copies

    def done(self) -> bool:
        try:
            return json.loads((self.folder / DONE).read_text(encoding="utf-8")).get("job") == self.key
        except (OSError, ValueError):
            return False


class SweepFailed(OrtBenchError):
    """Some jobs failed (the others finished and their checkpoints are merged); `summary` says which."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary


def _absolute(spec: str | None) -> str | None:
    """A path that exists here as an absolute path (Ray workers do not share the driver's directory);
    anything else (`embedded`, a hub id) as given."""
    return str(Path(spec).resolve()) if spec is not None and Path(spec).exists() else spec


def _signature(path: str | None) -> str | None:
    """Sizes and modification times of a local model's files: a checkpoint rewritten in place is not skipped."""
    if path is None or not Path(path).exists():
        return None
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return sha256_json([[str(f.relative_to(p.parent)), f.stat().st_size, f.stat().st_mtime_ns] for f in files])


def _manifest_signature(manifest: str) -> str:
    from ort_bench.scoring.per_target import read_manifest

    return sha256_json([_signature(manifest), *(_signature(d) for d in read_manifest(manifest).values())])


def plan(config: SweepConfig, out: Path) -> tuple[list[Job], dict[str, list[Job]]]:
    """Every job of the sweep (reference jobs first) and each checkpoint's shard jobs in shard order."""
    from ort_bench.scoring.per_target import read_manifest

    eval_config = asdict(config.eval_config())
    sel = config.selection.model_dump()
    selection = {k: v for k, v in sel.items() if k != "probes"} | {"probes_file": _absolute(sel["probes"])}
    n = config.shards
    references: dict[tuple[str, int], Job] = {}
    per_checkpoint: dict[str, list[Job]] = {}
    for c in config.checkpoints:
        model, manifest = _absolute(c.model), _absolute(c.manifest)
        reference = _absolute(c.reference or config.reference)
        own = selection
        if manifest is not None:
            if reference is None:
                raise OrtBenchError(f"sweep config: checkpoint {c.name!r} (a manifest) needs a reference")
            own = selection | {"targets": list(read_manifest(manifest))}  # as evaluate --manifest selects
        signature = _manifest_signature(manifest) if manifest else _signature(model)
        ref_selection = {k: v for k, v in own.items() if k != "train_form"}
        # the reference's records are reused by probe, so the order the targets are named in is no new group
        unordered = ref_selection | {"targets": sorted(ref_selection.get("targets") or [])}
        ref_group = sha256_json([reference, unordered])[:10]
        jobs = []
        for i in range(1, n + 1):
            ref_job = None
            if reference is not None and (ref_group, i) not in references:  # one per (reference, selection)
                ref_key = sha256_json({"model": reference, "signature": _signature(reference),
                                       "selection": ref_selection, "config": eval_config, "shard": [i, n]})
                name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(reference).name or "reference")[:40]
                references[(ref_group, i)] = Job(
                    f"reference {Path(reference).name or reference} shard {i}/{n}", None,
                    out / SHARDS_DIR / f"_reference-{name}-{ref_group}" / f"shard-{i}-of-{n}", ref_key,
                    {"model": reference, "manifest": None, "reference": None, "selection": ref_selection,
                     "config": eval_config, "shard": [i, n], "reuse": []})
            if reference is not None:
                ref_job = references[(ref_group, i)]
            folder = out / SHARDS_DIR / c.name / f"shard-{i}-of-{n}"
            key = sha256_json({"model": model, "manifest": manifest, "signature": signature,
                               "reference": ref_job.key if ref_job else None, "selection": own,
                               "config": eval_config, "shard": [i, n]})
            jobs.append(Job(f"checkpoint {c.name} shard {i}/{n}", c.name, folder, key,
                            {"model": model, "manifest": manifest, "reference": reference, "selection": own,
                             "config": eval_config, "shard": [i, n],
                             "reuse": [str(ref_job.folder)] if ref_job else []}, ref_job))
        per_checkpoint[c.name] = jobs
    return [*references.values(), *(j for jobs in per_checkpoint.values() for j in jobs)], per_checkpoint


def run_job(spec: dict[str, Any], folder: str, key: str, label: str, reference_done: Any = None) -> dict[str, Any]:
    """The Ray task: one evaluate of one shard into `folder`, then its done-marker. `reference_done` is the
    reference job's result: passing it makes Ray run this job after that one."""
    import socket

    from ort_bench.scoring.evaluate import evaluate

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / STARTED).write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
    t0 = time.perf_counter()
    results = evaluate(spec["model"], out, reference=spec["reference"], manifest=spec["manifest"],
                       shard=tuple(spec["shard"]), reuse=spec["reuse"], config=EvalConfig(**spec["config"]),
                       progress=False, **spec["selection"])
    new = sum((results.get(role) or {}).get("new_records", 0) for role in ("model", "reference"))
    done = {"job": key, "label": label, "new_records": new, "seconds": round(time.perf_counter() - t0, 2),
            "host": socket.gethostname()}
    (out / DONE).write_text(json.dumps(done) + "\n", encoding="utf-8")
    return done


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise OrtBenchError("a sweep runs on Ray, which is not installed: pip install 'ort-bench[sweep]'") from None
    return ray


@contextmanager
def ray_session(config: SweepConfig, address: str | None):
    """(ray, owned): the Ray this process already initialised (left running, owned False), a cluster at
    `address`, or a local Ray started for the purpose; the last two are shut down on the way out, whatever
    happens, which also ends the tasks this driver left."""
    ray = _import_ray()
    if ray.is_initialized():
        check_resources(ray, config, local=False)
        yield ray, False
        return
    if address:
        check_reachable(address)
    saved = {k: v for k, v in os.environ.items() if _ray_sets(k)}
    try:
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=config.local_ray.num_cpus, num_gpus=config.local_ray.num_gpus,
                         include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # Ray's connection errors have no common base
            where = f"connect to Ray at {address}" if address else "start a local Ray"
            raise OrtBenchError(f"cannot {where}: {type(exc).__name__}: {_short(exc)}{_auth_hint(exc)}") from None
        check_resources(ray, config, local=not address)
        yield ray, True
    finally:
        ray.shutdown()
        for k in [k for k in os.environ if _ray_sets(k) and k not in saved]:  # ray.init leaves them set
            del os.environ[k]
        os.environ.update(saved)


def _ray_sets(name: str) -> bool:
    """The environment variables ray.init sets in the driver (PYTHONBREAKPOINT: Ray's debugger)."""
    return name.startswith("RAY_") or name == "PYTHONBREAKPOINT"


def _auth_hint(exc: BaseException) -> str:
    """Ray's word for a cluster that wants a token sits deep in the exception chain: bring it up."""
    chain: list[str] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 10:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    if "AuthToken" not in " ".join(chain):
        return ""
    return ("; the cluster asks for its token: set RAY_AUTH_MODE=token and give the token (~/.ray/auth_token or "
            "RAY_AUTH_TOKEN)")


def check_reachable(address: str, timeout: float = 10) -> None:
    """Refuse, in seconds, a cluster address where nothing answers: Ray itself retries such an address for
    about 14 minutes before it says so."""
    import socket

    target = address.removeprefix("ray://")
    if target == "auto":  # Ray finds it (RAY_ADDRESS, or the cluster this machine runs)
        try:
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address(target) or ""
        except Exception:  # noqa: BLE001 - none found, or another Ray: ray.init says which
            return
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise OrtBenchError(f"--ray {address}: give HOST:PORT (the head's GCS, e.g. 10.0.0.1:6379), ray://HOST:PORT "
                            "or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise OrtBenchError(f"cannot connect to Ray at {address}: nothing answers at {host}:{port} "
                            f"({exc.strerror or exc}); is the cluster up (`ray status` on its head)?") from None


def check_resources(ray: Any, config: SweepConfig, local: bool) -> None:
    """A task asking more than Ray has would wait forever: on the local Ray that is an error (one line); a
    cluster may be adding nodes, so there it is a warning, and `start_timeout_s` ends the wait."""
    have = ray.cluster_resources()
    for what, want, key in (("num_cpus", config.resources.num_cpus, "CPU"),
                            ("num_gpus", config.resources.num_gpus, "GPU")):
        if want <= have.get(key, 0):
            continue
        if local:
            raise OrtBenchError(f"resources.{what}: {want:g} per task, but the local Ray has {have.get(key, 0):g} "
                                f"(local_ray.{what} sets it; or give --ray ADDRESS)")
        print(f"warning: resources.{what}: {want:g} per task, but the cluster has {have.get(key, 0):g} now; jobs "
              f"wait for nodes up to start_timeout_s ({config.start_timeout_s:g} s)", file=sys.stderr)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _why(ray: Any, exc: BaseException) -> str:
    """One line for a failed task: the task's own error where there is one, else what happened to its worker."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and cause is not None and cause is not exc:
        return _short(cause) if isinstance(cause, OrtBenchError) else f"{type(cause).__name__}: {_short(cause)}"
    if isinstance(exc, ray.exceptions.WorkerCrashedError | ray.exceptions.OutOfMemoryError):
        return f"its worker died (killed, or out of memory): {type(exc).__name__}"
    return f"{type(exc).__name__}: {_short(exc)}"


def _merge(name: str, jobs: list[Job], out: Path) -> dict[str, Any]:
    """Join a checkpoint's shards into OUT/<name>/ (kept as is when it already holds these very jobs)."""
    from ort_bench.scoring.shards import merge_shards

    dest, marker = out / name, out / SHARDS_DIR / name / MERGED
    keys = [j.key for j in jobs]
    try:
        if json.loads(marker.read_text(encoding="utf-8")).get("jobs") == keys and (dest / "results.json").is_file():
            return json.loads((dest / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    tmp = out / SHARDS_DIR / name / "merging"
    shutil.rmtree(tmp, ignore_errors=True)
    results = merge_shards([j.folder for j in jobs], tmp)
    marker.unlink(missing_ok=True)
    shutil.rmtree(dest, ignore_errors=True)  # only ever this sweep's own (checked in `sweep`)
    tmp.rename(dest)
    marker.write_text(json.dumps({"jobs": keys}) + "\n", encoding="utf-8")
    return results


def _check_outputs(out: Path, names: list[str]) -> None:
    """OUT/<name>/ is the sweep's to replace only if the sweep made it."""
    for name in names:
        dest = out / name
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) \
                and not (out / SHARDS_DIR / name / MERGED).is_file():
            raise OrtBenchError(f"{dest}: exists and is not this sweep's merged run; choose another out or move it")


def sweep(config: str | Path | SweepConfig, out: str | Path | None = None, ray_address: str | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Run a sweep (module docstring): every (checkpoint, shard) job not already done, as Ray tasks, and each
    checkpoint's shards merged into `out/<name>/`. Returns `{"out", "results": {name: results.json},
    "ran", "skipped": job labels, "failed": {label: why}}`; raises `SweepFailed` (one line) if a job failed,
    after the other jobs finished."""
    if not isinstance(config, SweepConfig):
        config = load_sweep_config(config)
    if out is None and config.out is None:
        raise OrtBenchError("sweep: give an out folder (--out, or out: in the config)")
    out = Path(out if out is not None else config.out).resolve()  # type: ignore[arg-type]
    if out.exists() and not out.is_dir():
        raise OrtBenchError(f"{out}: exists and is not a directory")
    jobs, per_checkpoint = plan(config, out)
    _check_outputs(out, list(per_checkpoint))
    todo = [j for j in jobs if not j.done()]
    summary: dict[str, Any] = {"out": str(out), "results": {}, "ran": [], "skipped": [j.label for j in jobs
                                                                                    if j not in todo], "failed": {}}

    def merge_ready(name: str) -> None:
        if name in summary["results"] or not all(j.done() for j in per_checkpoint[name]):
            return
        try:
            summary["results"][name] = _merge(name, per_checkpoint[name], out)
        except OrtBenchError as exc:
            summary["failed"][f"checkpoint {name} merge"] = str(exc)
        except (OSError, ValueError) as exc:  # a full disk, a folder moved away: one line, the others go on
            summary["failed"][f"checkpoint {name} merge"] = one_line(exc)

    for name in per_checkpoint:
        merge_ready(name)
    if todo:
        with ray_session(config, ray_address) as (ray, owned):
            _run(ray, config, todo, jobs, summary, merge_ready, progress, cancel_left=not owned)
    if summary["failed"]:
        (label, why), more = next(iter(summary["failed"].items())), len(summary["failed"]) - 1
        also = f" (and {more} more failed job{'s' if more > 1 else ''})" if more else ""
        raise SweepFailed(f"{label}: {why}{also}; the other jobs finished, and running the sweep again resumes it",
                          summary)
    return summary


def _run(ray: Any, config: SweepConfig, todo: list[Job], jobs: list[Job], summary: dict[str, Any],
         merge_ready: Any, progress: bool, cancel_left: bool) -> None:
    """Submit the jobs as Ray tasks and follow them until each has finished, failed or timed out.
    `cancel_left`: on the way out (interrupted), cancel what is left, in a Ray that outlives the sweep."""
    from tqdm.auto import tqdm

    task = ray.remote(run_job)
    refs: dict[Any, Job] = {}
    ref_of: dict[Job, Any] = {}
    for job in todo:  # reference jobs come first, so a checkpoint job finds its reference's ref
        for stale in (DONE, STARTED):
            (job.folder / stale).unlink(missing_ok=True)
        options = {"num_cpus": config.resources.num_cpus, "num_gpus": config.resources.num_gpus,
                   "max_retries": config.retries, "name": job.label}
        ref = task.options(**options).remote(job.spec, str(job.folder), job.key, job.label,
                                             ref_of.get(job.needs) if job.needs else None)
        refs[ref], ref_of[job] = job, ref
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="sweep", unit="job", disable=not progress,
               file=sys.stderr)
    started: dict[Job, float] = {}
    last_change = time.monotonic()

    def fail(job: Job, why: str) -> None:
        summary["failed"][job.label] = why
        bar.write(f"error: {job.label}: {why}", file=sys.stderr)
        bar.update(1)

    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S, fetch_local=False)
            for ref in ready:
                job = refs.pop(ref)
                last_change = time.monotonic()
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as exc:
                    if job.needs is not None and (job.needs.label in summary["failed"]
                                                  or _failed(ray, ref_of.get(job.needs))):
                        fail(job, f"not run: {job.needs.label} failed")
                    else:
                        fail(job, _why(ray, exc))
                    continue
                summary["ran"].append(job.label)
                bar.update(1)
                if job.checkpoint is not None:
                    merge_ready(job.checkpoint)
            now = time.monotonic()
            for ref, job in list(refs.items()):
                if job not in started and (job.folder / STARTED).exists():
                    started[job] = last_change = now
                if config.job_timeout_s and job in started and now - started[job] > config.job_timeout_s:
                    ray.cancel(ref, force=True)
                    refs.pop(ref)
                    fail(job, f"timed out after {config.job_timeout_s:g} s (job_timeout_s); cancelled")
            if refs and not any(j in started for j in refs.values()) and now - last_change > config.start_timeout_s:
                for ref, job in list(refs.items()):
                    ray.cancel(ref, force=True)
                    fail(job, f"not started within {config.start_timeout_s:g} s (start_timeout_s): no worker has "
                              f"num_cpus={config.resources.num_cpus:g}, num_gpus={config.resources.num_gpus:g} free?")
                refs.clear()
    finally:
        bar.close()
        for ref in refs if cancel_left else ():  # (a Ray the sweep shuts down ends them itself)
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass


def _failed(ray: Any, ref: Any) -> bool:
    """Whether a (reference) task has finished with an error."""
    if ref is None or not ray.wait([ref], timeout=0)[0]:
        return False
    try:
        ray.get(ref)
    except ray.exceptions.RayError:
        return True
    return False
