"""The results file: versioned and typed (after lm-evaluation-harness's results JSON).

Headline numbers sit at the top level, the per-form table under `forms`, and beside them everything
needed to reproduce or verify the run: fingerprints, data/template/probe hashes, every parameter,
library versions. Every metric states its direction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ort_bench.benchmark import BENCHMARK_VERSION, BenchmarkVersion, get_version
from ort_bench.errors import OrtBenchError
from ort_bench.scoring.metrics_by_version import version_compare, version_directions, version_summarize
from ort_bench.scoring.per_target import ONE_PER_TARGET
from ort_bench.scoring.records import Record, records_frame

RESULTS_SCHEMA_VERSION = 1


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    spec: str
    kind: str
    fingerprint: str
    role: str


class Results(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = RESULTS_SCHEMA_VERSION
    benchmark_version: str = BENCHMARK_VERSION
    created_at: str
    model: ModelInfo
    reference: ModelInfo | None = None
    # headline (None without a reference)
    worst_form_efficacy: float | None = None
    worst_form: str | None = None
    form_gap: float | None = None
    train_form_gap: float | None = None
    utility: float | None = None
    ort_score: float | None = None
    fluency: float | None = None
    directions: dict[str, str]
    forms: list[dict[str, Any]]  # one row per form of the forget split
    splits: dict[str, Any]  # per split, per form scores of the model alone
    comparison: dict[str, Any] | None = None
    n_probes: int
    selection: dict[str, Any]
    config: dict[str, Any]
    params_hash: str
    hashes: dict[str, str]
    versions: dict[str, str]


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN becomes null, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def build_results(*, version: BenchmarkVersion, model: dict, reference: dict | None, config: dict,
                  params_hash: str, hashes: dict, versions: dict, n_probes: int, summary: dict,
                  comparison: dict | None, selection: dict) -> dict[str, Any]:
    comparison = _clean(comparison) if comparison is not None else None
    summary = _clean(summary)
    headline: dict[str, Any] = {}
    if comparison is not None:
        for k in ("worst_form_efficacy", "worst_form", "form_gap", "train_form_gap", "utility", "ort_score",
                  "fluency"):
            headline[k] = comparison.get(k)
        forms = comparison["forms"]
    else:
        forms = summary.get("forget", {}).get("forms", []) if isinstance(summary.get("forget"), dict) else []
        headline["fluency"] = summary.get("fluency")
    res = Results(
        benchmark_version=version.name, created_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        model=ModelInfo(**model), reference=ModelInfo(**reference) if reference else None,
        directions=version_directions(version), forms=forms, splits=summary, comparison=comparison, n_probes=n_probes,
        selection=selection, config=config, params_hash=params_hash, hashes=hashes, versions=versions,
        **headline,
    )
    return res.model_dump(mode="json")


def results_from_records(version: BenchmarkVersion, model_records: Sequence[Record | dict[str, Any]],
                         reference_records: Sequence[Record | dict[str, Any]] | None, *, model: dict,
                         reference: dict | None, config: dict, params_hash: str, hashes: dict, versions: dict,
                         n_probes: int, selection: dict) -> dict[str, Any]:
    """The results file from per-probe records, under `version`'s definitions: the one path that both
    `evaluate` (writing it) and `submit` (recomputing it to check it, `recompute_results`) take."""
    model_df = records_frame(model_records)
    if model.get("protocol") == ONE_PER_TARGET:  # each target's forget records from its own checkpoint
        from ort_bench.scoring.per_target import compare_one_per_target

        if reference_records is None:
            raise ValueError("one checkpoint per target is scored against a reference")
        summary, comparison = compare_one_per_target(
            version, model_df, records_frame(reference_records),
            {t: c["fingerprint"] for t, c in model["checkpoints"].items()}, train_form=selection.get("train_form"),
            seed=config.get("seed", 0), seen_forms=selection.get("seen_forms"))
        return build_results(version=version, model=model, reference=reference, config=config,
                             params_hash=params_hash, hashes=hashes, versions=versions, n_probes=n_probes,
                             summary=summary, comparison=comparison, selection=selection)
    summary = version_summarize(version, model_df)
    comparison = None
    if reference_records is not None:
        comparison = version_compare(version, model_df, records_frame(reference_records),
                                     train_form=selection.get("train_form"), seed=config.get("seed", 0),
                                     seen_forms=selection.get("seen_forms"))
    return build_results(version=version, model=model, reference=reference, config=config, params_hash=params_hash,
                         hashes=hashes, versions=versions, n_probes=n_probes, summary=summary,
                         comparison=comparison, selection=selection)


def recompute_results(res: Results, model_records: Sequence[Record | dict[str, Any]],
                      reference_records: Sequence[Record | dict[str, Any]] | None) -> dict[str, Any]:
    """`res` as `results_from_records` gives it from these records, under the version, models,
    parameters and selection `res` itself records: what a submitted results file must equal."""
    dumped = res.model_dump(mode="json")
    return results_from_records(
        get_version(res.benchmark_version), model_records, reference_records, model=dumped["model"],
        reference=dumped["reference"], config=res.config, params_hash=res.params_hash, hashes=res.hashes,
        versions=res.versions, n_probes=res.n_probes, selection=res.selection)


def write_results(path: Path, results: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_results(path: Path) -> Results:
    if not path.is_file():
        raise OrtBenchError(f"{path}: no such results file")
    try:
        return Results.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise OrtBenchError(f"{path}: not a valid results file ({str(exc).splitlines()[0]})") from None


def fmt(x: Any, digits: int = 3) -> str:
    """A number as every table shows it: `digits` decimals, "—" for a missing one (None), anything
    that is not a float (a count, a name) as it is."""
    return "—" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _ci(row: dict[str, Any], key: str, ci_prefix: str | None = None) -> str:
    """`row[key]` with its bootstrap CI, read from `{ci_prefix}ci_low/high` (default prefix `{key}_`)."""
    p = f"{key}_" if ci_prefix is None else ci_prefix
    lo, hi = row.get(f"{p}ci_low"), row.get(f"{p}ci_high")
    return f"{fmt(row.get(key))} [{fmt(lo, 2)}, {fmt(hi, 2)}]" if lo is not None else fmt(row.get(key))


def markdown_table(results: dict[str, Any]) -> str:
    """The per-form table a user reads first; with a reference, the bias headline under it."""
    lines: list[str] = []
    version = get_version(results.get("benchmark_version", BENCHMARK_VERSION))
    if results.get("comparison") and version.metrics == "v3":
        return _markdown_v3(results)
    if results.get("comparison"):
        c = results["comparison"]
        v2 = version.metrics == "v2"
        if v2:
            lines += ["| form | chance | known / total items (targets) | score M0 | score M (↓) | retained R (↓) | "
                      "efficacy E (↑) [95% CI] | ORT Prob M / M0 |", "|---|---|---|---|---|---|---|---|"]
        else:
            lines += ["| form | known / total | score M0 | score M (↓) | retained R (↓) | efficacy E (↑) [95% CI] |",
                      "|---|---|---|---|---|---|"]
        for r in results["forms"]:
            eff = _ci(r, "efficacy") if r.get("excluded") is None else f"— ({r['excluded']})"
            if v2:
                lines.append(f"| {r['form']} | {fmt(r['chance'], 3)} | {r['n_known']} / {r['n_total']} "
                             f"({r['n_targets_known']}) | {fmt(r['score_reference'])} | {fmt(r['score_model'])} | "
                             f"{fmt(r['retained_knowledge'])} | {eff} | {fmt(r['prob_model'])} / "
                             f"{fmt(r['prob_reference'])} |")
            else:
                lines.append(f"| {r['form']} | {r['n_known']} / {r['n_total']} | {fmt(r['score_reference'])} | "
                             f"{fmt(r['score_model'])} | {fmt(r['retained_knowledge'])} | {eff} |")
        lines += [
            "",
            f"- worst-form efficacy (↑): **{fmt(results['worst_form_efficacy'])}** ({results['worst_form']})",
            f"- form gap max E - min E (↓): {fmt(results['form_gap'])}",
        ]
        if results.get("train_form_gap") is not None:
            lines.append(f"- E(train form) - WFE (↓): {fmt(results['train_form_gap'])}")
        lines += [
            f"- utility (↑): {fmt(results['utility'])} (neighbour retention {fmt(c.get('neighbour_retention'))}, "
            f"general retention {fmt(c.get('general_retention'))}); fluency {fmt(results.get('fluency'), 2)} bits",
            f"- ORT score (↑): **{fmt(results['ort_score'])}**",
            f"- {'items' if v2 else 'probes'} the reference knows: {c['n_known']} of {c['n_total']}",
        ]
        return "\n".join(lines)
    lines += ["| split | form | n | score [95% CI] |", "|---|---|---|---|"]
    for split, block in results["splits"].items():
        if not isinstance(block, dict):
            continue
        for r in block["forms"]:
            lines.append(f"| {split} | {r['form']} | {r['n']} | {_ci(r, 'mean', ci_prefix='')} |")
        lines.append(f"| {split} | **all** | {block['n']} | {_ci(block, 'mean', ci_prefix='')} |")
    lines.append(f"\nfluency: {fmt(results.get('fluency'), 2)} bits (n-gram entropy of free answers)")
    return "\n".join(lines)


def _markdown_v3(results: dict[str, Any]) -> str:
    """Benchmark v3's table: facts per form, efficacy with its interval, seen forms and the noise gap."""
    c = results["comparison"]
    unit = c.get("cluster_unit", "target")
    lines = [f"| form | chance | known / total items ({unit}s, facts) | score M0 | score M (↓) | "
             "efficacy E (↑) [95% CI] | vs train form p | ORT Prob M / M0 |", "|---|---|---|---|---|---|---|---|"]
    for r in results["forms"]:
        if r.get("excluded") is not None:
            eff = f"— ({r['excluded']})"
        else:
            seen = "" if r.get("in_headline", True) else f" (seen: {r['seen_probes']} trained prompts)"
            eff = _ci(r, "efficacy") + seen
        lines.append(f"| {r['form']} | {fmt(r['chance'], 3)} | {r['n_known']} / {r['n_total']} "
                     f"({r['n_clusters_known']}, {r['n_facts_known']}) | {fmt(r['score_reference'])} | "
                     f"{fmt(r['score_model'])} | {eff} | {fmt(r.get('p_vs_train_form'), 3)} | "
                     f"{fmt(r['prob_model'])} / {fmt(r['prob_reference'])} |")
    noise = c.get("noise_gap") or {}
    lines += [
        "",
        f"- worst-form efficacy (↑): **{_ci(c, 'worst_form_efficacy')}** ({results['worst_form']})",
        f"- form gap max E - min E (↓): {_ci(c, 'form_gap')}"
        + (f"; noise alone gives {fmt(noise.get('gap_noise_median'))} (95th percentile "
           f"{fmt(noise.get('gap_noise_q95'))}), p = {fmt(noise.get('p_value'), 3)}" if noise else ""),
    ]
    if results.get("train_form_gap") is not None:
        lines.append(f"- E(train form, held-out half) - WFE (↓): {fmt(results['train_form_gap'])}")
    if c.get("seen_forms"):
        lines.append(f"- left out as seen (evaluated probes holding a trained prompt): "
                     f"{', '.join(f'{f} ({n})' for f, n in c['seen_forms'].items())}")
    if c.get("protocol") == ONE_PER_TARGET:
        lines.append(f"- one checkpoint per target ({len(c.get('per_target') or {})}): each target's forms scored on "
                     "its own checkpoint; utility, fluency and ORT are means over the checkpoints (no interval)")
    if c.get("few_targets"):
        lines.append(f"- {c['n_targets']} target(s) only: intervals over facts, not targets (flagged)")
    lines += [
        f"- utility (↑): {_ci(c, 'utility')} (neighbour retention {fmt(c.get('neighbour_retention'))}, "
        f"general retention {fmt(c.get('general_retention'))})",
        f"- fluency distance from the reference (↓): {fmt(c.get('fluency_distance'), 2)} bits "
        f"({fmt(c.get('fluency'), 2)} vs {fmt(c.get('fluency_reference'), 2)})",
        f"- ORT score (↑): **{_ci(c, 'ort_score')}**",
        f"- items the reference knows: {c['n_known']} of {c['n_total']}",
    ]
    return "\n".join(lines)
