"""Score a checkpoint (and optionally its reference) on probes: the job users come for.

This module holds the orchestration (`evaluate`; what shapes a run is `eval_config.EvalConfig`): select the
probes (`selection`), score each model with resume and reuse (`scoring_loop`), put the records in
probe order and write the results recomputed from them (`results`). Per probe the record keeps the
prompt as the model saw it, the output and every score; aggregates are never stored alone.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import SPLITS
from ort_bench.models.checkpoint import UNLEARN_CARD, copy_card, read_card
from ort_bench.provenance import SCORING_PACKAGES, versions
from ort_bench.scoring.eval_config import EvalConfig
from ort_bench.scoring.per_target import PER_TARGET_CARDS, model_description, read_manifest
from ort_bench.scoring.records import RunLock, put_in_order
from ort_bench.scoring.scoring_loop import score_model
from ort_bench.scoring.selection import seen_forms, select_probes
from ort_bench.scoring.shards import parse_shard, probes_for_target, shard_selection


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
