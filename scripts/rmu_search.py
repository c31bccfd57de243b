"""RMU on the embedded model: a small, budget-fixed search over its steering coefficient c, its
retain weight alpha and its layer, measured cheaply (teacher-forced NLLs and a few greedy answers)
instead of with the full evaluate pipeline.

Why: in the methods experiment (docs/RESULTS.md) RMU with layer 7, alpha 1200, lr 5e-5, c = 100 and
30 steps of 4 forget + 4 retain examples left 97% of the embedded model's answers unchanged. Is that
the method at 135M parameters on this budget, or the setting? The budget stays exactly that of the
other gradient methods (`--max-steps` 30 AdamW steps, batch 4 forget + 4 retain, seed 0, the shared
schedule); only RMU's own hyperparameters move, and the lr at most over {5e-5 (RMU's published
lr, the default), 2e-4}.

The search (coordinate-wise, resumable; every setting is unlearned in memory from the original
weights, which are restored afterwards, so no checkpoint is written):

    stage 1: c in {100, 300, 1000} x alpha in {12, 120, 1200}, layer 7, lr 5e-5      (9 runs)
    stage 2: layer in {5, 10} at stage 1's (c, alpha)                               (2 runs)
    stage 3: lr 2e-4 at the best (c, alpha, layer) of stages 1-2                     (1 run)

What is measured per setting, before (the original model, once) and after:

    forget NLL     mean over examples of the per-token NLL of the gold answer (teacher forcing) on
                   the targets' `qa` forget probes: the unlearning training data itself
    held-out NLL   the same on the targets' `cloze` forget probes (same facts, a form not trained on)
    retain NLL     the same on the retain-eval half (neighbour + utility `qa` probes, `retain="eval"`:
                   facts no method sees), half neighbour, half utility
    Prob           ORT's Prob beside each: the mean over examples of exp(-per-token NLL)
    changed        fraction of greedy answers (24 new tokens) to 40 forget `qa` probes that differ
                   from the original model's; `gold`: the fraction of answers containing a gold answer
                   (case-insensitive)

Each NLL set is a fixed sample of 120 probes (of 220 qa, 165 cloze, 748 retain-eval), spread
round-robin over targets and templates (`probes.spread`): all of them would cost about three minutes
per setting on one thread, which does not fit the search's 15-20 minutes (`--n-forget 0` etc. take
all). Training always uses all 220 qa forget examples and the retain-train data, as `unlearn` does.

NLLs use the training loop's own encoding (`encode_examples`, `collate`, `sequence_nll`); answers
come from the hf backend's `generate`, as in `ort-bench evaluate`.

The rule (fixed before any result was seen): among the settings whose retain NLL rises by less
than 0.5 nats (`--retain-budget`), choose the one with the largest held-out (cloze) forget NLL
increase; settings within 0.05 nats of the best are ties, broken by the smaller c, then the larger
alpha, then the smaller lr. Each stage picks the setting the next stage builds on by the same rule
(among that stage's and the earlier stages' settings); if no setting of a stage is within the retain
budget, the one with the smallest retain rise is carried on and the final table says that none
qualifies.

Reproduce (about 15-20 minutes on one CPU thread; rows are appended to OUT/rows.jsonl as each
setting finishes, a restarted run skips them):

    python scripts/rmu_search.py --out runs/rmu-search --threads 1
    python scripts/rmu_search.py --out runs/rmu-search --table        # the table from the rows

Plumbing check on a tiny model (`tests/conftest.py: build_tiny_model_dir(out, "llama")`):

    python scripts/rmu_search.py --model /tmp/tiny --out /tmp/rmu-tiny --max-steps 2 --settings 30:10:1:5e-5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

TARGETS = ("william_shakespeare", "isaac_newton", "hamlet", "pride_and_prejudice", "japan", "france", "paris",
           "london", "microsoft", "nasa")
STAGE1_C = (100.0, 300.0, 1000.0)
STAGE1_ALPHA = (12.0, 120.0, 1200.0)
BASE_LAYER = 7
STAGE2_LAYERS = (5, 10)
BASE_LR = 5e-5
STAGE3_LR = 2e-4
TIE_NATS = 0.05


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- data


def build_eval_sets(targets: list[str], n_generate: int, n_forget: int, n_cloze: int, n_retain: int):
    """The forget training data (exactly `unlearn`'s), and the probes the measures use: each set a
    sample spread round-robin over (split,) target and template (`probes.spread`; 0 = all)."""
    from ort_bench.kb.probes import spread
    from ort_bench.kb.render import render
    from ort_bench.unlearning.methods.base import probe_examples
    from ort_bench.unlearning.unlearn import build_data, checked_targets

    def sample(probes, n: int) -> list:
        spread_out = spread(list(probes), lambda p: p.split, lambda p: p.target or "", lambda p: p.template_id)
        return spread_out[:n] if n > 0 else spread_out

    targets, kb, templates = checked_targets(targets, "unlearn")
    data, desc = build_data(kb, templates, targets, "qa")  # RMU needs nothing of its own
    forget_qa, _ = render(split="forget", forms=["qa"], targets=targets, kb=kb, templates=templates, retain="train")
    cloze, _ = render(split="forget", forms=["cloze"], targets=targets, kb=kb, templates=templates, retain="train")
    neighbour, _ = render(split="neighbour", forms=["qa"], targets=targets, kb=kb, templates=templates, retain="eval")
    utility, _ = render(split="utility", forms=["qa"], kb=kb, templates=templates, retain="eval")
    if probe_examples(forget_qa) != data.forget:
        raise SystemExit("the qa forget probes are not the unlearning data (build_data changed?)")
    gen_probes = sample(forget_qa, n_generate)
    probes = {"forget": sample(forget_qa, n_forget), "cloze": sample(cloze, n_cloze),
              "retain": sample(list(neighbour) + list(utility), n_retain)}
    sets = {k: probe_examples(v) for k, v in probes.items()}
    info = {f"n_{k}": f"{len(v)} of {n}" for (k, v), n in
            zip(sets.items(), (len(forget_qa), len(cloze), len(neighbour) + len(utility)), strict=True)}
    info["n_retain_neighbour"] = sum(p.split == "neighbour" for p in probes["retain"])
    info["n_generate"] = len(gen_probes)
    info["forget_sha256"] = desc["forget"]["sha256"]
    return data, sets, gen_probes, info


# ----------------------------------------------------------------------------- measures


def answer_nlls(model, tokenizer, exs, max_length: int, batch_size: int) -> list[float]:
    """Per-example mean per-token NLL of the answer (teacher forcing), in the order of `exs`."""
    from ort_bench.unlearning.methods.training import answer_nlls as item_nlls
    from ort_bench.unlearning.methods.training import encode_examples

    items = encode_examples(tokenizer, exs, max_length)
    return item_nlls(model, tokenizer, items, batch_size, per_token=True, by_length=True)


def generate(backend, tokenizer, probes, max_new_tokens: int) -> list[str]:
    from ort_bench.models.prompting import format_prompt
    from ort_bench.scoring.backends.base import GenerationParams

    prompts = [format_prompt(tokenizer, p.prompt, p.system, p.prefill) for p in probes]
    return backend.generate(prompts, GenerationParams(max_new_tokens=max_new_tokens))


def gold_hit(answer: str, probe) -> bool:
    a = answer.casefold()
    return any(g.casefold() in a for g in probe.answers if g)


def measure(backend, tokenizer, sets, gen_probes, args) -> dict[str, Any]:
    import math

    out: dict[str, Any] = {}
    for name, exs in sets.items():
        nlls = answer_nlls(backend.model, tokenizer, exs, args.max_length, args.nll_batch_size)
        out[f"{name}_nll"] = sum(nlls) / max(len(nlls), 1)
        out[f"{name}_prob"] = sum(math.exp(-v) for v in nlls) / max(len(nlls), 1)  # ORT's Prob
    answers = generate(backend, tokenizer, gen_probes, args.max_new_tokens)
    out["answers"] = answers
    out["gold"] = sum(gold_hit(a, p) for a, p in zip(answers, gen_probes, strict=True)) / max(len(answers), 1)
    return out


# ----------------------------------------------------------------------------- settings and the rule


def key_of(s: dict[str, Any]) -> str:
    return f"c{s['c']:g}-a{s['alpha']:g}-l{s['layer']}-lr{s['lr']:g}"


def setting(c: float, alpha: float, layer: int, lr: float, stage: str) -> dict[str, Any]:
    s = {"c": float(c), "alpha": float(alpha), "layer": int(layer), "lr": float(lr), "stage": stage}
    s["key"] = key_of(s)
    return s


def choose(rows: list[dict[str, Any]], budget: float) -> tuple[dict[str, Any] | None, bool]:
    """The rule: (row, qualifies). Largest held-out NLL rise among rows with retain rise < budget;
    ties (within TIE_NATS) -> smaller c, larger alpha, smaller lr. With no qualifying row, the row
    with the smallest retain rise, and False."""
    if not rows:
        return None, False
    ok = [r for r in rows if r["d_retain"] < budget]
    if not ok:
        return min(rows, key=lambda r: (r["d_retain"], r["c"])), False
    best = max(r["d_cloze"] for r in ok)
    tied = [r for r in ok if r["d_cloze"] >= best - TIE_NATS]
    return min(tied, key=lambda r: (r["c"], -r["alpha"], r["lr"], r["layer"])), True


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


# ----------------------------------------------------------------------------- one setting


def run_setting(s: dict[str, Any], backend, tokenizer, data, original, sets, gen_probes, base, args) -> dict[str, Any]:
    from ort_bench.unlearning.methods import get_method, make_config

    model = backend.model
    cfg = make_config("rmu", {"layer": s["layer"], "steering_coeff": s["c"], "alpha": s["alpha"], "lr": s["lr"],
                              "batch_size": args.batch_size, "retain_batch_size": args.retain_batch_size},
                      max_steps=args.max_steps, seed=args.seed)
    t0 = time.perf_counter()
    try:
        stats = get_method("rmu")(cfg).apply(model, tokenizer, data, progress=False)
        t1 = time.perf_counter()
        m = measure(backend, tokenizer, sets, gen_probes, args)
    finally:
        model.load_state_dict(original)  # back to the original weights for the next setting
        model.eval()
    t2 = time.perf_counter()
    hist = stats["history"]
    changed = sum(a != b for a, b in zip(m["answers"], base["answers"], strict=True)) / max(len(m["answers"]), 1)
    row = {
        **s,
        "hyperparameters": cfg.to_dict(),
        "forget_nll": m["forget_nll"], "cloze_nll": m["cloze_nll"], "retain_nll": m["retain_nll"],
        "d_forget": m["forget_nll"] - base["forget_nll"], "d_cloze": m["cloze_nll"] - base["cloze_nll"],
        "d_retain": m["retain_nll"] - base["retain_nll"],
        "forget_prob": m["forget_prob"], "cloze_prob": m["cloze_prob"], "retain_prob": m["retain_prob"],
        "changed": changed, "gold": m["gold"],
        "rmu_forget_loss": [hist[0].get("forget"), hist[-1].get("forget")],
        "rmu_retain_loss": [hist[0].get("retain"), hist[-1].get("retain")],
        "steps": stats["steps"], "train_seconds": round(t1 - t0, 1), "measure_seconds": round(t2 - t1, 1),
        "answers": m["answers"],
    }
    return row


# ----------------------------------------------------------------------------- table


def fmt(v: float | None, nd: int = 2, sign: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"


def table(rows: list[dict[str, Any]], base: dict[str, Any] | None, budget: float) -> str:
    lines = []
    if base:
        lines += [f"Original model: forget (qa) NLL {fmt(base['forget_nll'])}, held-out (cloze) NLL "
                  f"{fmt(base['cloze_nll'])}, retain-eval NLL {fmt(base['retain_nll'])} (mean per-token NLL of the "
                  f"gold answer, nats); gold answer in {fmt(base['gold'])} of {base['n_generate']} greedy forget "
                  "answers.",
                  ""]
    head = ["stage", "c", "alpha", "layer", "lr", "Δ forget NLL", "Δ held-out NLL", "Δ retain NLL",
            "forget Prob", "held-out Prob", "retain Prob", "changed", "gold", "RMU forget loss (first → last)",
            "s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lf = r["rmu_forget_loss"]
        cells = [r["stage"], f"{r['c']:g}", f"{r['alpha']:g}", str(r["layer"]), f"{r['lr']:g}",
                 fmt(r["d_forget"], 3, True), fmt(r["d_cloze"], 3, True), fmt(r["d_retain"], 3, True),
                 fmt(r["forget_prob"], 3), fmt(r["cloze_prob"], 3), fmt(r["retain_prob"], 3),
                 fmt(r["changed"]), fmt(r["gold"]), f"{fmt(lf[0], 1)} → {fmt(lf[1], 1)}",
                 f"{r['train_seconds'] + r['measure_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if base:
        lines.append(f"| original | | | | | | | | {fmt(base['forget_prob'], 3)} | {fmt(base['cloze_prob'], 3)} | "
                     f"{fmt(base['retain_prob'], 3)} | 0.00 | {fmt(base['gold'])} | | |")
    chosen, ok = choose(rows, budget)
    lines.append("")
    if chosen is None:
        lines.append("No settings yet.")
    elif ok:
        lines.append(f"Chosen by the rule (largest held-out NLL rise with retain rise < {budget:g} nats; ties within "
                     f"{TIE_NATS:g} -> smaller c, larger alpha, smaller lr): **{chosen['key']}** "
                     f"(held-out {fmt(chosen['d_cloze'], 3, True)}, retain {fmt(chosen['d_retain'], 3, True)}, "
                     f"changed {fmt(chosen['changed'])}).")
    else:
        lines.append(f"No setting keeps the retain NLL rise under {budget:g} nats; the smallest rise is "
                     f"{chosen['key']} ({fmt(chosen['d_retain'], 3, True)}).")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_settings(text: str) -> list[dict[str, Any]]:
    out = []
    for part in text.replace(",", " ").split():
        c, alpha, layer, lr = part.split(":")
        out.append(setting(float(c), float(alpha), int(layer), float(lr), "given"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/rmu-search")
    ap.add_argument("--model", default="embedded", help="model spec (embedded, an HF directory, ...)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--max-steps", type=int, default=30, help="AdamW steps (the budget of every gradient method)")
    ap.add_argument("--batch-size", type=int, default=4, help="forget examples per step")
    ap.add_argument("--retain-batch-size", type=int, default=4, help="retain examples per step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=256, help="tokens per example in the NLL measures")
    ap.add_argument("--nll-batch-size", type=int, default=16)
    ap.add_argument("--gen-batch-size", type=int, default=8)
    ap.add_argument("--n-generate", type=int, default=40, help="forget qa probes answered greedily")
    ap.add_argument("--n-forget", type=int, default=120, help="qa forget probes in the forget NLL (0: all 220)")
    ap.add_argument("--n-cloze", type=int, default=120, help="cloze forget probes in the held-out NLL (0: all)")
    ap.add_argument("--n-retain", type=int, default=120,
                    help="retain-eval probes in the retain NLL, half neighbour, half utility (0: all)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--retain-budget", type=float, default=0.5, help="the rule's bound on the retain NLL rise (nats)")
    ap.add_argument("--settings", default=None,
                    help="explicit settings C:ALPHA:LAYER:LR (space or comma separated) instead of the staged search")
    ap.add_argument("--table", action="store_true", help="only write and print the table of finished rows")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path, base_path, md_path = out / "rows.jsonl", out / "baseline.json", out / "rmu_search.md"
    if args.table:
        rows = read_rows(rows_path)
        base = json.loads(base_path.read_text()) if base_path.exists() else None
        md_path.write_text(table(rows, base, args.retain_budget) + "\n", encoding="utf-8")
        print(md_path.read_text())
        return

    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:
        pass
    from ort_bench.models import resolve_model
    from ort_bench.models.load_options import LoadOptions
    from ort_bench.scoring.backends.hf import HFBackend

    t_start = time.perf_counter()
    targets = [t for t in args.targets.split(",") if t]
    data, sets, gen_probes, info = build_eval_sets(targets, args.n_generate, args.n_forget, args.n_cloze,
                                                   args.n_retain)
    log(f"data: {info}")
    resolved = resolve_model(args.model)
    # one model: the backend's (the same loader `unlearn` uses), trained in place, restored after each setting
    backend = HFBackend(resolved, LoadOptions(device="cpu"), batch_size=args.gen_batch_size, progress=False)
    if hasattr(backend.model, "merge_and_unload"):  # a LoRA: methods edit the merged weights, as in `unlearn`
        backend.model = backend.model.merge_and_unload()
    tokenizer = backend.tokenizer
    original = {k: v.detach().clone() for k, v in backend.model.state_dict().items()}
    n_layers = backend.model.config.get_text_config().num_hidden_layers
    log(f"model {args.model} ({resolved.fingerprint[:12]}), {n_layers} layers, {args.threads} thread(s)")

    fixed = {"model": args.model, "fingerprint": resolved.fingerprint, "targets": targets, **info,
             "max_length": args.max_length, "max_new_tokens": args.max_new_tokens}
    base = json.loads(base_path.read_text()) if base_path.exists() else None
    if base is None or base.get("fixed") != fixed:
        if base is not None:
            sys.exit(f"{base_path}: made with other data or another model; choose another --out")
        t0 = time.perf_counter()
        base = {"fixed": fixed, **measure(backend, tokenizer, sets, gen_probes, args),
                "n_generate": len(gen_probes), "probe_ids": [p.id for p in gen_probes]}
        base_path.write_text(json.dumps(base, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        log(f"original: forget {base['forget_nll']:.3f}, held-out {base['cloze_nll']:.3f}, retain "
            f"{base['retain_nll']:.3f}, gold {base['gold']:.2f} ({time.perf_counter() - t0:.0f} s)")
    else:
        log(f"original (cached): forget {base['forget_nll']:.3f}, held-out {base['cloze_nll']:.3f}, "
            f"retain {base['retain_nll']:.3f}")

    budget_keys = {"max_steps": args.max_steps, "batch_size": args.batch_size,
                   "retain_batch_size": args.retain_batch_size, "seed": args.seed}
    rows = [r for r in read_rows(rows_path)
            if all(r["hyperparameters"].get(k) == v for k, v in budget_keys.items())]

    def run_all(settings: list[dict[str, Any]]) -> None:
        for s in settings:
            if any(r["key"] == s["key"] for r in rows):
                log(f"{s['key']}: done earlier, skipped")
                continue
            if not 0 <= s["layer"] < n_layers:
                log(f"{s['key']}: layer out of range (0..{n_layers - 1}), skipped")
                continue
            log(f"{s['key']} ({s['stage']}): unlearning ...")
            row = run_setting(s, backend, tokenizer, data, original, sets, gen_probes, base, args)
            rows.append(row)
            with rows_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            log(f"{s['key']}: d_forget {row['d_forget']:+.3f}  d_held-out {row['d_cloze']:+.3f}  "
                f"d_retain {row['d_retain']:+.3f}  changed {row['changed']:.2f}  gold {row['gold']:.2f}  "
                f"rmu forget loss {row['rmu_forget_loss'][0]:.1f} -> {row['rmu_forget_loss'][1]:.1f}  "
                f"({row['train_seconds']:.0f} + {row['measure_seconds']:.0f} s)")

    if args.settings:
        run_all(parse_settings(args.settings))
    else:
        run_all([setting(c, a, BASE_LAYER, BASE_LR, "1") for c in STAGE1_C for a in STAGE1_ALPHA])
        best, ok = choose([r for r in rows if r["stage"] == "1"], args.retain_budget)
        log(f"stage 1 -> {best['key']}{'' if ok else ' (none within the retain budget)'}")
        run_all([setting(best["c"], best["alpha"], layer, BASE_LR, "2") for layer in STAGE2_LAYERS])
        best, ok = choose([r for r in rows if r["stage"] in ("1", "2")], args.retain_budget)
        log(f"stages 1-2 -> {best['key']}{'' if ok else ' (none within the retain budget)'}")
        run_all([setting(best["c"], best["alpha"], best["layer"], STAGE3_LR, "3")])

    md_path.write_text(table(rows, base, args.retain_budget) + "\n", encoding="utf-8")
    print(md_path.read_text(), flush=True)
    log(f"search: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
