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

from unlearnkit.methods._base import register_method
from unlearnkit.methods._lora import FullFineTuneForgetMethod, negative_ce


@register_method("neggrad_l1")
class NegGradL1(FullFineTuneForgetMethod):
    """Minimise −CE on the k forget images + λ·mean|θ − θ0| over every parameter.

    Args:
        l1_weight: λ, the weight of the mean absolute drift from the original weights.
        steps: optimiser steps.
        lr: AdamW learning rate.
        batch_size: forget images per step.
        weight_decay: AdamW decoupled weight decay.
        augment: ``noise`` (Gaussian, std 0.1), ``shift`` (up to 1/8 of the side) or ``none``.
    """

    paper = "baseline of Poppi et al., ICPR 2024, doi:10.1007/978-3-031-78122-3_10"

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

    def _forget_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return negative_ce(logits, y)  # −CE: unbounded; the base adds λ·‖θ − θ0‖₁ / |θ|
