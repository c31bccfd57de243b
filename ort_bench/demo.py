"""The main job on a fresh machine: unlearn a few targets from the embedded model with ROCR and
with one gradient method on a small budget, score every form against the original model, and
print the bias table (per-form efficacy, worst form, form gap, utility, ORT score)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from ort_bench import api
from ort_bench.benchmark import CURRENT
from ort_bench.models.checkpoint import UNLEARN_CARD, has_card

DEFAULT_TARGETS = ("france", "japan", "william_shakespeare")
# The benchmark's core tier drawn within the three targets: every fact of theirs in every form it
# renders in (a form needs 5 known items from 3 targets), 10 neighbour and 10 utility facts a form
DEFAULT_TIER = "core"


def bias_table(rows: dict[str, dict[str, Any]]) -> str:
    """One row per unlearned model: efficacy per form (↑), then the headline numbers."""
    forms = sorted({f["form"] for r in rows.values() for f in r["forms"]})
    head = ["model", *forms, "WFE (↑) [95% CI]", "worst form", "form gap (↓)", "gap p (noise)", "utility (↑)",
            "ORT (↑) [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        eff = {f["form"]: f["efficacy"] for f in r["forms"]}
        c = r.get("comparison") or {}
        noise = c.get("noise_gap") or {}

        def ci(key: str, c=c) -> str:
            return (f"{api.fmt(c.get(key), 2)} [{api.fmt(c.get(key + '_ci_low'), 2)}, "
                    f"{api.fmt(c.get(key + '_ci_high'), 2)}]")

        cells = [name, *(api.fmt(eff.get(f), 2) for f in forms), ci("worst_form_efficacy"),
                 str(r["worst_form"]), api.fmt(r["form_gap"], 2), api.fmt(noise.get("p_value"), 3),
                 api.fmt(r["utility"], 2), ci("ort_score")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(out: str | Path = "runs/demo", targets: tuple[str, ...] | list[str] = DEFAULT_TARGETS,
             gradient_method: str = "npo", steps: int = 12, lr: float = 5e-5,
             limit: int | dict[str, int] | None = None, tier: str | None = DEFAULT_TIER,
             progress: bool = True, baseline_method: str = "rocr", load: api.LoadOptions | None = None) -> str:
    """Unlearn with `baseline_method` (at its published settings) and `gradient_method` (at `lr`),
    `steps` steps each where a method trains. `lr` 5e-5 as in docs/RESULTS.md: at the published 1e-5
    a dozen CPU steps move nothing."""
    out = Path(out)
    t0 = time.perf_counter()
    models = {}
    load = load or api.LoadOptions()
    for method, config in ((baseline_method, api.make_config(baseline_method)),
                           (gradient_method, api.make_config(gradient_method, lr=lr))):
        ckpt = out / f"{method}-model"
        if not has_card(ckpt, UNLEARN_CARD):
            print(f"== unlearning {', '.join(targets)} with {method}", flush=True)
            # a training-free method's config ignores the step count (its `apply_overrides`)
            api.unlearn(method, "embedded", list(targets), ckpt, config=config, max_steps=steps, progress=progress,
                        load=load)
        models[method] = ckpt
    rows: dict[str, dict[str, Any]] = {}
    for method, ckpt in models.items():
        print(f"== scoring the {method} model and the original on every form", flush=True)
        earlier = [out / f"{m}-eval" for m in rows]  # the original's answers are scored once
        rows[method] = api.evaluate(str(ckpt), out / f"{method}-eval", reference="embedded", targets=list(targets),
                                    limit=limit, config=api.EvalConfig(**dataclasses.asdict(load), tier=tier),
                                    train_form="qa", progress=progress, reuse=earlier)
    table = bias_table(rows)
    print(f"\nForm-dependent bias of unlearning {', '.join(targets)} from SmolLM2-135M-Instruct "
          f"({time.perf_counter() - t0:.0f} s):\n")
    print(table)
    print(f"\n—: not measurable on this model (benchmark {CURRENT.name}, {tier} tier): the original knows fewer "
          f"than {CURRENT.min_known_items} sampled items of that form, from fewer than {CURRENT.min_known_targets} "
          "targets, or no more than chance explains (true/false pairs: it calls every statement false), so the "
          "form is left out of the worst form; the reason is in results.json. gap p: the chance that noise alone "
          "(every form with one efficacy) gives a form gap this large")
    print(f"per-form details: {out}/<method>-eval/results.json; records: {out}/<method>-eval/records.jsonl")
    return table
