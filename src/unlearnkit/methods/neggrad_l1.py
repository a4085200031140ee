"""NegGrad with an L1 pull to the original weights: the talk's "Negative gradient w/ L1 regularization"
baseline for class unlearning without retain data.

Baseline of Poppi et al., "Unlearning Vision Transformers without Retaining Data via Low-Rank
Decompositions", ICPR 2024 (DOI 10.1007/978-3-031-78122-3_10); ``specs/methods.md`` §2.3.

Full fine-tuning of every parameter on the k forget images with

    L = −CE(f_θ(x_f), y_f) + λ·‖θ − θ0‖₁ / |θ|

(the L1 term is the mean absolute drift, ``_losses.l1_to``). −CE is unbounded: its gradient does not fade
once the class is forgotten, so the drift is held back only by λ. λ and the budget are [CHOICE]; the
budget defaults equal ``lora_bounded``'s (steps, lr, batch size, augmentation). Measured on the digits ViT
(class 3, k = 10, seeds 0-2): retain accuracy falls to about chance (−0.85) within 25 steps at lr 1e-3, and to
−0.82 after 200 steps at lr 1e-4; λ up to 1e4 does not stop it (−CE has no floor, the penalty has).
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.methods._base import NON_NEGATIVE, UnlearnData, register_method
from unlearnkit.methods._lora import FewShotForgetMethod, forget_mode, negative_ce, trainable_report
from unlearnkit.methods._losses import l1_to


@register_method("neggrad_l1")
class NegGradL1(FewShotForgetMethod):
    """Minimise −CE on the k forget images + λ·mean|θ − θ0| over every parameter.

    Args:
        l1_weight: λ, the weight of the mean absolute drift from the original weights.
        steps: optimiser steps.
        lr: AdamW learning rate.
        batch_size: forget images per step.
        weight_decay: AdamW decoupled weight decay.
        augment: ``noise`` (Gaussian, std 0.1), ``shift`` (up to 1/8 of the side) or ``none``.
    """

    _parameter_constraints = {**FewShotForgetMethod._parameter_constraints, "l1_weight": [NON_NEGATIVE]}

    def __init__(
        self, *, l1_weight: float = 1.0, steps: int = 300, lr: float = 2e-3, batch_size: int = 16,
        weight_decay: float = 0.0, augment: str = "noise",
    ) -> None:  # fmt: skip
        self.l1_weight = l1_weight
        self.steps = steps
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.augment = augment

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
        params = [p for p in model.parameters() if p.requires_grad]
        forget_mode(model)  # eval mode: no drop-path/dropout noise, frozen normalisation statistics

        def objective(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = negative_ce(model(x), y)  # −CE: unbounded
            if self.l1_weight > 0:
                loss = loss + self.l1_weight * l1_to(model, theta0)  # λ·‖θ − θ0‖₁ / |θ|
            return loss

        self._forget_steps(params, data, objective, generator)
        self.report_ = trainable_report(sum(p.numel() for p in params), sum(p.numel() for p in model.parameters()))
        return model
