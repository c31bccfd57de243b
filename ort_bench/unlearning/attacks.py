"""Robustness attacks on an unlearned model: fine-tune it, then score it again.

- `finetune_attack`: full fine-tuning on an unrelated task (`math` word problems or `sentiment`,
  from `ort_bench.unlearning.envs`): does benign downstream fine-tuning bring the forgotten knowledge back?
- `relearn_attack`: fine-tuning on `samples` forget examples of the targets (their qa probes by
  default): do a few samples bring back the rest (the other facts, the other forms)?

Both write an HF directory plus `attack_card.json` (the attacked model's fingerprint, the data and
its hash, every hyperparameter, losses, wall time). Evaluating the attacked checkpoint against the
original reference gives the robust efficacy. `save_at=(5, 10)` also keeps the model as it was after
5 and 10 steps of the same run, in `out/step-5/` and `out/step-10/` (each a full checkpoint with its
own card): the robustness curve along one attack, as the ILU paper reports it. Both use the shared training loop
(`ort_bench.unlearning.methods.training`): answer-only loss, AdamW, linear schedule, gradient clipping.
Defaults (lr 2e-5 decaying linearly, no warm-up, batch 8) are a light attack sized for CPU; the
papers' attacks use a few epochs at lr 1e-5..5e-5.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.models.load_options import LoadOptions
from ort_bench.provenance import TRAINING_PACKAGES, versions

STEP_DIR = "step-{}"  # an intermediate checkpoint's folder inside `out`


def check_save_at(save_at, steps: int) -> tuple[int, ...]:
    """The intermediate checkpoint steps, sorted and deduplicated; each a whole number in
    1..steps-1 (the final model, after `steps` steps, is `out` itself)."""
    try:
        values = list(save_at or ())
    except TypeError:
        raise OrtBenchError(f"save_at must be a list of step counts (got {save_at!r})") from None
    for n in values:
        if not isinstance(n, int) or isinstance(n, bool):
            raise OrtBenchError(f"save_at: {n!r} is not a whole number of steps")
        if not 1 <= n < steps:
            raise OrtBenchError(f"save_at: step {n} is outside 1..{steps - 1} (the attack runs {steps} steps; "
                                f"the final model is the output folder itself)")
    return tuple(sorted(set(values)))


def _train(lm, tokenizer, examples, cfg, progress: bool, desc: str, on_step=None) -> dict[str, Any]:
    from ort_bench.unlearning.methods.training import Batches, encode_examples, mean_nll, pad_id, set_seed, train_loop

    set_seed(cfg.seed)
    device = next(lm.parameters()).device
    batches = Batches(encode_examples(tokenizer, examples, cfg.max_length), cfg.batch_size, pad_id(tokenizer),
                      cfg.seed, device)
    for p in lm.parameters():
        p.requires_grad_(True)

    def step(_i):
        nll = mean_nll(lm, next(batches))
        return nll, {}

    return train_loop(lm, list(lm.parameters()), step, cfg, progress, desc=desc, on_step=on_step)


def _run(kind: str, model: str, examples, data_desc: dict[str, Any], out: str | Path, steps: int, lr: float,
         batch_size: int, seed: int, max_length: int, progress: bool, load: LoadOptions | None,
         extra: dict[str, Any],
         save_at: tuple[int, ...] = ()) -> dict[str, Any]:
    from ort_bench.models.checkpoint import (
        ATTACK_CARD,
        check_out_dir,
        load_for_training,
        save_with_card,
        staged_output,
    )
    from ort_bench.unlearning.methods.base import TrainConfig
    from ort_bench.unlearning.methods.training import examples_hash

    t0 = time.perf_counter()
    out = Path(out)
    save_at = check_save_at(save_at, steps)
    check_out_dir(out)
    cfg = TrainConfig(lr=lr, max_steps=steps, batch_size=batch_size, warmup_ratio=0.0, weight_decay=0.0,
                      max_length=max_length, seed=seed)
    load = (load or LoadOptions()).on_device()
    resolved, tokenizer, lm = load_for_training(model, load)
    card: dict[str, Any] = {
        "schema_version": 1,
        "kind": "attack",
        "attack": kind,
        **extra,
        "attacked_model": {"spec": str(model), "kind": resolved.kind, "fingerprint": resolved.fingerprint},
        "steps": steps,
        "of_run_steps": steps,
        "hyperparameters": {"steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed,
                            "max_length": max_length, "schedule": "linear decay, no warm-up",
                            "weight_decay": 0.0, "max_grad_norm": cfg.max_grad_norm, "trainable": "all"},
        "data": {**data_desc, "n": len(examples), "sha256": examples_hash(examples)},
        "dtype": load.dtype,
        "device": load.device,
        "versions": versions(TRAINING_PACKAGES, python=True),
    }
    if save_at:
        card["intermediate_checkpoints"] = {STEP_DIR.format(n): n for n in save_at}
    history: list[dict[str, float]] = []
    # Everything is written into a sibling temporary folder that becomes `out` at the end, so a failed
    # run leaves no half-written output (and `out` never holds step folders without its final model).
    with staged_output(out) as stage:
        def on_step(done: int, logs: dict[str, float]) -> None:
            history.append(logs)
            if done in save_at:
                step_card = {**{k: v for k, v in card.items() if k != "intermediate_checkpoints"},
                             "steps": done, "of_run_steps": steps,
                             # results.json keeps an attacked model's hyperparameters: say there which step
                             "hyperparameters": {**card["hyperparameters"], "checkpoint_step": done},
                             "checkpoint": f"the model after {done} of the run's {steps} steps (the full run's "
                                           "learning-rate schedule; the final model is the parent folder)",
                             "stats": {"steps": done, "history": list(history)},
                             "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "wall_seconds": round(time.perf_counter() - t0, 2)}
                d = stage / STEP_DIR.format(done)
                d.mkdir()
                save_with_card(lm, tokenizer, d, ATTACK_CARD, step_card)
                if progress:
                    print(f"attack {kind}: saved the model after step {done} of {steps} -> "
                          f"{out / STEP_DIR.format(done)}", flush=True)

        card["stats"] = _train(lm, tokenizer, examples, cfg, progress, desc=f"attack {kind}", on_step=on_step)
        card["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        card["wall_seconds"] = round(time.perf_counter() - t0, 2)
        save_with_card(lm, tokenizer, stage, ATTACK_CARD, card)
    return card


def finetune_attack(
    model: str,
    env: str,
    steps: int,
    out: str | Path,
    lr: float = 2e-5,
    batch_size: int = 8,
    seed: int = 0,
    max_length: int = 256,
    progress: bool = True,
    *,
    load: LoadOptions | None = None,
    save_at: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Fine-tune every weight of `model` on environment `env` ("math" | "sentiment") for `steps`
    steps; write the checkpoint and `attack_card.json` to `out`; return the card.

    `save_at`: step counts (each in 1..steps-1) after which the model is also written to
    `out/step-N/`, with its own card (`"steps": N`, `"of_run_steps": steps`, the same data). These
    are states of this one run: the learning rate decays over all `steps`, so `out/step-5` of a
    20-step attack is not the model a 5-step attack would give."""
    from ort_bench.unlearning.envs import env_hash, load_env
    from ort_bench.unlearning.methods.base import env_examples

    items = load_env(env)  # unknown env: one-line error
    if steps < 1:
        raise OrtBenchError(f"steps must be at least 1 (got {steps})")
    save_at = check_save_at(save_at, steps)
    examples = env_examples(items)
    return _run("finetune", model, examples, {"env": env, "env_sha256": env_hash(items)}, out, steps, lr,
                batch_size, seed, max_length, progress, load,
                {"env": env}, save_at)


def relearn_attack(
    model: str,
    targets: list[str],
    samples: int,
    out: str | Path,
    steps: int = 20,
    lr: float = 2e-5,
    batch_size: int = 4,
    seed: int = 0,
    form: str = "qa",
    max_length: int = 256,
    progress: bool = True,
    *,
    load: LoadOptions | None = None,
    kb=None,
    templates=None,
    save_at: tuple[int, ...] = (),
    exclude_probe_ids: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Fine-tune `model` for `steps` steps on `samples` forget examples of `targets` (drawn from
    their `form` probes, a fixed seeded choice spread over targets); write the checkpoint and
    `attack_card.json` (with the probe ids used, so that scoring can tell them apart) to `out`.
    `save_at`: intermediate checkpoints of the same run in `out/step-N/`, as in `finetune_attack`
    (states of this run under its full learning-rate schedule, not shorter runs).
    `exclude_probe_ids`: probes never drawn — the ones that will be scored, so that nothing is scored
    on data the attack saw."""
    from ort_bench.kb.render import render
    from ort_bench.unlearning.methods.base import probe_examples
    from ort_bench.unlearning.unlearn import checked_targets

    if samples < 1:
        raise OrtBenchError(f"samples must be at least 1 (got {samples})")
    if steps < 1:
        raise OrtBenchError(f"steps must be at least 1 (got {steps})")
    save_at = check_save_at(save_at, steps)
    targets, kb, templates = checked_targets(targets, "relearn", kb, templates)
    probes, _ = render(split="forget", forms=[form], targets=targets, kb=kb, templates=templates)
    probes = [p for p in probes if p.id not in exclude_probe_ids]
    if not probes:
        raise OrtBenchError(f"no {form} probes for targets {', '.join(targets)}"
                            + (" outside the excluded ones" if exclude_probe_ids else ""))

    def rank(p) -> str:
        return hashlib.sha256(f"{seed}|{p.id}".encode()).hexdigest()

    by_target: dict[str, list] = {t: sorted((p for p in probes if p.target == t), key=rank) for t in targets}
    chosen: list = []
    i = 0
    while len(chosen) < min(samples, len(probes)):
        for t in targets:
            if i < len(by_target[t]) and len(chosen) < samples:
                chosen.append(by_target[t][i])
        i += 1
    examples = probe_examples(chosen)
    desc = {"split": "forget", "form": form, "targets": targets, "probe_ids": [p.id for p in chosen],
            "kb_sha256": kb.content_hash}
    return _run("relearn", model, examples, desc, out, steps, lr, batch_size, seed, max_length, progress, load,
                {"targets": targets, "samples": len(chosen)}, save_at)
