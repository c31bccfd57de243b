"""Interval widths of docs/VALIDITY.md: per form, the 95% interval of the efficacy when the bootstrap
resamples targets (v2) and when it resamples items as if independent (v1's way), on the same records.

    python scripts/interval_widths.py runs/exp/npo-eval [runs/exp/ga-eval ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from ort_bench.benchmark import V2
from ort_bench.scoring import metrics
from ort_bench.scoring.metrics_v2 import compare_v2, items_of


def widths(run: Path) -> dict[str, tuple[float | None, float | None]]:
    recs = [json.loads(line) for line in (run / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    m = pd.DataFrame([r for r in recs if r["role"] == "model"])
    r = pd.DataFrame([r for r in recs if r["role"] == "reference"])
    by_target = {f["form"]: f for f in compare_v2(m, r, version=V2)["forms"]}
    th = {s: V2.threshold(s) for s in V2.scorers}
    by_item = {f["form"]: f for f in metrics.compare(items_of(m, V2), items_of(r, V2), thresholds=th)["forms"]}
    out = {}
    for form, row in by_target.items():
        if row["efficacy"] is None:
            continue
        w = [None if x["efficacy_ci_low"] is None else x["efficacy_ci_high"] - x["efficacy_ci_low"]
             for x in (row, by_item[form])]
        out[form] = (w[0], w[1])
    return out


def main(paths: list[str]) -> None:
    for p in paths:
        print(f"{p}: form: width over targets / width over items")
        for form, (t, i) in widths(Path(p)).items():
            print(f"  {form}: {t:.2f} / {i:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
