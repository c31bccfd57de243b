"""The methods experiment of docs/RESULTS.md: every method unlearns the same targets (qa as the
training form) from the embedded model on the same budget; each model is scored on every form
against the original, then fine-tuned on the math environment and scored again (robust efficacy).

    python scripts/experiment.py --out runs/exp            # resumable: finished steps are skipped
    python scripts/experiment.py --out runs/exp --table    # only print the table from the results

Budget, the same for every gradient method: `--steps` AdamW steps of 4 forget + 4 retain examples
at `--lr`; a method's own settings are `--hp METHOD.NAME=VALUE` (repeatable; a method's `lr` there
beats `--lr`). By default RMU keeps its published lr and has its steering coefficient scaled to the
model's activations (`--hp rmu.steering_coeff=100`); ROCR is training-free (no steps, no lr). Every
command-line choice lands in the cards and results files, so the numbers can be traced back.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ort_bench import api
from ort_bench.cli import _limit
from ort_bench.scoring.checkpoint import ATTACK_CARD, UNLEARN_CARD, has_card
from ort_bench.unlearning.methods import in_table_order

# ten default targets of four kinds of which the embedded model knows 5 or more qa facts (data/README.md)
TARGETS = ("william_shakespeare", "isaac_newton", "hamlet", "pride_and_prejudice", "japan", "france", "paris",
           "london", "microsoft", "nasa")
# the experiment's own settings of some methods (--hp adds to them; a later value wins): RMU keeps its
# published lr whatever --lr says, and its steering coefficient is scaled to the 135M model's activations
DEFAULT_HP = ("rmu.lr=5e-5", "rmu.steering_coeff=100")


def parse_hp(items: list[str]) -> dict[str, dict[str, str]]:
    """METHOD.NAME=VALUE settings as {method: {name: value}} (values are checked by the config)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not (sep and dot and name) or method not in api.METHODS:
            raise SystemExit(f"--hp {item!r}: expected METHOD.NAME=VALUE with METHOD one of {', '.join(api.METHODS)}")
        out.setdefault(method, {})[name] = value
    return out


def method_config(method: str, args: argparse.Namespace) -> Any:
    """The shared budget (`--steps`, `--lr`) for a method that trains, its `--hp` settings on top."""
    own = parse_hp(args.hp).get(method, {})
    budget = {"max_steps": args.steps, "lr": args.lr} if api.METHODS[method].trains else {}
    return api.make_config(method, own or None, **{k: v for k, v in budget.items() if k not in own})


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    targets = list(args.targets)
    cfg = api.EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    common = {"targets": targets, "limit": args.limit, "config": cfg}
    base = out / "base-eval"
    t0 = time.perf_counter()
    print("== the original model", flush=True)
    api.evaluate("embedded", base, **common)
    for method in args.methods:
        model = out / f"{method}-model"
        if not has_card(model, UNLEARN_CARD):
            print(f"== unlearning with {method}", flush=True)
            api.unlearn(method, "embedded", targets, model, config=method_config(method, args))
        print(f"== scoring {method}", flush=True)
        api.evaluate(str(model), out / f"{method}-eval", reference="embedded", train_form="qa", reuse=[base], **common)
        attacked = out / f"{method}-math-model"
        if not has_card(attacked, ATTACK_CARD):
            print(f"== math fine-tuning attack on {method}", flush=True)
            api.finetune_attack(str(model), "math", args.attack_steps, attacked)
        print(f"== scoring {method} after the attack", flush=True)
        api.evaluate(str(attacked), out / f"{method}-math-eval", reference="embedded", train_form="qa", reuse=[base],
                 **common)
    print(f"experiment: {time.perf_counter() - t0:.0f} s", flush=True)


def table(out: Path, methods: list[str]) -> str:
    rows = {}
    for m in methods:
        paths = (out / f"{m}-eval" / "results.json", out / f"{m}-math-eval" / "results.json")
        if all(p.exists() for p in paths):
            rows[m] = [json.loads(p.read_text()) for p in paths]
    forms = sorted({f["form"] for r, _ in rows.values() for f in r["forms"]})
    head = ["method", *forms, "WFE (↑) [95% CI]", "worst form", "form gap (↓)", "E_qa − WFE", "utility (↑)",
            "mean E after math FT (↑)", "WFE after math FT (↑)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, (r, a) in rows.items():
        eff = {f["form"]: f["efficacy"] for f in r["forms"]}
        after = [f["efficacy"] for f in a["forms"] if f["efficacy"] is not None]
        c = r["comparison"]
        wfe = (f"{api.fmt(r['worst_form_efficacy'], 2)} [{api.fmt(c.get('worst_form_efficacy_ci_low'), 2)}, "
               f"{api.fmt(c.get('worst_form_efficacy_ci_high'), 2)}]")
        cells = [m, *(api.fmt(eff.get(f), 2) for f in forms), wfe, str(r["worst_form"]),
                 api.fmt(r["form_gap"], 2), api.fmt(r["train_form_gap"], 2), api.fmt(r["utility"], 2),
                 api.fmt(sum(after) / len(after) if after else None, 2), api.fmt(a["worst_form_efficacy"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_tables(out: Path, methods: list[str]) -> str:
    """The tables under the main one in docs/RESULTS.md: what there was to forget, per-form efficacy
    after the attack, utility and cost, ORT's Prob."""
    def load(name: str) -> dict | None:
        p = out / name / "results.json"
        return json.loads(p.read_text()) if p.exists() else None

    lines: list[str] = []
    first = next((r for m in methods if (r := load(f"{m}-eval"))), None)
    if first is None:
        return ""
    forms = [f["form"] for f in first["forms"]]
    lines += ["Known items of the original (targets), chance level per item:", "",
              "| " + " | ".join(forms) + " |", "|" + "---|" * len(forms),
              "| " + " | ".join(f"{f['n_known']} / {f['n_total']} ({f['n_targets_known']})" for f in first["forms"])
              + " |", "| " + " | ".join(api.fmt(f["chance"], 3) for f in first["forms"]) + " |", ""]
    scored = [f["form"] for f in first["forms"] if f["excluded"] is None]
    lines += ["After the math fine-tuning attack, per form (efficacy, 95% CI over targets):", "",
              "| method | " + " | ".join(scored) + " | WFE (form) |", "|---|" + "---|" * (len(scored) + 1)]
    for m in methods:
        a = load(f"{m}-math-eval")
        if a:
            eff = {f["form"]: f for f in a["forms"]}
            cells = [f"{api.fmt(eff[f]['efficacy'], 2)} [{api.fmt(eff[f]['efficacy_ci_low'], 2)}, "
                     f"{api.fmt(eff[f]['efficacy_ci_high'], 2)}]" for f in scored]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {api.fmt(a['worst_form_efficacy'], 2)} "
                         f"({a['worst_form']}) |")
    lines += ["", "Utility (retain-eval facts only) and cost:", "",
              "| method | neighbour retention | general retention | fluency (bits; original "
              f"{api.fmt(first['comparison']['fluency_reference'], 2)}) | method time |", "|---|---|---|---|---|"]
    for m in methods:
        r = load(f"{m}-eval")
        card = out / f"{m}-model" / UNLEARN_CARD
        secs = json.loads(card.read_text())["method_seconds"] if card.exists() else None
        if r:
            c = r["comparison"]
            lines.append(f"| {m} | {api.fmt(c['neighbour_retention'], 2)} | {api.fmt(c['general_retention'], 2)} | "
                         f"{api.fmt(c['fluency'], 2)} | {api.fmt(secs, 0)} s |")
    lines += ["", "ORT's Prob per form, model (original: first row):", "",
              "| method | " + " | ".join(forms) + " |", "|---|" + "---|" * len(forms),
              "| original | " + " | ".join(api.fmt(f["prob_reference"], 3) for f in first["forms"]) + " |"]
    for m in methods:
        r = load(f"{m}-eval")
        if r:
            lines.append(f"| {m} | " + " | ".join(api.fmt(f["prob_model"], 3) for f in r["forms"]) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/exp")
    ap.add_argument("--targets", nargs="+", default=list(TARGETS))
    ap.add_argument("--methods", nargs="+", default=in_table_order(), choices=sorted(api.METHODS))
    ap.add_argument("--steps", type=int, default=30, help="optimiser steps of every gradient method")
    ap.add_argument("--lr", type=float, default=5e-5,
                    help="learning rate of every gradient method (ILU: of its base) without an lr in --hp")
    ap.add_argument("--hp", action="append", default=list(DEFAULT_HP), metavar="METHOD.NAME=VALUE",
                    help="a method's hyperparameter (repeatable; e.g. rmu.alpha=12, rmu.layer=5); "
                         f"defaults: {' '.join(DEFAULT_HP)}")
    ap.add_argument("--attack-steps", type=int, default=10, help="math fine-tuning steps (batch 8, lr 2e-5)")
    ap.add_argument("--limit", type=_limit, default="forget=300,neighbour=80,utility=80",
                    help="probes per split, spread over forms and targets (N or split=N,...)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--table", action="store_true", help="only print the table of finished runs")
    args = ap.parse_args()
    if not args.table:
        run(args)
    print(table(Path(args.out), args.methods))
    print()
    print(detail_tables(Path(args.out), args.methods))


if __name__ == "__main__":
    main()
