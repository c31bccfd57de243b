"""GA: gradient ascent on the forget answers (Jang et al. 2023; the TOFU baseline, Maini et al. 2024).

    loss = -NLL_theta(forget answers)        (mean over answer tokens)

Defaults: AdamW, lr 1e-5, weight decay 0.01, linear schedule with warm-up, as in TOFU's forgetting
runs and open-unlearning's GradAscent trainer. GA has no retain term, so it is the method most
likely to wreck the model: watch utility.
"""

from __future__ import annotations

from dataclasses import dataclass

from ort_bench.unlearning.methods.base import TrainConfig, register_method
from ort_bench.unlearning.methods.training import GradientMethod, mean_nll


@dataclass
class GAConfig(TrainConfig):
    cli_prefix = "ga"


@register_method
class GA(GradientMethod):
    name = "ga"
    summary = "gradient ascent on the forget answers"
    config_class = GAConfig
    uses_retain = False
    order = 10

    def loss(self, model, forget, retain):
        nll = mean_nll(model, forget)
        return -nll, {"forget": float(nll.detach())}
