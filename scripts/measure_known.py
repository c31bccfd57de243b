"""How much of the default knowledge base a model knows, per form and per target (for data/README.md).

    ort-bench evaluate --model embedded --splits forget --out runs/known   # all forms (or --forms qa)
    python scripts/measure_known.py runs/known/records.jsonl [forget|neighbour|utility]

Counted per item (one probe, a true/false pair, the rotations of an MCQ: `ort_bench.scoring.metrics_v2.items_of`):
an item is known when its score passes the current benchmark version's threshold for its scorer; a
fact counts as known in a form when any of that form's templates is known.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import pandas as pd

from ort_bench.benchmark import CURRENT
from ort_bench.scoring.metrics_v2 import items_of


def main(path: str, split: str = "forget") -> None:
    recs = [json.loads(line) for line in open(path, encoding="utf-8")]
    recs = [r for r in recs if r["split"] == split and r.get("role", "model") == "model"]
    facts_of = {r.get("item_id") or r["probe_id"]: r["fact_ids"] for r in recs}
    items = items_of(pd.DataFrame(recs), CURRENT)
    recs = [{**row, "fact_ids": facts_of[row["probe_id"]]} for row in items.to_dict("records")]
    fact_known: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)  # (form, target) -> fact -> known
    probes = defaultdict(lambda: [0, 0])
    for r in recs:
        known = r["primary"] >= CURRENT.threshold(r["scorer"])
        probes[r["form"]][0] += known
        probes[r["form"]][1] += 1
        fact = r["fact_ids"][-1]  # the fact asked about (a two-hop probe lists its bridge first)
        key = (r["form"], r["target"])
        fact_known[key][fact] = fact_known[key].get(fact, False) or known
    print(f"{split} split, {len({r['target'] for r in recs})} targets")
    print("| form | items known / scored | facts known / scored | targets with >= 3 known facts |")
    print("|---|---|---|---|")
    for form in sorted(probes):
        k, n = probes[form]
        facts = [v for (f, _), per in fact_known.items() if f == form for v in per.values()]
        targets = {t for (f, t), per in fact_known.items() if f == form and sum(per.values()) >= 3}
        print(f"| {form} | {k} / {n} ({k / n:.0%}) | {sum(facts)} / {len(facts)} | {len(targets)} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
