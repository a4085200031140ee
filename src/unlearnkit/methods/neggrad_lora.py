"""NegGrad through low-rank adapters: the talk's "Negative gradient w/ low-rank" baseline (no retain data).

Baseline of Poppi et al., "Unlearning Vision Transformers without Retaining Data via Low-Rank
Decompositions", ICPR 2024 (DOI 10.1007/978-3-031-78122-3_10); ``specs/methods.md`` §2.3.

The architecture of ``lora_bounded`` (LoRA on every attention Q/K/V, W = W0 + (α/r)·B A, merged back), but
the forget loss is the unbounded negative cross-entropy −CE(f(x_f), y_f): nothing stops the ascent once
the class is forgotten, so the update keeps growing for the whole budget. An adapter penalty λ·R(A, B) is
available (``reg_weight``, default 0: the talk's baseline has only the low-rank constraint) [CHOICE].
The budget defaults (steps, lr, rank, augmentation) equal ``lora_bounded``'s so the two differ only in the loss.
Measured on the digits ViT (class 3, k = 10, seeds 0-2, lr 1e-3): forget accuracy 0.66 and retain −0.006
after 25 steps, then retain −0.18 at 50 steps and −0.83 at 200: nothing in the loss says when to stop.
"""

from __future__ import annotations

import torch

from unlearnkit.methods._base import register_method
from unlearnkit.methods._lora import LoraForgetMethod, LoraHandle, negative_ce


@register_method("neggrad_lora")
class NegGradLora(LoraForgetMethod):
    """Minimise −CE on the k forget images through LoRA adapters on the attention Q/K/V; merge them back.

    Args:
        rank: LoRA rank r (at most each adapted layer's smaller side).
        alpha: LoRA α (the update is scaled by α/r); ``None`` for α = r.
        dropout: LoRA dropout on the adapter's input.
        regularizer: ``delta``, ``l1`` or ``l2`` (see ``lora_bounded``).
        reg_weight: λ, the regulariser's weight (0: none).
        steps: optimiser steps.
        lr: AdamW learning rate.
        batch_size: forget images per step.
        weight_decay: AdamW decoupled weight decay on the adapters.
        augment: ``noise`` (Gaussian, std 0.1), ``shift`` (up to 1/8 of the side) or ``none``.
    """

    paper = "baseline of Poppi et al., ICPR 2024, doi:10.1007/978-3-031-78122-3_10"

    def __init__(
        self, *, rank: int = 8, alpha: float | None = None, dropout: float = 0.0, regularizer: str = "delta",
        reg_weight: float = 0.0, steps: int = 300, lr: float = 2e-3, batch_size: int = 16, weight_decay: float = 0.0,
        augment: str = "noise",
    ) -> None:  # fmt: skip
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.regularizer = regularizer
        self.reg_weight = reg_weight
        self.steps = steps
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.augment = augment

    def _forget_loss(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, lora: LoraHandle) -> torch.Tensor:
        return negative_ce(logits, y)  # −CE: unbounded; the base adds λ·R(A, B) and merges the adapters
