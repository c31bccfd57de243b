"""ILU: invariant LLM unlearning (Wang et al. 2025, "Invariance Makes LLM Unlearning Resilient Even
to Unanticipated Downstream Fine-Tuning", ICML 2025, arXiv:2506.01339).

ILU adds an invariance penalty to a base unlearning objective (NPO or RMU, `--base-method`):

    loss = L_base(theta) + lambda * sum_i ( d/dw L_i(w o theta; D_i) |_{w=1} )^2

over one or more unrelated fine-tuning environments D_i (`--ilu-envs`; shipped: `math` word
problems, the paper's best single choice, and `sentiment`; see `ort_bench.unlearning.envs`).

`--ilu-penalty irm` (default), our reading of the paper, as in IRMv1 (Arjovsky et al. 2019,
"Invariant Risk Minimization"): the whole model theta is the featuriser and w a dummy scalar
classifier on top of it: w multiplies the output logits, L_i is the fine-tuning loss (answer NLL) of
environment i computed from w * logits, and the penalty is the square of dL_i/dw at w = 1. The
derivative is taken with `create_graph=True`, so the penalty stays in the graph and is minimised
through theta: ILU asks the unlearned point to be stationary for downstream fine-tuning, so that
fine-tuning has no gradient that pulls the knowledge back.

`--ilu-penalty gradnorm`: the other reading some take: the squared norm of the gradient of L_i with
respect to the trainable parameters theta themselves, ||grad_theta L_i||^2 (double backward through
the network; several times the cost of the irm penalty, and needs eager attention, which this
method switches to for the run).

The paper links a code repository (OPTML-Group/Unlearn-ILU), but the paper's code was not released:
the repository holds a README only ("Code is on going"). This implementation follows the paper's
formula; the penalty weight and the environment batch size are ours (lambda 100 for irm, 0.01 for
gradnorm; 4 examples per environment per step), not published values. The base method's own
hyperparameters (learning rate and steps included) are its usual flags (`--npo-*` / `--rmu-*` and
the shared ones).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.unlearning.methods.base import (
    DataSource,
    Method,
    MethodConfig,
    OwnData,
    TrainConfig,
    UnlearnData,
    env_examples,
    get_method,
    hp,
    register_method,
)
from ort_bench.unlearning.methods.training import Batches, encode_examples, mean_nll, model_inputs, pad_id

BASE_METHODS = ("npo", "rmu")
# Our defaults (no published value). On SmolLM2-135M-Instruct at the start of NPO the irm penalty is
# ~1e-2 (a pretrained LM is nearly calibrated: dL/dw at w=1 is close to 0 on ordinary text) and the
# gradnorm penalty ~3e2; these weights put either term at about 1, the order of the NPO loss.
# IRMv1's own experiments use penalty weights of 1e2..1e5.
DEFAULT_LAMBDA = {"irm": 100.0, "gradnorm": 0.01}


@dataclass
class ILUConfig(MethodConfig):
    cli_prefix = ""
    base_method: str = hp("npo", "ILU: the unlearning objective the penalty is added to", choices=BASE_METHODS,
                          cli="--base-method")
    ilu_lambda: float | None = hp(None, "ILU: weight of the invariance penalty (default: 100 for irm, 0.01 for "
                                  "gradnorm: the two penalties live on very different scales)")
    ilu_penalty: str = hp("irm", "ILU: irm = squared d(loss)/dw of a scalar w on the logits at w=1 (IRMv1); "
                          "gradnorm = squared gradient norm in the parameters", choices=("irm", "gradnorm"))
    ilu_envs: tuple[str, ...] = hp(("math",), "ILU: fine-tuning environments of the penalty (math, sentiment)")
    ilu_batch_size: int = hp(4, "ILU: examples per environment per step")
    base: TrainConfig | None = field(default=None, metadata={"help": "the base method's config", "nested": True})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ilu_lambda is None:
            self.ilu_lambda = DEFAULT_LAMBDA[self.ilu_penalty]
        base_cls = get_method(self.base_method).config_class
        if self.base is None:
            self.base = base_cls()
        elif isinstance(self.base, dict):
            self.base = base_cls.from_dict(self.base, self.base_method)
        elif not isinstance(self.base, base_cls):
            raise OrtBenchError(f"ilu: base config is a {type(self.base).__name__}, but --base-method "
                                f"{self.base_method} takes a {base_cls.__name__}")
        from ort_bench.unlearning.envs import ENVS

        if not self.ilu_envs:
            raise OrtBenchError("ilu: give at least one fine-tuning environment (--ilu-envs)")
        for env in self.ilu_envs:
            if env not in ENVS:
                raise OrtBenchError(f"ilu: unknown fine-tuning environment {env!r} (choose from {', '.join(ENVS)})")

    @classmethod
    def from_dict(cls, data: dict[str, Any], method: str = "ilu") -> ILUConfig:
        data = dict(data)
        base = data.pop("base", None)
        cfg = super().from_dict(data, method)
        if base is not None:
            base_cls = get_method(cfg.base_method).config_class
            cfg.base = base if isinstance(base, base_cls) else base_cls.from_dict(dict(base), cfg.base_method)
        return cfg  # type: ignore[return-value]

    def apply_overrides(self, overrides: dict[str, Any], method: str) -> ILUConfig:
        """Overrides are training settings (steps, seed, lr): they go to the base method's config."""
        assert self.base is not None  # set in __post_init__
        return dataclasses.replace(self, base=self.base.apply_overrides(overrides, method))

    @classmethod
    def nested_from_args(cls, args: argparse.Namespace,
                         build: Callable[[str], MethodConfig]) -> dict[str, Any]:
        """The base method's config from its own options (`--npo-*`/`--rmu-*` and the shared ones)."""
        base_method = getattr(args, "base_method", None) or cls().base_method
        return {"base_method": base_method, "base": build(base_method)}


def irm_penalty(model, batch) -> tuple[Any, Any]:
    """(dL/dw at w=1)^2 with L the answer NLL of `batch` computed from w * logits; the derivative is
    kept in the graph (create_graph=True). Returns (penalty, L)."""
    import torch

    logits = model(**model_inputs(batch), use_cache=False).logits
    w = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    loss = mean_nll(None, batch, logits=logits * w)
    (grad_w,) = torch.autograd.grad(loss, w, create_graph=True)
    return grad_w ** 2, loss


def gradnorm_penalty(model, batch, params: list) -> tuple[Any, Any]:
    """||grad_params L||^2 of the answer NLL of `batch`, kept in the graph (double backward)."""
    import torch

    loss = mean_nll(model, batch)
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    total = sum((g ** 2).sum() for g in grads if g is not None)
    return total, loss


@register_method
class ILU(Method):
    name = "ilu"
    summary = "NPO or RMU plus an IRM-style invariance penalty over fine-tuning environments (lambda)"
    config_class = ILUConfig
    order = 60

    def env_examples(self) -> dict[str, list]:
        from ort_bench.unlearning.envs import load_env

        return {env: env_examples(load_env(env)) for env in self.config.ilu_envs}

    def own_data(self, source: DataSource) -> OwnData:
        """The penalty's environments are data the method sees: the card lists their size and hash."""
        from ort_bench.unlearning.envs import env_hash, load_env

        envs = {}
        for e in self.config.ilu_envs:
            items = load_env(e)
            envs[e] = {"n": len(items), "sha256": env_hash(items)}
        return OwnData(card={"ilu_envs": envs})

    def apply(self, model, tokenizer, data: UnlearnData, progress: bool = True) -> dict[str, Any]:
        cfg: ILUConfig = self.config  # type: ignore[assignment]
        base = get_method(cfg.base_method)(cfg.base)
        base_cfg: TrainConfig = cfg.base  # type: ignore[assignment]
        device = next(model.parameters()).device
        envs = {
            name: Batches(encode_examples(tokenizer, exs, base_cfg.max_length), cfg.ilu_batch_size,
                          pad_id(tokenizer), base_cfg.seed + 100 + i, device)
            for i, (name, exs) in enumerate(self.env_examples().items())
        }

        def penalty(model, params, step):
            total, logs = 0.0, {}
            for name, batches in envs.items():
                batch = next(batches)
                if cfg.ilu_penalty == "irm":
                    pen, env_loss = irm_penalty(model, batch)
                else:
                    pen, env_loss = gradnorm_penalty(model, batch, params)
                total = total + pen
                logs[f"env_{name}"] = float(env_loss.detach())
            logs["penalty"] = float(total.detach())
            return cfg.ilu_lambda * total, logs

        restore = None
        if cfg.ilu_penalty == "gradnorm":
            restore = _use_eager_attention(model)
        try:
            stats = base.apply(model, tokenizer, data, progress, extra_loss=penalty)
        finally:
            if restore is not None:
                restore()
        stats["base_method"] = cfg.base_method
        return stats


def _use_eager_attention(model):
    """Switch to eager attention (fused attention kernels have no double backward); return undo."""
    config = model.config
    old = getattr(config, "_attn_implementation", None)
    if old in (None, "eager"):
        return None
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
        return lambda: model.set_attn_implementation(old)
    config._attn_implementation = "eager"

    def undo():
        config._attn_implementation = old

    return undo


