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
from ort_bench.scoring.checkpoint import UNLEARN_CARD, copy_card, read_card
from ort_bench.scoring.load_options import LoadOptions
from ort_bench.scoring.per_target import model_description, read_manifest
from ort_bench.scoring.records import RunLock, put_in_order
from ort_bench.scoring.scoring_loop import score_model
from ort_bench.scoring.selection import seen_forms, select_probes
from ort_bench.scoring.shards import PER_TARGET_CARDS, parse_shard, probes_for_target, shard_selection


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
    model: str | None,
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
    shard: tuple[int, int] | str | None = None,
    manifest: str | Path | None = None,
) -> dict[str, Any]:
    """Score `model` (and `reference`) and write `out/records.jsonl` and `out/results.json`.
    `reuse`: earlier run folders whose records of the same models may be copied instead of rescored
    (for example the reference's, shared by every unlearned model of an experiment).
    `shard`: `(I, N)` or `"I/N"`, score only that slice of the selection (`ort_bench.scoring.shards`;
    join the N folders with `merge_shards`). `manifest` instead of `model`: one checkpoint per target
    (`ort_bench.scoring.per_target`), each target's forget probes scored on its own checkpoint."""
    from ort_bench.benchmark import CURRENT
    from ort_bench.scoring.results import results_from_records, write_results

    config = config or EvalConfig()
    out = Path(out)
    if (model is None) == (manifest is None):
        raise OrtBenchError("give a model or a manifest of one checkpoint per target (--manifest), not both")
    if isinstance(shard, str):
        shard = parse_shard(shard)
    checkpoints = None
    if manifest is not None:
        checkpoints = read_manifest(manifest)
        if reference is None:
            raise OrtBenchError("one checkpoint per target needs --reference: each target's forgetting is measured "
                                "against the model before unlearning")
        if targets and sorted(targets) != sorted(checkpoints):
            raise OrtBenchError(f"--targets {','.join(targets)} are not the manifest's targets "
                                f"({','.join(checkpoints)}): leave --targets out")
        targets = list(checkpoints)
    if out.exists() and not out.is_dir():
        raise OrtBenchError(f"{out}: exists and is not a directory")
    everything, hashes = select_probes(splits, forms, langs, targets, limit, probes_file, tier=config.tier)
    if not everything:
        raise OrtBenchError("no probes selected (check --forms, --langs, --targets)")
    probes, hashes, shard_info = shard_selection(everything, shard, hashes)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OrtBenchError(f"{out}: cannot create the run folder ({exc.strerror})") from None
    reused = [Path(r) for r in reuse or []]
    with RunLock(out):  # one writer per run folder
        records_path = out / "records.jsonl"
        if checkpoints is None:
            model_records, model_info = score_model(model, probes, records_path, config, "model", progress,
                                                    reuse=reused)
            cards = {None: model_info.get("unlearned_with", {})}
        else:
            model_records, infos = [], {}
            for target, spec in checkpoints.items():
                recs, infos[target] = score_model(spec, probes_for_target(probes, target), records_path, config,
                                                  "model", progress, reuse=reused)
                model_records += recs
            model_info = model_description(manifest, infos)
            cards = {t: i.get("unlearned_with", {}) for t, i in infos.items()}
        ref_records, ref_info = (None, None)
        if reference is not None:
            ref_records, ref_info = score_model(reference, probes, records_path, config, "reference", progress,
                                                  reuse=reused)
            if checkpoints is not None and ref_info["fingerprint"] in {c["fingerprint"] for c in infos.values()}:
                raise OrtBenchError(f"manifest {manifest}: a target's checkpoint is the reference itself")
        put_in_order(records_path, [r["key"] for r in model_records + (ref_records or [])])
        # seen forms are a property of the whole selection (a shard's share is not), per checkpoint
        seen: dict[str, int] = {}
        for target, card in cards.items():
            mine = everything if target is None else probes_for_target(everything, target)
            for form, n in seen_forms(mine, card.get("trained_probe_ids")).items():
                seen[form] = seen.get(form, 0) + n
        train_form = train_form or next((c.get("train_form") for c in cards.values() if c.get("train_form")), None)
        selection = {"splits": list(splits), "forms": forms, "langs": langs, "targets": targets, "limit": limit,
                     "tier": config.tier, "train_form": train_form, "seen_forms": dict(sorted(seen.items()))}
        if shard_info is not None:
            selection["shard"] = shard_info
        results = results_from_records(
            CURRENT, model_records, ref_records,
            model=model_info, reference=ref_info, config=asdict(config), params_hash=config.params_hash(),
            hashes=hashes, versions=versions(SCORING_PACKAGES), n_probes=len(probes), selection=selection,
        )
        write_results(out / "results.json", results)
        if checkpoints is None:
            copy_card(model, out)
        else:
            copy_cards(checkpoints, out)
    return results


def copy_cards(checkpoints: dict[str, str], out: Path) -> None:
    """One checkpoint per target: every checkpoint's unlearn card, by target, in `out/unlearn_cards.json`
    (submit checks each against its target)."""
    import json

    cards = {t: read_card(d, UNLEARN_CARD) for t, d in checkpoints.items()}
    if any(c is not None for c in cards.values()):
        (out / PER_TARGET_CARDS).write_text(json.dumps(cards, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
