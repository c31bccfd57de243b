"""One checkpoint per target (the ORT/RWKU protocol): each target unlearned alone from the original,
scored as one result.

A manifest (`manifest.json`, written by `unlearn --one-per-target`) names each target's checkpoint:

    {"protocol": "one_per_target", "checkpoints": {"france": "france", "japan": "japan"}}

(paths relative to the manifest's folder). `evaluate --manifest` scores each target's forget probes on
that target's checkpoint and every neighbour and utility probe on every checkpoint (`probes_for_target`);
records say which checkpoint answered (its fingerprint). results.json's model is
`{"protocol": "one_per_target", "checkpoints": {target: its description}, "fingerprint": a hash of
them}`, and `compare_one_per_target` makes the comparison: forget efficacy, WFE and the form gap from
the targets' own checkpoints' forget records against the reference (per target, then over targets, as
the version's metrics always do: the records of each target just come from its own checkpoint); utility,
fluency and their retentions the mean over checkpoints of each checkpoint's own; the ORT score the
harmonic mean of WFE and that utility. Utility and ORT get no interval (the checkpoints are not
resampled together).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ort_bench.errors import OrtBenchError

ONE_PER_TARGET = "one_per_target"  # results.json's model.protocol for a run of one checkpoint per target
PER_TARGET_CARDS = "unlearn_cards.json"  # such a run's checkpoints' cards: {target: its unlearn card}

MANIFEST = "manifest.json"


def read_manifest(path: str | Path) -> dict[str, str]:
    """target -> checkpoint path (resolved against the manifest's folder); each target known to the KB
    and each checkpoint present, else one line."""
    from ort_bench.kb.facts import load_kb

    path = Path(path)
    if not path.is_file():
        raise OrtBenchError(f"manifest {path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise OrtBenchError(f"manifest {path}: not a JSON file") from None
    ckpts = data.get("checkpoints") if isinstance(data, dict) else None
    if not isinstance(ckpts, dict) or not ckpts or not all(isinstance(v, str) for v in ckpts.values()):
        raise OrtBenchError(f'manifest {path}: expected {{"checkpoints": {{"TARGET": "CHECKPOINT_DIR", ...}}}}')
    known = load_kb().targets
    out: dict[str, str] = {}
    for target, spec in ckpts.items():
        if target not in known:
            raise OrtBenchError(f"manifest {path}: unknown target {target!r} (see data/targets.yaml)")
        d = Path(spec) if Path(spec).is_absolute() else path.parent / spec
        if not d.exists():
            raise OrtBenchError(f"manifest {path}: the checkpoint of {target!r} is missing ({d})")
        out[target] = str(d)
    return out


def write_manifest(path: Path, checkpoints: dict[str, str]) -> None:
    path.write_text(json.dumps({"protocol": ONE_PER_TARGET, "checkpoints": checkpoints}, indent=2) + "\n",
                    encoding="utf-8")


def model_description(manifest: str | Path, infos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """results.json's `model` for a run of one checkpoint per target; `fingerprint` hashes the
    checkpoints' (what a submission and its records are tied to)."""
    from ort_bench.provenance import sha256_json

    fps = {t: i["fingerprint"] for t, i in infos.items()}
    seen: dict[str, str] = {}
    for t, fp in fps.items():
        if fp in seen:
            raise OrtBenchError(f"manifest {manifest}: {seen[fp]!r} and {t!r} name the same checkpoint (fingerprint "
                                f"{fp[:12]}): one checkpoint per target")
        seen[fp] = t
    unscored = next((i["unscored"] for i in infos.values() if i.get("unscored")), None)  # one endpoint: alike
    return {"spec": str(manifest), "kind": ONE_PER_TARGET, "fingerprint": "per-target-" + sha256_json(fps)[:32],
            "role": "model", "protocol": ONE_PER_TARGET, "checkpoints": infos,
            **{k: sum(i.get(k, 0) for i in infos.values()) for k in ("reused_records", "new_records")},
            **({"unscored": unscored} if unscored else {})}


def _mean(values: list[float | None]) -> float | None:
    """The mean, or None when any checkpoint's value is undefined (a mean over some would flatter)."""
    return None if not values or any(v is None for v in values) else float(sum(values)) / len(values)  # type: ignore[arg-type]


def compare_one_per_target(version: Any, model_df: pd.DataFrame, reference_df: pd.DataFrame,
                           checkpoints: dict[str, str], *, train_form: str | None, seed: int,
                           seen_forms: dict[str, int] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary, comparison) of a one-checkpoint-per-target run (module docstring). `checkpoints`:
    target -> fingerprint. Records answered by a checkpoint other than their target's are an error."""
    from ort_bench.scoring.metrics import ort_score
    from ort_bench.scoring.metrics_by_version import version_compare, version_summarize

    if version.metrics != "v3":
        raise ValueError(f"one checkpoint per target is scored under benchmark v3 on, not {version.name}")
    by_fp = {fp: t for t, fp in checkpoints.items()}
    stray = sorted(set(model_df["model_fingerprint"]) - set(by_fp))
    if stray:
        raise ValueError(f"model records of checkpoint {stray[0][:12]}, not one of the manifest's")
    forget = model_df[model_df["split"] == "forget"]
    wrong = forget[[by_fp[fp] != t for fp, t in zip(forget["model_fingerprint"], forget["target"], strict=True)]]
    if len(wrong):
        raise ValueError(f"forget record of target {wrong['target'].iloc[0]!r} answered by another target's "
                         "checkpoint")
    summary = version_summarize(version, forget)
    comparison = version_compare(version, forget, reference_df[reference_df["split"] == "forget"],
                                 train_form=train_form, seed=seed, seen_forms=seen_forms)
    per: dict[str, dict[str, Any]] = {}
    alone: dict[str, Any] = {}
    for target, fp in checkpoints.items():
        mine = model_df[model_df["model_fingerprint"] == fp]
        c = version_compare(version, mine, reference_df[reference_df["probe_id"].isin(set(mine["probe_id"]))],
                            seed=seed)
        per[target] = {"fingerprint": fp, **{k: c.get(k) for k in (
            "utility", "neighbour_retention", "general_retention", "fluency", "fluency_reference",
            "fluency_distance")}}
        own = version_summarize(version, mine[mine["split"] != "forget"])
        alone[target] = {k: v for k, v in own.items() if k != "fluency"}

    def mean_of(key: str) -> float | None:
        return _mean([p[key] for p in per.values()])

    utility = mean_of("utility")
    note = f"mean over the {len(per)} targets' checkpoints (comparison.per_target)"
    comparison.update(
        protocol=ONE_PER_TARGET, per_target=per, utility=utility, utility_ci_low=None, utility_ci_high=None,
        neighbour_retention=mean_of("neighbour_retention"), general_retention=mean_of("general_retention"),
        ort_score=ort_score(comparison["worst_form_efficacy"], utility), ort_score_ci_low=None,
        ort_score_ci_high=None, fluency=mean_of("fluency"), fluency_reference=mean_of("fluency_reference"),
        fluency_distance=mean_of("fluency_distance"),
        neighbour={"retention": mean_of("neighbour_retention"), "note": note},
        general={"retention": mean_of("general_retention"), "note": note},
        ci_method=comparison["ci_method"] + "; one checkpoint per target: forget intervals as above, utility and "
        "the ORT score are means over the checkpoints, without an interval",
    )
    summary["per_target"] = alone
    return summary, comparison
