"""Which metrics module defines a benchmark version's numbers (`BenchmarkVersion.metrics` names it):
the directions, the model-vs-reference comparison and the one-model summary, dispatched in one place
for `results` and `per_target` alike."""

from __future__ import annotations

from typing import Any

from ort_bench.benchmark import BenchmarkVersion


def version_directions(version: BenchmarkVersion) -> dict[str, str]:
    """The direction of every number `version`'s results report (`version.metrics` names its module)."""
    if version.metrics == "v1":
        from ort_bench.scoring.metrics import DIRECTIONS

        return DIRECTIONS
    if version.metrics == "v2":
        from ort_bench.scoring.metrics_v2 import DIRECTIONS_V2

        return DIRECTIONS_V2
    from ort_bench.scoring.metrics_v3 import DIRECTIONS_V3

    return DIRECTIONS_V3


def version_compare(version: BenchmarkVersion, model_records: Any, reference_records: Any,
                    **kw: Any) -> dict[str, Any]:
    """The comparison block of results.json under `version`: probe-pooled (`metrics.compare`, v1), items
    over targets (`metrics_v2.compare_v2`), or v3's (`metrics_v3.compare_v3`: seen forms, noise gap,
    intervals with measured coverage, few-target efficacy)."""
    if version.metrics == "v1":
        from ort_bench.scoring.metrics import compare

        kw.pop("seen_forms", None)
        return compare(model_records, reference_records, **kw)
    if version.metrics == "v2":
        from ort_bench.scoring.metrics_v2 import compare_v2

        kw.pop("seen_forms", None)
        return compare_v2(model_records, reference_records, version=version, **kw)
    from ort_bench.scoring.metrics_v3 import compare_v3

    return compare_v3(model_records, reference_records, version=version, **kw)


def version_summarize(version: BenchmarkVersion, records: Any, **kw: Any) -> dict[str, Any]:
    """The per-split summary of one model alone under `version` (items, not probes, from v2 on)."""
    from ort_bench.scoring import metrics

    if version.metrics == "v1":
        return metrics.summarize_single(records, **kw)
    from ort_bench.scoring.metrics_v2 import items_of

    return metrics.summarize_single(items_of(records, version), **kw)
