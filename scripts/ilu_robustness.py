"""Robustness of ILU to fine-tuning, per form: the protocol of the ILU paper (Wang et al. 2025,
"Invariance Makes LLM Unlearning Resilient Even to Unanticipated Downstream Fine-Tuning",
arXiv:2506.01339) on the embedded model, scored per form on the forms it can measure there.

Protocol
- Configs `npo`, `ilu-npo` (ILU over NPO), `rmu`, `ilu-rmu` (ILU over RMU), each for every seed
  (`--seeds`, default 0 1 2): the same budget for all, `--steps` AdamW steps of 4 forget + 4 retain
  examples (qa form) at `--lr` (RMU and ILU over RMU at `--rmu-lr`), seed = the seed; ILU's invariance
  penalty is computed on the `math` environment (`--ilu-envs`, ILU's default) with ILU's default
  weight; RMU's steering coefficient, retain weight and layer are `--rmu-c` (100: RMU's published 6.5
  is for a 7B model's activations), `--rmu-alpha`, `--rmu-layer`. Each unlearns `--targets` from the
  original model with `ort_bench.unlearning.unlearn.unlearn`.
- Three attacks on every unlearned model, `--attack-steps` steps each (lr `--attack-lr`, linear
  decay, seed = the seed): fine-tuning on `math` (the environment ILU saw), fine-tuning on
  `sentiment` (one it did not see), and relearning on `--relearn-samples` forget qa examples of the
  targets. Each attack keeps `--checkpoints` evenly spaced states of its one run (`save_at`: the
  learning-rate schedule is the full run's), the last being the final model; with the unlearned model
  itself as step 0 that is `--checkpoints` + 1 points per attack (default 2: steps 0, 10, 20).
- Every point is scored with `ort_bench.scoring.evaluate.evaluate` against the original model (train form qa)
  on one fixed probe selection (`--forms`, `--limit`, `--splits`: the five forms the 135M model knows
  enough of for these targets, 12 forget items each, of which the original knows about 7-9 from 3-4
  targets (read off the reference records of runs/exp-v2); forget split only, utility is not scored);
  the original is scored once (`OUT/base-eval`) and its records reused.
- Robust efficacy of a form = mean over the points of the efficacy E_f (`results.json`, `forms[].
  efficacy`); worst-form robust efficacy = min over the measurable forms. Forms without an efficacy
  (too few known items: see `docs/VALIDITY.md`) are left out and listed with the reason. Reported per
  config x attack: mean and standard deviation over seeds, and the curve (mean over seeds per step) of
  each form's and the worst form's efficacy. Tables on stdout and in `OUT/ilu_robustness.md`, every
  number in `OUT/ilu_robustness.json`.

Reproduce (resumable: finished models and scores are found by their cards and `results.json` and
skipped, after a check that they were made with the same options; run it again after a stop).
`--threads 1` leaves the other core to another process; `--table` reads the runs that the other
options (the same as the run's) describe:

    nohup .venv/bin/python scripts/ilu_robustness.py --out runs/ilu-robustness --threads 1 \\
        > runs/ilu-robustness.log 2>&1 &
    tr '\\r' '\\n' < runs/ilu-robustness.log | grep '^\\[' | tail     # where it is
    .venv/bin/python scripts/ilu_robustness.py --out runs/ilu-robustness --table   # tables of what is finished

Cost, measured (docs/RESULTS.md): 3 seeds x 4 configs, each 7 scored points of 60 probes, 3 attacks of
20 steps and one unlearning run, took about 1 hour 50 minutes on the 2-core machine as four
single-thread processes (`--configs`/`--seeds` split them; mostly scoring).

Disk: an attacked checkpoint of the embedded model is about 0.5 GB; once a checkpoint is scored its
weight files are deleted (its card, config and tokenizer stay) unless `--keep-weights`. The unlearned
models are kept.

Layout: `OUT/base-eval`, `OUT/seed-S/CONFIG/model` (unlearned), `OUT/seed-S/CONFIG/eval-step-0`,
`OUT/seed-S/CONFIG/ATTACK/model` (final; intermediate states in `model/step-N`) and
`OUT/seed-S/CONFIG/ATTACK/eval-step-N`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ort_bench import api
from ort_bench.models.checkpoint import ATTACK_CARD, UNLEARN_CARD, has_card

CONFIGS = ("npo", "ilu-npo", "rmu", "ilu-rmu")
ATTACKS = ("finetune-math", "finetune-sentiment", "relearn")
TARGETS = "william_shakespeare,japan,france,isaac_newton"
# The forms the embedded model knows enough of for the default targets to get an efficacy on a small
# selection (docs/VALIDITY.md; multi_hop has too few known items per target, the other forms none).
FORMS = "qa,qa_paraphrase,cloze,reverse,adversarial"


def _list(value: str) -> list[str]:
    return [v for v in value.replace(",", " ").split() if v]


def _flat(values: list[str]) -> list[str]:
    return [v for value in values for v in _list(value)]


def checkpoint_steps(attack_steps: int, checkpoints: int) -> list[int]:
    """`checkpoints` evenly spaced steps in 1..attack_steps, the last being attack_steps."""
    if attack_steps < 1 or not 1 <= checkpoints <= attack_steps:
        raise SystemExit(f"error: --checkpoints must be in 1..--attack-steps ({attack_steps}), got {checkpoints}")
    return sorted({(2 * k * attack_steps + checkpoints) // (2 * checkpoints) for k in range(1, checkpoints + 1)})


def method_config(config: str, args: argparse.Namespace, seed: int) -> tuple[str, Any]:
    """(method, config object) of one of CONFIGS."""
    from ort_bench.unlearning.methods import make_config

    train = {"max_steps": args.steps, "seed": seed, "batch_size": 4, "retain_batch_size": 4}
    rmu = {**train, "lr": args.rmu_lr, "steering_coeff": args.rmu_c, "alpha": args.rmu_alpha,
           "layer": args.rmu_layer}
    ilu = {"ilu_envs": list(args.ilu_envs)}
    if config == "npo":
        return "npo", make_config("npo", **train, lr=args.lr)
    if config == "rmu":
        return "rmu", make_config("rmu", **rmu)
    if config == "ilu-npo":
        return "ilu", make_config("ilu", {**ilu, "base_method": "npo"}, **train, lr=args.lr)
    if config == "ilu-rmu":
        return "ilu", make_config("ilu", {**ilu, "base_method": "rmu"}, **rmu)
    raise SystemExit(f"error: unknown config {config!r} (choose from {', '.join(CONFIGS)})")


class Log:
    """One line per step of the experiment, flushed, with the time since the start."""

    def __init__(self, total: int):
        self.t0 = time.perf_counter()
        self.total = total
        self.done = 0

    def __call__(self, what: str, count: bool = True) -> None:
        if count:
            self.done += 1
        elapsed = time.perf_counter() - self.t0
        stamp = time.strftime("%H:%M:%S")
        n = f"{self.done}/{self.total} " if count else ""
        print(f"[{stamp} +{elapsed / 60:.1f} min] {n}{what}", flush=True)


def _check_selection(results_path: Path, expected: dict[str, Any]) -> None:
    """An existing score must be of this run's probe selection (else another --out is needed)."""
    sel = json.loads(results_path.read_text())["selection"]
    for key, value in expected.items():
        if sel.get(key) != value:
            raise SystemExit(f"error: {results_path}: scored with {key}={sel.get(key)!r}, this run asks for "
                             f"{value!r}; use another --out")


def _check_card(card_path: Path, key: str, expected: Any, subset: bool = False) -> None:
    """A finished model must have been made as this run asks (`subset`: only the keys of `expected`)."""
    got = json.loads(card_path.read_text()).get(key)
    if subset and isinstance(got, dict):
        got = {k: got.get(k) for k in expected}
    if got != expected:
        if isinstance(got, dict) and isinstance(expected, dict):
            keys = sorted(k for k in {*got, *expected} if got.get(k) != expected.get(k))
            got, expected = {k: got.get(k) for k in keys}, {k: expected.get(k) for k in keys}
        raise SystemExit(f"error: {card_path}: made with {key} {got}, this run asks for {expected}; "
                         "use another --out")


def _prune(model_dir: Path) -> None:
    """Delete a scored checkpoint's weights (top level only; step folders are pruned on their own)."""
    for f in model_dir.glob("*.safetensors"):
        f.unlink()


def run(args: argparse.Namespace) -> None:
    import torch


    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    targets = list(args.targets)
    steps = checkpoint_steps(args.attack_steps, args.checkpoints)
    save_at = tuple(s for s in steps if s < args.attack_steps)
    ecfg = api.EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    common = {"targets": targets, "forms": list(args.forms), "splits": list(args.splits), "limit": args.limit,
              "config": ecfg, "progress": True}
    selection = {"targets": targets, "forms": list(args.forms), "splits": list(args.splits), "limit": args.limit}
    per_config = 1 + 1 + len(ATTACKS) * (1 + len(steps))
    log = Log(1 + len(args.seeds) * len(args.configs) * per_config)
    log(f"torch threads: {torch.get_num_threads()}; model {args.model}; targets {', '.join(targets)}; "
        f"attack checkpoints at steps 0, {', '.join(map(str, steps))}", count=False)

    base = out / "base-eval"
    log(f"scoring the original model -> {base}")
    if (base / "results.json").exists():
        _check_selection(base / "results.json", selection)
    api.evaluate(args.model, base, **common)  # resumes; with every record present it only rewrites results

    def score(model_dir: Path, eval_dir: Path, what: str, prune: bool) -> None:
        if (eval_dir / "results.json").exists():
            _check_selection(eval_dir / "results.json", selection)
            log(f"{what}: already scored ({eval_dir})")
        else:
            log(f"{what}: scoring {model_dir}")
            api.evaluate(str(model_dir), eval_dir, reference=args.model, train_form="qa", reuse=[base], **common)
        if prune and not args.keep_weights:
            _prune(model_dir)

    for seed in args.seeds:
        for config in args.configs:
            method, cfg = method_config(config, args, seed)
            root = out / f"seed-{seed}" / config
            model = root / "model"
            tag = f"seed {seed} {config}"
            if has_card(model, UNLEARN_CARD):
                _check_card(model / UNLEARN_CARD, "hyperparameters", cfg.to_dict())
                log(f"{tag}: already unlearned ({model})")
            else:
                log(f"{tag}: unlearning with {method} ({args.steps} steps) -> {model}")
                api.unlearn(method, args.model, targets, model, train_form="qa", config=cfg, progress=True)
            score(model, root / "eval-step-0", f"{tag} step 0 (unlearned)", prune=False)
            for attack in ATTACKS:
                adir = root / attack / "model"
                atag = f"{tag} {attack}"
                batch_size = 4 if attack == "relearn" else 8  # the CLI's defaults
                if has_card(adir, ATTACK_CARD):
                    card = adir / ATTACK_CARD
                    _check_card(card, "hyperparameters", {"steps": args.attack_steps, "lr": args.attack_lr,
                                                          "seed": seed, "batch_size": batch_size}, subset=True)
                    _check_card(card, "intermediate_checkpoints", {f"step-{n}": n for n in save_at} or None)
                    log(f"{atag}: already attacked ({adir})")
                else:
                    for stale in adir.parent.glob(f".{adir.name}.tmp-*"):  # left by a killed attack
                        log(f"{atag}: removing {stale} (an unfinished attack's)", count=False)
                        shutil.rmtree(stale, ignore_errors=True)
                    log(f"{atag}: attacking for {args.attack_steps} steps, keeping steps "
                        f"{', '.join(map(str, save_at)) or 'none'} -> {adir}")
                    kw = {"lr": args.attack_lr, "seed": seed, "batch_size": batch_size, "progress": True,
                          "save_at": save_at}
                    if attack == "relearn":
                        api.relearn_attack(str(model), targets, args.relearn_samples, adir, steps=args.attack_steps,
                                       form="qa", exclude_probe_ids=_scored_probe_ids(base), **kw)
                    else:
                        api.finetune_attack(str(model), attack.split("-", 1)[1], args.attack_steps, adir, **kw)
                for n in steps:
                    ckpt = adir if n == args.attack_steps else adir / f"step-{n}"
                    score(ckpt, root / attack / f"eval-step-{n}", f"{atag} step {n}", prune=True)
        report(args)  # the tables so far, after every seed
    log("done", count=False)


# ----------------------------------------------------------------------------- tables


def _efficacies(results_path: Path) -> tuple[dict[str, float | None], dict[str, str]]:
    """Per form: E_f (None where the form has no efficacy), and why a form has none."""
    res = json.loads(results_path.read_text())
    eff = {f["form"]: f.get("efficacy") for f in res["forms"]}
    why = {f["form"]: f.get("excluded") or "no efficacy" for f in res["forms"] if f.get("efficacy") is None}
    return eff, why


def _scored_probe_ids(eval_dir: Path) -> set[str]:
    from ort_bench.scoring.records import load_records

    return {r["probe_id"] for r in load_records(eval_dir / "records.jsonl", repair=False).values()}


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Every finished (config, attack, seed): its curve, robust efficacy per form and worst form; and
    the mean and standard deviation over seeds."""
    out = Path(args.out)
    steps = [0, *checkpoint_steps(args.attack_steps, args.checkpoints)]
    forms_seen: set[str] = set()
    not_measurable: dict[str, str] = {}
    runs: dict[str, dict[str, Any]] = {}
    for config in args.configs:
        for attack in ATTACKS:
            per_seed: dict[int, dict[str, Any]] = {}
            for seed in args.seeds:
                root = out / f"seed-{seed}" / config
                paths = [root / "eval-step-0" / "results.json",
                         *(root / attack / f"eval-step-{n}" / "results.json" for n in steps[1:])]
                if not all(p.exists() for p in paths):
                    continue
                curves: dict[str, list[float | None]] = {}
                for i, p in enumerate(paths):
                    eff, why = _efficacies(p)
                    forms_seen.update(eff)
                    for f, reason in why.items():
                        not_measurable.setdefault(f, reason)
                    for f, e in eff.items():
                        curves.setdefault(f, [None] * len(paths))[i] = e
                measurable = sorted(f for f, c in curves.items() if all(e is not None for e in c))
                for f, c in curves.items():
                    if f not in measurable and any(e is not None for e in c):
                        not_measurable[f] = f"an efficacy at only {sum(e is not None for e in c)} of {len(c)} points"
                robust = {f: statistics.fmean(curves[f]) for f in measurable}
                worst_curve = [min(curves[f][i] for f in measurable) if measurable else None
                               for i in range(len(paths))]
                worst = min(measurable, key=lambda f: (robust[f], f)) if measurable else None
                entry: dict[str, Any] = {"steps": steps, "efficacy": curves, "worst_form_efficacy": worst_curve,
                                         "robust_efficacy": robust, "robust_worst_form": worst,
                                         "robust_worst_form_efficacy": robust[worst] if worst else None}
                card = root / attack / "model" / ATTACK_CARD
                if attack == "relearn" and card.exists():  # are the relearned examples among the scored ones?
                    ids = json.loads(card.read_text())["data"].get("probe_ids", [])
                    entry["relearn_probe_ids"] = ids
                    entry["relearn_probes_scored"] = len(set(ids) & _scored_probe_ids(paths[0].parent))
                per_seed[seed] = entry
            if not per_seed:
                continue
            measured = sorted({f for e in per_seed.values() for f in e["robust_efficacy"]})
            summary = {
                "seeds": sorted(per_seed),
                "robust_efficacy": {f: _stats([e["robust_efficacy"][f] for e in per_seed.values()
                                               if f in e["robust_efficacy"]]) for f in measured},
                "robust_worst_form_efficacy": _stats([e["robust_worst_form_efficacy"] for e in per_seed.values()
                                                      if e["robust_worst_form_efficacy"] is not None]),
                "robust_worst_form": {str(s): e["robust_worst_form"] for s, e in per_seed.items()},
                "curve": {
                    **{f: [_stats([e["efficacy"][f][i] for e in per_seed.values()
                                   if e["efficacy"].get(f) and e["efficacy"][f][i] is not None])["mean"]
                           for i in range(len(steps))] for f in measured},
                    "worst_form": [_stats([e["worst_form_efficacy"][i] for e in per_seed.values()
                                           if e["worst_form_efficacy"][i] is not None])["mean"]
                                   for i in range(len(steps))],
                },
            }
            runs.setdefault(config, {})[attack] = {"per_seed": {str(s): e for s, e in per_seed.items()},
                                                   "summary": summary}
    measured_forms = sorted({f for c in runs.values() for a in c.values() for f in a["summary"]["robust_efficacy"]})
    return {
        "protocol": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                     if k not in ("table",)},
        "checkpoint_steps": steps,
        "forms_scored": sorted(forms_seen),
        "forms_measured": measured_forms,
        "forms_not_measurable": {f: r for f, r in sorted(not_measurable.items()) if f not in measured_forms},
        "runs": runs,
    }


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pm(s: dict[str, Any], n: int) -> str:
    """mean ± sd, and the number of seeds where it is not the row's `n`."""
    if s["mean"] is None:
        return "—"
    return (_fmt(s["mean"]) + (f" ± {_fmt(s['sd'])}" if s["sd"] is not None else "")
            + (f" (n={s['n']})" if s["n"] != n else ""))


def tables(data: dict[str, Any]) -> str:
    runs, forms, steps = data["runs"], data["forms_measured"], data["checkpoint_steps"]
    p = data["protocol"]
    lines = [f"# ILU robustness: robust efficacy per form (model {p['model']})", "",
             f"Targets {', '.join(p['targets'])}; {p['steps']} unlearning steps; attacks of {p['attack_steps']} "
             f"steps scored at steps {', '.join(map(str, steps))}; probes: forms {', '.join(p['forms'])}, limit "
             f"{p['limit']}, splits {', '.join(p['splits'])}. Robust efficacy of a form = mean of its efficacy over "
             "those steps; mean ± standard deviation over seeds (n seeds).", ""]
    if not runs:
        lines.append("No finished (config, attack, seed) yet.")
    if data["forms_not_measurable"]:
        lines += ["Forms without an efficacy, left out: " + "; ".join(
            f"{f} ({r})" for f, r in data["forms_not_measurable"].items()) + ".", ""]
    if runs and not forms:
        lines += ["No form has an efficacy on this model and selection: the original knows too few items "
                  "(every robust efficacy below is —).", ""]
    overlap = [f"{c}/seed {sd}: {e['relearn_probes_scored']} of {len(e['relearn_probe_ids'])}"
               for c, a in runs.items() for sd, e in a.get("relearn", {}).get("per_seed", {}).items()
               if "relearn_probes_scored" in e]
    if overlap:
        lines += ["Relearned qa examples that are also scored probes (they count in the qa efficacy): "
                  + "; ".join(overlap) + ".", ""]
    if runs:
        head = ["config", "attack", "n", *forms, "worst form (↑)", "worst forms"]
        lines += ["## Robust efficacy (↑)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for config, by_attack in runs.items():
            for attack, r in by_attack.items():
                s = r["summary"]
                worst_names = ", ".join(sorted({w for w in s["robust_worst_form"].values() if w})) or "—"
                n = len(s["seeds"])
                cells = [config, attack, str(n),
                         *(_pm(s["robust_efficacy"][f], n) if f in s["robust_efficacy"] else "—" for f in forms),
                         _pm(s["robust_worst_form_efficacy"], n), worst_names]
                lines.append("| " + " | ".join(cells) + " |")
        for name in ["worst_form", *forms]:
            title = "worst-form efficacy (min over forms at each step)" if name == "worst_form" else \
                f"efficacy on {name}"
            head = ["config", "attack", *(f"step {n}" for n in steps)]
            lines += ["", f"## Curve: {title}, mean over seeds", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            for config, by_attack in runs.items():
                for attack, r in by_attack.items():
                    curve = r["summary"]["curve"].get(name) or [None] * len(steps)
                    lines.append("| " + " | ".join([config, attack, *(_fmt(x) for x in curve)]) + " |")
    return "\n".join(lines)


def report(args: argparse.Namespace) -> str:
    data = collect(args)
    md = tables(data)
    out = Path(args.out)
    if out.is_dir():
        (out / "ilu_robustness.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        (out / "ilu_robustness.md").write_text(md + "\n", encoding="utf-8")
    print(md, flush=True)
    return md


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from ort_bench.cli import _limit
    from ort_bench.unlearning.methods import make_config

    rmu = make_config("rmu")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/ilu-robustness")
    ap.add_argument("--seeds", nargs="+", default=["0", "1", "2"], help="seeds (space or comma list)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), help=f"of {', '.join(CONFIGS)}")
    ap.add_argument("--targets", nargs="+", default=[TARGETS], help="target ids (space or comma list)")
    ap.add_argument("--steps", type=int, default=30, help="unlearning optimiser steps (every config)")
    ap.add_argument("--lr", type=float, default=5e-5, help="learning rate of npo and ilu-npo")
    ap.add_argument("--rmu-lr", type=float, default=rmu.lr, help="learning rate of rmu and ilu-rmu")
    ap.add_argument("--rmu-c", type=float, default=100.0, help="RMU steering coefficient")
    ap.add_argument("--rmu-alpha", type=float, default=rmu.alpha, help="RMU retain weight")
    ap.add_argument("--rmu-layer", type=int, default=rmu.layer, help="RMU layer")
    ap.add_argument("--ilu-envs", nargs="+", default=["math"], help="ILU's penalty environments")
    ap.add_argument("--attack-steps", type=int, default=20, help="steps of every attack")
    ap.add_argument("--attack-lr", type=float, default=2e-5, help="learning rate of every attack")
    ap.add_argument("--checkpoints", type=int, default=2,
                    help="evenly spaced attack steps scored, the last being the final model (plus step 0)")
    ap.add_argument("--relearn-samples", type=int, default=8, help="forget qa examples of the relearn attack")
    ap.add_argument("--forms", nargs="+", default=[FORMS], help="forms scored (space or comma list)")
    ap.add_argument("--splits", nargs="+", default=["forget"], help="splits scored (forget: efficacy only)")
    ap.add_argument("--limit", type=_limit, default="forget=60", help="items per split (N or split=N,...)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=32, help="scoring batch size")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    ap.add_argument("--keep-weights", action="store_true", help="keep the attacked checkpoints' weights")
    ap.add_argument("--table", action="store_true", help="only print the tables of what is finished")
    ap.add_argument("--model", default="embedded", help=argparse.SUPPRESS)  # a tiny model, to test the plumbing
    args = ap.parse_args(argv)
    try:
        args.seeds = [int(s) for s in _flat(args.seeds)]
    except ValueError:
        ap.error(f"--seeds: whole numbers, got {' '.join(args.seeds)}")
    for name in ("configs", "targets", "forms", "splits", "ilu_envs"):
        setattr(args, name, _flat(getattr(args, name)))
    bad = [c for c in args.configs if c not in CONFIGS]
    if bad:
        ap.error(f"--configs: unknown {bad[0]!r} (choose from {', '.join(CONFIGS)})")
    for name in ("steps", "attack_steps", "relearn_samples"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    checkpoint_steps(args.attack_steps, args.checkpoints)
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    if not args.table:
        from ort_bench.errors import OrtBenchError

        try:
            run(args)
        except OrtBenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
