"""GradDiff: gradient difference (Liu et al. 2022; TOFU's "Grad. Diff.", Maini et al. 2024).

    loss = -NLL_theta(forget answers) + alpha * L_retain

with L_retain the NLL of the retain answers (or, `--graddiff-retain-loss kl`, the KL to the frozen
model on them). Defaults: alpha 1 (open-unlearning's GradDiff: gamma 1, alpha 1), lr 1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass

from ort_bench.unlearning.methods.base import TrainConfig, hp, register_method
from ort_bench.unlearning.methods.training import GradientMethod, mean_nll


@dataclass
class GradDiffConfig(TrainConfig):
    cli_prefix = "graddiff"
    alpha: float = hp(1.0, "weight of the retain loss")
    retain_loss: str = hp("nll", "retain term: NLL of the retain answers, or KL to the frozen model",
                          choices=("nll", "kl"))


@register_method
class GradDiff(GradientMethod):
    """GA's forget term plus `plus_retain`: the retain term is what keeps GradDiff from GA's
    collapse."""

    name = "graddiff"
    summary = "gradient ascent on forget + descent on retain (alpha)"
    config_class = GradDiffConfig
    order = 20

    def loss(self, model, forget, retain):
        nll_f = mean_nll(model, forget)
        return self.plus_retain(model, -nll_f, retain, {"forget": float(nll_f.detach())})
