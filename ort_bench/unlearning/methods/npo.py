"""NPO: negative preference optimisation (Zhang, Lin, Bai, Mei 2024, "Negative Preference
Optimization: From Catastrophic Collapse to Effective Unlearning", arXiv:2404.05868).

    L_NPO = -(2/beta) * E_x[ log sigmoid( beta * (NLL_theta(x) - NLL_ref(x)) ) ]
    loss  = L_NPO + alpha * L_retain

NLL is summed over the answer tokens of one sequence; the reference is the model before
unlearning, frozen (its NLL on each forget example is computed once, before the first step).
L_retain is the retain answers' NLL (NPO+RT, the paper's TOFU setting) or, with
`--npo-retain-loss kl`, the KL to the frozen reference. As beta -> 0 the forget term tends to GA's
(NLL_theta - NLL_ref), and for large NLL_theta it saturates: unlike GA it does not diverge.

Defaults: beta 0.1, lr 1e-5, retain weight 1 — the NPO paper's TOFU setting as we read it. Checked
against code: open-unlearning's NPO trainer (`src/trainer/unlearn/npo.py`) defaults to beta 1.0 in
the class, with forget weight `gamma` and retain weight `alpha`; its shipped YAML configs were not
checked here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ort_bench.unlearning.methods.base import TrainConfig, hp, register_method
from ort_bench.unlearning.methods.training import GradientMethod, answer_nlls, sequence_nll


@dataclass
class NPOConfig(TrainConfig):
    cli_prefix = "npo"
    beta: float = hp(0.1, "inverse temperature of the NPO loss")
    alpha: float = hp(1.0, "weight of the retain loss")
    retain_loss: str = hp("nll", "retain term: NLL of the retain answers, or KL to the frozen reference",
                          choices=("nll", "kl"))


def npo_loss(nll, ref_nll, beta: float):
    """-(2/beta) * mean log sigmoid(beta * (nll - ref_nll)) over sequences (summed-token NLLs)."""
    import torch.nn.functional as F

    return -(2.0 / beta) * F.logsigmoid(beta * (nll - ref_nll)).mean()


def reference_nlls(model, tokenizer, items: list[dict], batch_size: int = 8) -> None:
    """Store each item's summed answer NLL under the current weights as item["ref_nll"]."""
    for it, v in zip(items, answer_nlls(model, tokenizer, items, batch_size), strict=True):
        it["ref_nll"] = v


@register_method
class NPO(GradientMethod):
    """The forget term is measured against the model before unlearning: `setup` stores each forget
    example's reference NLL once, so no second model runs during training (unless the KL retain term
    needs the frozen copy)."""

    name = "npo"
    summary = "negative preference optimisation against the frozen model (beta) + retain term"
    config_class = NPOConfig
    order = 30

    def setup(self, model, tokenizer, data):
        reference_nlls(model, tokenizer, self.forget_items)
        super().setup(model, tokenizer, data)

    def loss(self, model, forget, retain):
        nll, _ = sequence_nll(model, forget)
        forget_loss = npo_loss(nll, forget["ref_nll"].to(nll.dtype), self.config.beta)
        logs = {"forget": float(forget_loss.detach()), "forget_nll": float(nll.mean().detach())}
        return self.plus_retain(model, forget_loss, retain, logs)
