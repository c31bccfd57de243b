"""Submit the runs of `scripts/experiment.py` to the current leaderboard (the entries of docs/RESULTS.md),
through `ort_bench.board.submit.submit`, as any submitter would, then rebuild every leaderboard.

    python scripts/submit_experiment.py --exp runs/exp3 [--methods rocr npo] [--replace] [--dry-run]

- `embedded-placebo`: the original fine-tuned for 10 steps on the unrelated sentiment environment,
  scored against the original: the floor every method is read against (benchmark v3; the original
  against itself, efficacy 0 by construction and without a checkpoint card, is no entry any more).
- `embedded-<method>`: each unlearned model (the core tier's targets) scored against the original. A model whose answers
  are the original's on at least `--same` of the items (it did not act) is not submitted: it would
  be an entry that measures nothing; the script says so.
- `--replace` first removes an existing entry of the same name (a method re-run under a changed
  definition: the entry is submitted again, not edited); without it an existing entry is an error.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ort_bench import api
from ort_bench.board.submit import submissions_dir

META = {
    "placebo": ("placebo: 10 steps of unrelated (sentiment) fine-tuning", None),
    "ga": ("GA", None),
    "graddiff": ("GradDiff", None),
    "npo": ("NPO", "https://arxiv.org/abs/2404.05868"),
    "simnpo": ("SimNPO", "https://arxiv.org/abs/2410.07163"),
    "rmu": ("RMU", "https://arxiv.org/abs/2403.03218"),
    "ilu": ("ILU over NPO (math)", None),
    "rocr": ("ROCR", None),
}


def unchanged_share(run: Path) -> float:
    """Share of free-answer probes on which the model's greedy answer is the reference's, word for word
    (likelihoods always move a little after any weight change; answers show whether it acted)."""
    recs = [json.loads(line) for line in (run / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    ref = {r["probe_id"]: r for r in recs if r["role"] == "reference"}
    model = [r for r in recs if r["role"] == "model" and r["scorer"] in ("rouge_l_recall", "answer_match")]
    same = sum(r["output"] == ref[r["probe_id"]]["output"] for r in model)
    return same / max(len(model), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp", default="runs/exp3")
    ap.add_argument("--date", default=None, help="submission date (default today, UTC)")
    ap.add_argument("--same", type=float, default=0.95, help="share of unchanged answers that means 'did not act'")
    ap.add_argument("--methods", nargs="+", default=list(META), choices=list(META), help="entries to submit")
    ap.add_argument("--replace", action="store_true", help="remove an existing entry of the same name first")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    exp = Path(args.exp)
    runs = {m: exp / f"{m}-eval" for m in META}
    for method, run in runs.items():
        if method not in args.methods:
            continue
        if not (run / "results.json").is_file():
            print(f"{method}: no finished run at {run}: skipped")
            continue
        if method != "placebo" and unchanged_share(run) >= args.same:
            print(f"{method}: free answers equal the original's on {unchanged_share(run):.0%} of the probes: the "
                  "method did not act; not submitted")
            continue
        label, link = META[method]
        existing = submissions_dir() / f"embedded-{method}"
        if args.replace and existing.is_dir() and not args.dry_run:
            shutil.rmtree(existing)
            print(f"{method}: removed the earlier entry {existing}")
        model_name = f"SmolLM2-135M-Instruct, {label}, core tier (docs/RESULTS.md)"
        out = api.submit(run, f"embedded-{method}", method=label, link=link, model_name=model_name, date=args.date,
                     dry_run=args.dry_run)
        print(json.dumps({k: out[k] for k in ("name", "worst_form_efficacy", "worst_form", "utility", "ort_score")}))
    if not args.dry_run:
        for built in api.build_all():
            print(f"built {built['out']}: {built['entries']} entries")


if __name__ == "__main__":
    main()
