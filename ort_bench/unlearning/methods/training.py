"""The one small training loop every gradient method shares.

- Examples are (prompt, answer) pairs. The prompt goes through the model's chat template
  (`ort_bench.models.prompting.format_prompt`), the answer follows it (`join_continuation`); the two are
  tokenized separately (as the scorer does) and the loss sees only the answer's tokens.
- Batches are drawn from a seeded shuffle that restarts each epoch (`Batches`), right-padded.
- AdamW, linear warm-up then linear decay to 0, global-norm gradient clipping, a tqdm progress bar,
  `max_steps` optimiser steps, dropout off. The step function returns (loss, logs); the loop does the rest.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.unlearning.methods.base import Example, Method, TrainConfig, UnlearnData


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def examples_hash(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.prompt, ex.answer, ex.system, ex.prefill], ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def encode_example(tokenizer, ex: Example, max_length: int) -> dict[str, list[int]]:
    """input_ids and labels (-100 on the prompt) for one example; the prompt is cut from the left
    when the pair is longer than `max_length` (the answer is kept whole up to `max_length`)."""
    from ort_bench.models.prompting import format_prompt, join_continuation

    context = format_prompt(tokenizer, ex.prompt, ex.system, ex.prefill)
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    ans = tokenizer(join_continuation(context, ex.answer), add_special_tokens=False)["input_ids"]
    ans = ans[:max_length - 1] if max_length > 1 else ans[:1]
    room = max(max_length - len(ans), 1)
    cut = max(len(ctx) - room, 0)
    # where the user's own text starts (after the chat template's shared header, e.g. a system turn)
    at = context.rfind(ex.prompt)
    start = len(tokenizer(context[:at], add_special_tokens=False)["input_ids"]) if at > 0 else 0
    ctx = ctx[cut:]
    return {"input_ids": ctx + ans, "labels": [-100] * len(ctx) + ans, "prompt_start": max(start - cut, 0)}


def encode_text(tokenizer, text: str, max_length: int) -> dict[str, list[int]]:
    """A plain text whose every token (but the first) is a label."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
    return {"input_ids": ids, "labels": [-100] + ids[1:]}


def encode_examples(tokenizer, examples: Sequence[Example], max_length: int) -> list[dict[str, Any]]:
    return [encode_example(tokenizer, ex, max_length) for ex in examples]


def pad_id(tokenizer) -> int:
    for tok_id in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id):
        if tok_id is not None:
            return int(tok_id)
    return 0


def collate(items: Sequence[dict[str, Any]], pad_token_id: int, device=None) -> dict[str, Any]:
    """Right-padded tensors: input_ids, attention_mask, labels (-100 on padding). Other keys
    holding numbers (e.g. a cached reference NLL) become tensors too."""
    import torch

    width = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, it in enumerate(items):
        n = len(it["input_ids"])
        ids[i, :n] = torch.tensor(it["input_ids"])
        labels[i, :n] = torch.tensor(it["labels"])
        mask[i, :n] = 1
    out: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    for key, value in items[0].items():
        if key not in out and isinstance(value, (int, float)):
            dtype = torch.long if isinstance(value, int) else torch.float64
            out[key] = torch.tensor([it[key] for it in items], dtype=dtype)
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


class Batches:
    """Endless batches: a seeded shuffle of `items`, reshuffled each epoch."""

    def __init__(self, items: Sequence[dict[str, Any]], batch_size: int, pad_token_id: int, seed: int, device=None):
        if not items:
            raise ValueError("no examples to batch")
        self.items = list(items)
        self.batch_size = min(batch_size, len(self.items))
        self.pad = pad_token_id
        self.rng = random.Random(seed)
        self.device = device
        self._order: list[int] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if len(self._order) < self.batch_size:
            order = list(range(len(self.items)))
            self.rng.shuffle(order)
            self._order += order
        take, self._order = self._order[: self.batch_size], self._order[self.batch_size:]
        return collate([self.items[i] for i in take], self.pad, self.device)


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _float(t):
    """Half-precision logits are upcast for the loss; float32/float64 stay as they are."""
    import torch

    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def token_nll(logits, labels):
    """Per-token NLL (B, T-1) of the shifted labels, and the mask of answer tokens."""
    import torch.nn.functional as F

    logits = _float(logits[:, :-1, :])
    target = labels[:, 1:]
    mask = target != -100
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.clamp(min=0).reshape(-1),
                          reduction="none").view(target.shape)
    return nll * mask, mask


def sequence_nll(model, batch: dict[str, Any], logits=None):
    """Summed answer NLL per sequence (B,) and the number of answer tokens (B,)."""
    if logits is None:
        logits = model(**model_inputs(batch), use_cache=False).logits
    nll, mask = token_nll(logits, batch["labels"])
    return nll.sum(-1), mask.sum(-1)


def mean_nll(model, batch: dict[str, Any], logits=None):
    """Mean NLL over all answer tokens of the batch (what `outputs.loss` would give)."""
    seq, n = sequence_nll(model, batch, logits)
    return seq.sum() / n.sum().clamp(min=1)


def answer_nlls(model, tokenizer, items: Sequence[dict[str, Any]], batch_size: int = 8, *,
                per_token: bool = False, by_length: bool = False) -> list[float]:
    """Each encoded item's answer NLL under the current weights, without gradients, in item order:
    summed over the answer's tokens (NPO's reference) or, `per_token`, their mean. `by_length`
    batches items of similar length together (less padding, same values up to float rounding)."""
    import torch

    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    order = list(range(len(items)))
    if by_length:
        order.sort(key=lambda i: len(items[i]["input_ids"]))
    out = [0.0] * len(items)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            nll, n = sequence_nll(model, collate([items[i] for i in idx], pad, device))
            values = nll / n.clamp(min=1) if per_token else nll
            for i, v in zip(idx, values.tolist(), strict=True):
                out[i] = float(v)
    model.train(was_training)
    return out


def kl_to_reference(model, ref_model, batch: dict[str, Any]):
    """KL(p_ref || p_theta) per answer token, averaged (open-unlearning's retain KL)."""
    import torch
    import torch.nn.functional as F

    logits = _float(model(**model_inputs(batch), use_cache=False).logits[:, :-1])
    with torch.no_grad():
        ref = _float(ref_model(**model_inputs(batch), use_cache=False).logits[:, :-1])
    mask = (batch["labels"][:, 1:] != -100).to(logits.dtype)
    kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(ref, -1), log_target=True, reduction="none").sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def frozen_copy(model):
    """A frozen deep copy (the reference model)."""
    import copy

    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def train_loop(
    model,
    params: list,
    step_fn: Callable[[int], tuple[Any, dict[str, float]]],
    cfg: TrainConfig,
    progress: bool = True,
    desc: str = "unlearn",
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Run `cfg.max_steps` optimiser steps of `step_fn(step) -> (loss, logs)` over `params`.
    Returns the per-step logs and timings for the card.

    `on_step(step_done, logs)`, if given, is called after each optimiser (and scheduler) step with the
    number of steps done so far (1..max_steps) and that step's logs, e.g. to save intermediate
    checkpoints: the model is then the state of this very run after `step_done` steps, learning-rate
    schedule included. It must not change the model; its time is not counted in the step timings."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(round(cfg.warmup_ratio * cfg.max_steps))
    sched = get_linear_schedule_with_warmup(opt, warmup, cfg.max_steps)
    # Dropout stays off (eval mode; gradients flow all the same): the objectives compare the model
    # with its frozen self, and a run should be a deterministic function of its seed.
    model.eval()
    history: list[dict[str, float]] = []
    times: list[float] = []
    callback_seconds = 0.0
    bar = tqdm(range(cfg.max_steps), desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        for step in bar:
            t0 = time.perf_counter()
            loss, logs = step_fn(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                logs = {**logs, "grad_norm": float(gnorm)}
            opt.step()
            sched.step()
            times.append(time.perf_counter() - t0)
            logs = {"step": step + 1, "loss": float(loss.detach()), **logs}
            history.append(logs)
            bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items() if k in ("loss", "forget", "retain", "penalty")})
            if on_step is not None:
                t1 = time.perf_counter()
                on_step(step + 1, logs)
                callback_seconds += time.perf_counter() - t1
    finally:
        bar.close()
        model.eval()
        opt.zero_grad(set_to_none=True)
    stats = {
        "steps": len(history),
        "history": history,
        "step_seconds_mean": sum(times) / max(len(times), 1),
        "train_seconds": sum(times),
    }
    if on_step is not None:
        stats["on_step_seconds"] = callback_seconds
    return stats


ExtraLoss = Callable[[Any, list, int], tuple[Any, dict[str, float]]]


class GradientMethod(Method):
    """A method trained with the shared loop: subclasses define `loss(model, forget, retain)`
    (and, if they need them, `setup` and `trainable_parameters`). A config with `retain_loss`
    ("nll" | "kl") and `alpha` gets its retain term from `plus_retain`; the frozen copy the KL needs
    is made by the default `setup`."""

    config_class = TrainConfig
    uses_retain: bool = True

    @property
    def train_config(self) -> TrainConfig:
        return self.config  # type: ignore[return-value]

    def setup(self, model, tokenizer, data: UnlearnData) -> None:
        """Prepare what the loss needs before the first step (reference NLLs, a frozen copy...): by
        default the frozen copy when the retain term is the KL to it."""
        if getattr(self.config, "retain_loss", None) == "kl":
            self.ref_model = frozen_copy(model)

    def trainable_parameters(self, model) -> list:
        return [p for p in model.parameters()]

    def loss(self, model, forget: dict[str, Any], retain: dict[str, Any] | None) -> tuple[Any, dict[str, float]]:
        raise NotImplementedError

    def retain_loss(self, model, retain: dict[str, Any], kind: str = "nll"):
        """NLL of the retain answers, or KL to the frozen reference on them."""
        if kind == "kl":
            return kl_to_reference(model, self.ref_model, retain)
        return mean_nll(model, retain)

    def plus_retain(self, model, forget_loss, retain: dict[str, Any] | None,
                    logs: dict[str, float]) -> tuple[Any, dict[str, float]]:
        """forget_loss + alpha * the config's retain term, which is logged as "retain"."""
        ret = self.retain_loss(model, retain, self.config.retain_loss)  # type: ignore[attr-defined]
        return forget_loss + self.config.alpha * ret, {**logs, "retain": float(ret.detach())}  # type: ignore[attr-defined]

    def teardown(self) -> None:
        for attr in ("ref_model",):
            if hasattr(self, attr):
                delattr(self, attr)

    def apply(self, model, tokenizer, data: UnlearnData, progress: bool = True,
              extra_loss: ExtraLoss | None = None) -> dict[str, Any]:
        cfg = self.train_config
        if not data.forget:
            raise OrtBenchError(f"method {self.name}: no forget examples")
        if self.uses_retain and not data.retain:
            raise OrtBenchError(f"method {self.name}: needs retain examples (neighbour or utility probes); got none")
        set_seed(cfg.seed)
        device = next(model.parameters()).device
        pad = pad_id(tokenizer)
        self.tokenizer = tokenizer
        self.forget_items = encode_examples(tokenizer, data.forget, cfg.max_length)
        self.retain_items = encode_examples(tokenizer, data.retain, cfg.max_length) if self.uses_retain else []
        self.setup(model, tokenizer, data)
        forget = Batches(self.forget_items, cfg.batch_size, pad, cfg.seed, device)
        retain = (Batches(self.retain_items, cfg.retain_batch_size, pad, cfg.seed + 1, device)
                  if self.retain_items else None)
        params = self.trainable_parameters(model)
        chosen = {id(p) for p in params}
        saved = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)

        def step_fn(step: int):
            loss, logs = self.loss(model, next(forget), next(retain) if retain is not None else None)
            if extra_loss is not None:
                extra, extra_logs = extra_loss(model, params, step)
                loss = loss + extra
                logs = {**logs, **extra_logs}
            return loss, logs

        try:
            stats = train_loop(model, params, step_fn, cfg, progress, desc=self.name)
        finally:
            for n, p in model.named_parameters():
                p.requires_grad_(saved[n])
            self.teardown()
        stats["trainable_parameters"] = sum(p.numel() for p in params)
        stats["n_forget"] = len(self.forget_items)
        stats["n_retain"] = len(self.retain_items)
        return stats
