"""How many free answers of a run end at the generation limit (docs/VALIDITY.md, "Answers long enough").

    python scripts/answer_lengths.py runs/exp3/base-eval [--role reference]

An answer ends at the limit when the continuation holds no end of answer (`answers.cut_answer` with the
form's rule of the benchmark version) and its tokens (the scoring tokenizer's, without special tokens)
reach the record's `max_new_tokens`: the model was still on its answer when it was cut. Printed per
form and overall, with how many of the cut answers were scored "not known".
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ort_bench.answers import cut_answer
from ort_bench.benchmark import CURRENT
from ort_bench.models import load_tokenizer, resolve_model
from ort_bench.scoring.records import load_records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--role", default="reference")
    ap.add_argument("--model", default="embedded", help="the model whose tokenizer counts the tokens")
    args = ap.parse_args()
    tok = load_tokenizer(resolve_model(args.model))
    records = [r for r in load_records(args.run / "records.jsonl").values()
               if r["role"] == args.role and r["split"] == "forget" and r.get("max_new_tokens")]
    total, cut, cut_unknown = Counter(), Counter(), Counter()
    for r in records:
        n = len(tok(r["output"], add_special_tokens=False)["input_ids"])
        total[r["form"]] += 1
        ended = cut_answer(r["output"], CURRENT.end_of_answer(r["form"])) != r["output"]
        if not ended and n >= r["max_new_tokens"] - 1:  # decoding may merge the last token with the one before
            cut[r["form"]] += 1
            cut_unknown[r["form"]] += r["primary"] < 1
    print("| form | max new tokens | answers | at the limit | of those not known |\n|---|---|---|---|---|")
    limits = {r["form"]: r["max_new_tokens"] for r in records}
    for form in sorted(total):
        print(f"| {form} | {limits[form]} | {total[form]} | {cut[form]} | {cut_unknown[form]} |")
    n, c = sum(total.values()), sum(cut.values())
    print(f"| all | | {n} | {c} ({100 * c / max(n, 1):.1f}%) | {sum(cut_unknown.values())} |")


if __name__ == "__main__":
    main()
