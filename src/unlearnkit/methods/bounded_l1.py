"""Bounded forget loss with full fine-tuning and an L1 pull to the original weights: the talk's "Bounded loss
w/ L1 regularization" baseline for class unlearning without retain data.

Baseline of Poppi et al., "Unlearning Vision Transformers without Retaining Data via Low-Rank
Decompositions", ICPR 2024 (DOI 10.1007/978-3-031-78122-3_10); ``specs/methods.md`` §2.3.

Every parameter trains on the k forget images with

    L = L_unl(f_θ(x_f), y_f) + λ·‖θ − θ0‖₁ / |θ|,

L_unl the bounded loss of ``lora_bounded`` (by default the hinge on log CE, mean_i max(0, log B − log CE_i);
or the hinge mean_i max(0, B − CE_i), or the inverse mean_i 1/(CE_i + ε)). It isolates the effect of the
low-rank adapters: same loss, but no rank constraint.
λ, B and the budget are [CHOICE]; the defaults equal ``lora_bounded``'s and ``neggrad_l1``'s. Measured on the
digits ViT (class 3, k = 10, seeds 0-2, hinge loss): the damage plateaus once the forget images pass the bound (retain
−0.64 at 25 steps, −0.67 at 50 to 200 at lr 1e-3; −0.17 at lr 1e-4), where −CE keeps falling: full
fine-tuning on k images moves far more than the adapters do.
"""

from __future__ import annotations

import torch

from unlearnkit.methods._base import register_method
from unlearnkit.methods._lora import BOUNDED_LOSS_CONSTRAINTS, FullFineTuneForgetMethod, bounded_forget_loss


@register_method("bounded_l1")
class BoundedL1(FullFineTuneForgetMethod):
    """Minimise a bounded forget loss on the k forget images + λ·mean|θ − θ0| over every parameter.

    Args:
        loss: ``log_hinge`` (max(0, log B − log CE)), ``hinge`` (max(0, B − CE)) or ``inverse`` (1/(CE + ε)).
        bound: B of the hinge losses.
        eps: ε of the inverse loss.
        l1_weight: λ, the weight of the mean absolute drift from the original weights.
        steps: optimiser steps.
        lr: AdamW learning rate.
        batch_size: forget images per step.
        weight_decay: AdamW decoupled weight decay.
        augment: ``noise`` (Gaussian, std 0.1), ``shift`` (up to 1/8 of the side) or ``none``.
    """

    paper = "baseline of Poppi et al., ICPR 2024, doi:10.1007/978-3-031-78122-3_10"
    _parameter_constraints = {
        **FullFineTuneForgetMethod._parameter_constraints,
        **BOUNDED_LOSS_CONSTRAINTS,
    }

    def __init__(
        self, *, loss: str = "log_hinge", bound: float = 4.0, eps: float = 0.01, l1_weight: float = 1.0,
        steps: int = 300, lr: float = 2e-3, batch_size: int = 16, weight_decay: float = 0.0, augment: str = "noise",
    ) -> None:  # fmt: skip
        self.loss = loss
        self.bound = bound
        self.eps = eps
        self.l1_weight = l1_weight
        self.steps = steps
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.augment = augment

    def _forget_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return bounded_forget_loss(logits, y, self.loss, self.bound, self.eps)  # L_unl; the base adds the L1 pull
