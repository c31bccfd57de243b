"""Are two runs' answers the same? Compares the records of a run with stored records of the same
model (by probe id): greedy outputs equal, and log-likelihood-based numbers (ORT's Prob, every option's
log-likelihood) within a tolerance. Issue 20's check that the fast `hf` path changed no answer:

    python benchmarks/same_answers.py runs/core-ref/records.jsonl \\
        leaderboards/v3/submissions/embedded-placebo/records.jsonl --role reference

Prints counts and the largest differences; exits 1 if an output differs or a likelihood is off.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ort_bench.scoring.records import load_records


def _load(path: str, role: str | None) -> dict[str, dict]:
    records = load_records(Path(path), repair=False, check=False).values()
    return {r["probe_id"]: r for r in records if role is None or r.get("role") == role}


def compare(new: dict[str, dict], old: dict[str, dict], tol: float) -> tuple[int, int, list[str], float]:
    """(probes compared, outputs equal, lines describing differences, largest log-likelihood difference)."""
    common = sorted(set(new) & set(old))
    same, diffs, worst = 0, [], 0.0
    for pid in common:
        a, b = new[pid], old[pid]
        if a["output"] == b["output"]:
            same += 1
        else:
            diffs.append(f"{pid} {a['form']}: {b['output']!r} -> {a['output']!r}")
        # Prob is exp(-mean NLL): compare it in nats
        lp = [(-math.log(max(a["prob"], 1e-300)), -math.log(max(b["prob"], 1e-300)))]
        lp += list(zip(a.get("choice_logprobs") or [], b.get("choice_logprobs") or [], strict=False))
        for x, y in lp:
            worst = max(worst, abs(x - y))
    return len(common), same, diffs, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("new", help="records.jsonl of the run to check")
    ap.add_argument("old", help="records.jsonl holding the same model's earlier answers")
    ap.add_argument("--role", default=None, help="only records of this role in OLD (model or reference)")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest log-likelihood difference allowed (nats)")
    args = ap.parse_args()
    new, old = _load(args.new, None), _load(args.old, args.role)
    n, same, diffs, worst = compare(new, old, args.tol)
    print(f"{n} probes in both; outputs equal {same}/{n}; largest log-likelihood difference {worst:.2e} nats "
          f"(Prob as mean NLL, option log-likelihoods)")
    for line in diffs[:20]:
        print("  differs:", line)
    sys.exit(0 if n and same == n and worst <= args.tol else 1)


if __name__ == "__main__":
    main()
