"""Score a checkpoint (and optionally its reference) on probes: the job users come for.

This module holds what shapes a run (`EvalConfig`) and the orchestration (`evaluate`): select the
probes (`selection`), score each model with resume and reuse (`scoring_loop`), put the records in
probe order and write the results recomputed from them (`results`). Per probe the record keeps the
prompt as the model saw it, the output and every score; aggregates are never stored alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import SPLITS
from ort_bench.provenance import SCORING_PACKAGES, sha256_json, versions
from ort_bench.scoring.checkpoint import copy_card
from ort_bench.scoring.load_options import LoadOptions
from ort_bench.scoring.records import RunLock, put_in_order
from ort_bench.scoring.scoring_loop import score_model
from ort_bench.scoring.selection import seen_forms, select_probes


@dataclass(frozen=True)
class EvalConfig(LoadOptions):
    """Everything that shapes the numbers (and the run): how models load (`LoadOptions`), then the
    engine and decoding. Fields in `SCORING_FIELDS` key the records."""

    backend: str = "hf"
    max_new_tokens: int | None = None  # None: the benchmark version's length per form (32 where it sets none)
    tier: str | None = None  # benchmark v3: the fixed probe sample scored (`ort_bench.kb.tiers`)
    seed: int = 0
    batch_size: int = 16
    tensor_parallel_size: int = 1
    chunk_size: int = 128  # probes per durable write

    ENGINE_FIELDS = ("batch_size", "tensor_parallel_size")  # passed to a backend only when changed

    SCORING_FIELDS = ("backend", "max_new_tokens", "seed", "dtype")
    DEFAULT_NEW_TOKENS = 32

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size", "tensor_parallel_size", "chunk_size"):
            value = getattr(self, name)
            if name == "max_new_tokens" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise OrtBenchError(f"{name} must be a whole number of at least 1 (got {value!r})")
        if self.tier is not None:
            from ort_bench.kb.tiers import get_tier

            get_tier(self.tier)

    def new_tokens(self, form: str) -> int:
        """Generation length for a free answer of `form`: --max-new-tokens when given (every form), else
        the current benchmark version's for that form."""
        from ort_bench.benchmark import CURRENT

        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return CURRENT.new_tokens(form, self.DEFAULT_NEW_TOKENS)

    def engine_settings(self) -> dict[str, Any]:
        """The engine settings that differ from their defaults (a backend refuses one it lacks)."""
        defaults = {f.name: f.default for f in fields(EvalConfig)}
        return {k: getattr(self, k) for k in self.ENGINE_FIELDS if getattr(self, k) != defaults[k]}

    def backend_settings(self) -> dict[str, Any]:
        """What a backend is started with besides the model and the load options: the seed and the
        engine settings that differ from their defaults."""
        return {"seed": self.seed, **self.engine_settings()}

    def params_hash(self, benchmark: str | None = None) -> str:
        """Hash of what shapes a record's numbers: the scoring fields, the ROUGE variant and (from v2
        on) the benchmark version, `benchmark` or the current one."""
        from ort_bench.benchmark import CURRENT, get_version
        from ort_bench.scoring.metrics import ROUGE_VARIANT

        benchmark = benchmark or CURRENT.name
        extra: dict[str, Any] = {"benchmark": benchmark} if benchmark != "v1" else {}  # v1 keys stay as they were
        if get_version(benchmark).tiers:  # v3 on: the tier is part of every record's key
            extra["tier"] = self.tier
        return sha256_json({**{f: getattr(self, f) for f in self.SCORING_FIELDS}, "rouge": ROUGE_VARIANT,
                            **extra})[:16]


def evaluate(
    model: str,
    out: str | Path,
    reference: str | None = None,
    forms: list[str] | None = None,
    langs: list[str] | None = None,
    targets: list[str] | None = None,
    splits: tuple[str, ...] | list[str] = SPLITS,
    limit: int | dict[str, int] | None = None,
    probes_file: str | Path | None = None,
    train_form: str | None = None,
    config: EvalConfig | None = None,
    progress: bool = True,
    reuse: list[str | Path] | None = None,
) -> dict[str, Any]:
    """Score `model` (and `reference`) and write `out/records.jsonl` and `out/results.json`.
    `reuse`: earlier run folders whose records of the same models may be copied instead of rescored
    (for example the reference's, shared by every unlearned model of an experiment)."""
    from ort_bench.benchmark import CURRENT
    from ort_bench.scoring.results import results_from_records, write_results

    config = config or EvalConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OrtBenchError(f"{out}: exists and is not a directory")
    probes, hashes = select_probes(splits, forms, langs, targets, limit, probes_file, tier=config.tier)
    if not probes:
        raise OrtBenchError("no probes selected (check --forms, --langs, --targets)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OrtBenchError(f"{out}: cannot create the run folder ({exc.strerror})") from None
    with RunLock(out):  # one writer per run folder
        records_path = out / "records.jsonl"
        model_records, model_info = score_model(model, probes, records_path, config, "model", progress,
                                                  reuse=[Path(r) for r in reuse or []])
        ref_records, ref_info = (None, None)
        if reference is not None:
            ref_records, ref_info = score_model(reference, probes, records_path, config, "reference", progress,
                                                  reuse=[Path(r) for r in reuse or []])
        put_in_order(records_path, [r["key"] for r in model_records + (ref_records or [])])
        card = model_info.get("unlearned_with", {})
        seen = seen_forms(probes, card.get("trained_probe_ids"))
        train_form = train_form or card.get("train_form")
        results = results_from_records(
            CURRENT, model_records, ref_records,
            model=model_info, reference=ref_info, config=asdict(config), params_hash=config.params_hash(),
            hashes=hashes, versions=versions(SCORING_PACKAGES), n_probes=len(probes),
            selection={"splits": list(splits), "forms": forms, "langs": langs, "targets": targets, "limit": limit,
                       "tier": config.tier, "train_form": train_form, "seen_forms": seen},
        )
        write_results(out / "results.json", results)
        copy_card(model, out)
    return results
