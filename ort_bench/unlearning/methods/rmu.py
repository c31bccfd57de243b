"""RMU: representation misdirection for unlearning (Li et al. 2024, "The WMDP Benchmark: Measuring
and Reducing Malicious Use With Unlearning", arXiv:2403.03218, Sec. 5 and its code).

    L_forget = mean_t || h_l(x_f)_t - c * u ||^2 / d          (u: fixed random unit vector)
    L_retain = mean_t || h_l(x_r)_t - h_l^frozen(x_r)_t ||^2 / d
    loss     = L_forget + alpha * L_retain

h_l is the output of decoder layer l (the residual stream after it); only the MLP weights of layers
l-2..l are updated (the published code updates each layer's MLP down-projection: `param_ids=[6]`
of Zephyr's layers 5, 6, 7). u is drawn from U[0,1)^d and normalised, seeded.

Published defaults (Zephyr-7B, WMDP): layer 7, steering coefficient c 6.5, alpha 1200, lr 5e-5.
c is tied to the scale of the layer's activations: for a small model, expose and tune it
(`--rmu-steering-coeff`). The forward pass stops at layer l (the loss only needs h_l), which makes
a step several times cheaper than a full forward-backward.

On a short budget the lr, not c or alpha, bounds what RMU can do: AdamW moves each trained weight by
about lr per step, so 30 steps at 5e-5 change the three down-projections by ~0.3% and move layer l's
forget activations a few percent of the way to c*u. `scripts/rmu_search.py` searches c, alpha, layer
(and lr up to 2e-4) on the embedded 135M model at that budget: no setting raises the forget NLL by
more than 0.03 nats; at lr 1e-3 (c 300, alpha 12, layer 7) it acts (docs/RESULTS.md).

Token positions: WMDP applies both terms to every token of raw documents. Our examples are
chat-formatted, and the chat template's shared header (e.g. a system turn) is identical in forget
and retain examples, where the two terms would pull the same states in opposite directions; by
default (`--rmu-tokens prompt_answer`) the losses cover the user's text and the answer, `all` gives
the published every-token variant.
"""

from __future__ import annotations

from dataclasses import dataclass

from ort_bench.errors import OrtBenchError
from ort_bench.unlearning.methods.base import (
    TrainConfig,
    decoder_layers,
    hp,
    mlp_parameters,
    register_method,
    run_until,
)
from ort_bench.unlearning.methods.training import GradientMethod, frozen_copy, model_inputs


@dataclass
class RMUConfig(TrainConfig):
    cli_prefix = "rmu"
    lr: float = hp(5e-5, "learning rate (AdamW)")
    layer: int = hp(7, "layer l whose output is steered; MLPs of layers l-2..l are updated")
    steering_coeff: float = hp(6.5, "c: norm of the random control vector the forget activations are pushed to")
    alpha: float = hp(1200.0, "weight of the retain (activation-matching) loss")
    params: str = hp("down_proj", "which MLP weights of layers l-2..l train: the output projection or all",
                     choices=("down_proj", "mlp"))
    tokens: str = hp("prompt_answer", "token positions the losses cover (see the method's docstring)",
                     choices=("prompt_answer", "all"))


def _token_mask(batch, tokens: str):
    import torch

    mask = batch["attention_mask"].bool()
    if tokens == "prompt_answer" and "prompt_start" in batch:
        pos = torch.arange(mask.size(1), device=mask.device)[None, :]
        mask = mask & (pos >= batch["prompt_start"][:, None])
    return mask


def masked_mse(h, target, mask):
    """Mean over masked tokens of the mean squared difference over the hidden dimension."""
    m = mask.to(h.dtype)
    per_token = ((h - target) ** 2).mean(-1)
    return (per_token * m).sum() / m.sum().clamp(min=1)


@register_method
class RMU(GradientMethod):
    name = "rmu"
    summary = "steer layer-l activations on forget text to c*u, keep retain activations (alpha)"
    config_class = RMUConfig
    order = 50

    def layer_ids(self, model) -> list[int]:
        n = len(decoder_layers(model))
        layer = self.config.layer
        if not 0 <= layer < n:
            raise OrtBenchError(f"rmu: layer {layer} is out of range: the model has {n} layers (0..{n - 1}); "
                                f"pass --rmu-layer")
        return list(range(max(0, layer - 2), layer + 1))

    def trainable_parameters(self, model) -> list:
        layers = decoder_layers(model)
        return [p for i in self.layer_ids(model) for p in mlp_parameters(layers[i], self.config.params)]

    def setup(self, model, tokenizer, data):
        import torch

        self.layer_ids(model)  # range check before any work
        hidden = model.config.get_text_config().hidden_size
        gen = torch.Generator().manual_seed(self.config.seed)
        u = torch.rand(hidden, generator=gen, dtype=torch.float64)
        u = u / u.norm()
        p = next(model.parameters())
        self.control = (self.config.steering_coeff * u).to(device=p.device, dtype=p.dtype)
        self.ref_model = frozen_copy(model)

    def loss(self, model, forget, retain):
        import torch

        layer = self.config.layer
        h_f = run_until(model, layer, **model_inputs(forget))
        forget_loss = masked_mse(h_f, self.control.to(h_f.dtype), _token_mask(forget, self.config.tokens))
        h_r = run_until(model, layer, **model_inputs(retain))
        with torch.no_grad():
            h_r0 = run_until(self.ref_model, layer, **model_inputs(retain))
        retain_loss = masked_mse(h_r, h_r0, _token_mask(retain, self.config.tokens))
        logs = {"forget": float(forget_loss.detach()), "retain": float(retain_loss.detach())}
        return forget_loss + self.config.alpha * retain_loss, logs

    def teardown(self) -> None:
        super().teardown()
        self.control = None
