"""Audit a leaderboard entry by re-scoring: what `submit` cannot prove is that the stored outputs came
from the named checkpoint. `audit` loads that checkpoint (its fingerprint must be the one the records
carry), re-scores a seeded random sample of K items with the recorded parameters and compares: greedy
outputs must be equal and likelihoods within `LOGPROB_TOLERANCE` (batching changes float sums a little).
A passing audit is written beside the submission as `audit.json` (K, seed, date, what was compared),
and the leaderboard marks the entry audited.

    ort-bench audit leaderboards/v2/submissions/NAME --sample 20 --seed 0
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.models.load_options import LoadOptions

AUDIT_FILE = "audit.json"
LOGPROB_TOLERANCE = 1e-3  # nats, per option: same model and backend, other batch composition


def _sample_items(records: list[dict[str, Any]], k: int, seed: int) -> list[str]:
    items = sorted({r.get("item_id") or r["probe_id"] for r in records})
    return sorted(random.Random(seed).sample(items, min(k, len(items))))


def _compare(old: dict[str, Any], new: dict[str, Any], where: str) -> str | None:
    if old.get("rouge_l_recall") is not None and old.get("output") != new.get("output"):
        return f"{where}: output differs (recorded {str(old.get('output'))[:60]!r}, re-scored {new['output'][:60]!r})"
    for key in ("choice_logprobs", "choice_logprobs_neutral"):
        a, b = old.get(key), new.get(key)
        if a is None and b is None:
            continue
        if a is None or b is None or len(a) != len(b) or any(
                abs(x - y) > LOGPROB_TOLERANCE for x, y in zip(a, b, strict=True)):
            return f"{where}: {key} differ beyond {LOGPROB_TOLERANCE} (recorded {a}, re-scored {b})"
    return None


def audit(submission: str | Path, sample: int = 20, seed: int = 0, model: str | None = None,
          write: bool = True, progress: bool = False, load: LoadOptions | None = None) -> dict[str, Any]:
    """Re-score `sample` items of a stored submission (or a run folder) and compare with its records.
    `model` overrides where the checkpoint is (default: the spec recorded in results.json; for one
    checkpoint per target, the run's manifest: each sampled record is re-scored on the checkpoint that
    answered it). `load`:
    how to load it; the dtype is the one the submission was scored with (another one is refused)."""
    from ort_bench.board.submit import verify_run
    from ort_bench.models import load_tokenizer
    from ort_bench.scoring.backends import checked_backend
    from ort_bench.scoring.evaluate import EvalConfig
    from ort_bench.scoring.scoring_loop import score_probes

    if sample < 1:
        raise OrtBenchError(f"--sample must be at least 1 (got {sample})")
    folder = Path(submission)
    run = verify_run(folder)
    res = run.results
    load = load or LoadOptions()
    model_recs = run.records["model"]  # read and checked by verify_run
    chosen = set(_sample_items(model_recs, sample, seed))
    old = [r for r in model_recs if (r.get("item_id") or r["probe_id"]) in chosen]
    if run.probes is None:
        raise OrtBenchError(f"{folder}: benchmark {res.benchmark_version} is closed: its probes are not rendered "
                            "by this ort-bench, so its entries cannot be re-scored")
    # how it was scored; for a served model also where (the key is named by its variable, never stored)
    kept = ("backend", "max_new_tokens", "seed", "dtype", "batch_size", "base_url", "api_key_env", "tokenizer",
            "max_concurrency", "request_timeout", "max_retries")
    cfg = {k: res.config[k] for k in kept if res.config.get(k) is not None}
    if "dtype" in load.given() and load.dtype != cfg.get("dtype", load.dtype):
        raise OrtBenchError(f"--dtype {load.dtype}: the submission was scored in {cfg['dtype']}; an audit re-scores "
                            "with the same dtype")
    config = EvalConfig(**cfg, **{k: v for k, v in load.given().items() if k != "dtype"})
    by_id = {p.id: p for p in run.probes}
    checked: list[str] = []
    for spec, fingerprint in _checkpoints(res, model):
        mine = [r for r in old if r["model_fingerprint"] == fingerprint]
        if not mine:
            continue
        backend_cls = checked_backend(config.backend, config, **config.backend_settings())
        resolved = backend_cls.resolve(spec, config, **config.backend_settings())  # local, or what an endpoint serves
        if resolved.fingerprint != fingerprint:
            raise OrtBenchError(f"{spec}: fingerprint {resolved.fingerprint[:12]} is not the submission's model "
                                f"fingerprint {fingerprint[:12]}: not the checkpoint that was scored")
        backend = backend_cls(resolved, config, **config.backend_settings())
        try:
            tokenizer = backend.tokenizer or load_tokenizer(resolved)
            new = score_probes(backend, tokenizer, [by_id[r["probe_id"]] for r in mine], config)
        finally:
            backend.close()
        for r, n in zip(mine, new, strict=True):
            err = _compare(r, n, f"probe {r['probe_id']}")
            if err:
                raise OrtBenchError(f"audit failed: {err}")
        checked.append(resolved.fingerprint)
    from ort_bench.provenance import file_sha256

    report = {"sample": len(chosen), "probes": len(old), "seed": seed,
              "records_sha256": file_sha256(folder / "records.jsonl"),
              "date": datetime.now(timezone.utc).date().isoformat(), "model_fingerprint": res.model.fingerprint,
              "checkpoints": checked,
              "compared": "greedy outputs equal; choice log-likelihoods within "
                          f"{LOGPROB_TOLERANCE} nats", "backend": config.backend}
    if write:
        (folder / AUDIT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _checkpoints(res: Any, model: str | None) -> list[tuple[str, str]]:
    """(where the checkpoint is, its fingerprint) for each model that answered: the one model, or for a
    run of one checkpoint per target each target's checkpoint. `model` overrides where: a checkpoint for
    one model, a manifest for one checkpoint per target."""
    from ort_bench.board.rederive import checkpoints_of
    from ort_bench.scoring.per_target import read_manifest

    per_target = checkpoints_of(res)
    if per_target is None:
        return [(model or res.model.spec, res.model.fingerprint)]
    recorded = res.model.model_dump()["checkpoints"]
    specs = read_manifest(model) if model else {t: c.get("spec") for t, c in recorded.items()}
    missing = sorted(set(per_target) - {t for t, s in specs.items() if s})
    if missing:
        raise OrtBenchError(f"one checkpoint per target: no checkpoint given for target {missing[0]!r} (pass the "
                            "run's manifest with --model)")
    return [(specs[t], fp) for t, fp in sorted(per_target.items())]


def read_audit(folder: Path) -> dict[str, Any] | None:
    """The audit of a stored submission, if one passed on these very records (a malformed file, or
    one written for other records, counts as none)."""
    from ort_bench.provenance import file_sha256

    path = folder / AUDIT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("sample"), int) or not isinstance(data.get("date"), str):
        return None
    return data if data.get("records_sha256") == file_sha256(folder / "records.jsonl") else None
