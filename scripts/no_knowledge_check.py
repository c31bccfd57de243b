"""The no-knowledge check of docs/VALIDITY.md: a model with the embedded model's architecture and
tokenizer but random weights knows nothing, so every choice form must find no known item beyond
chance and define no efficacy.

    python scripts/no_knowledge_check.py --out runs/no-knowledge     # build the model, score it, print

The model is built from the embedded model's config with seeded random initialisation and saved
as an HF directory (`OUT/random-model`); it is then scored against itself on the choice forms.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ort_bench import api


def build_random_model(out: Path, seed: int) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ort_bench.models import load_tokenizer, resolve_model

    if (out / "config.json").is_file():
        return out
    embedded = resolve_model("embedded")
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(embedded.path)
    model = AutoModelForCausalLM.from_config(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    load_tokenizer(embedded).save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/no-knowledge")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=60, help="forget items per run (spread over targets)")
    args = ap.parse_args()
    out = Path(args.out)
    model = build_random_model(out / "random-model", args.seed)
    res = api.evaluate(str(model), out / "eval", reference=str(model), forms=["true_false", "mcq"], splits=["forget"],
                   limit=args.limit, config=api.EvalConfig(max_new_tokens=4))
    rows = [{k: r.get(k) for k in ("form", "chance", "n_known", "n_total", "n_targets_known", "efficacy", "excluded")}
            for r in res["forms"]]
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
