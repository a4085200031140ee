"""The untraining loss of the talk: L = 1 / (CE_f + ε) + λ·CE_r.

From "Learning, Unlearning and Relearning" (AImageLab, UNIMORE), the loss WF-Net uses to learn its
filters (Poppi, Sarto, Cornia, Baraldi, Cucchiara, "Multi-Class Unlearning for Image Classification via
Weight Filtering", IEEE Intelligent Systems 2024, arXiv 2304.02049); spec §7.1. Here it trains the
model's own weights.

    L(θ) = 1 / (E_{D_f}[CE(f(x), y)] + ε)  +  λ · E_{D_r}[CE(f(x), y)]

Both expectations are taken per mini-batch: each step pairs one retain batch with one forget batch
(the forget stream cycles; an epoch is one pass over D_r) and runs them through the model as one mixed
batch, so batch-norm statistics see both. The inverse forget term has gradient
−∇CE_f / (CE_f + ε)²: large while the model still fits D_f, vanishing as CE_f grows, so unlike NegGrad
it bounds itself. Early on, when CE_f ≈ 0, that gradient is huge, so gradients are clipped
(``max_grad_norm``) [CHOICE].

Defaults: ε = 1e-6 [spec]. λ = 10 instead of the spec's λ = 1 [CHOICE]: on digits/small_cnn (3 classes
× 3 seeds, 1 epoch of Adam lr 1e-3, retain batches of 64 paired with forget batches of 32) λ = 1 forgets
the class but loses ~3 points of retain accuracy, λ = 10 loses under one point and still forgets it.
Serves every request kind that gives a forget and a retain set.

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-4, 1e-2]; ``epochs`` integer 1, 3; ``lam`` log-uniform [1.0, 100.0]. The ranges bracket the
defaults and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.engine import make_optimizer
from unlearnkit.methods._base import (
    NON_NEGATIVE,
    OPTIMIZER,
    POSITIVE,
    POSITIVE_INT,
    IntRange,
    LogUniform,
    Method,
    UnlearnData,
    register_method,
)
from unlearnkit.methods._losses import clipped_step, paired_batches


def untraining_loss(ce_forget: torch.Tensor, ce_retain: torch.Tensor, lam: float, eps: float) -> torch.Tensor:
    """L = 1 / (CE_f + ε) + λ·CE_r (spec §7.1)."""
    return 1.0 / (ce_forget + eps) + lam * ce_retain


@register_method("untrain")
class Untrain(Method):
    """Minimise 1/(CE_f + ε) + λ·CE_r over paired forget/retain batches."""

    paper = "the untraining loss of Poppi et al., IEEE Intelligent Systems 2024, arXiv:2304.02049"
    search_space = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 3), "lam": LogUniform(1.0, 100.0)}
    needs = frozenset({"forget", "retain"})
    _parameter_constraints = {
        "epochs": [POSITIVE_INT],
        "lr": [POSITIVE],
        "lam": [NON_NEGATIVE],
        "eps": [POSITIVE],
        "batch_size": [POSITIVE_INT],
        "forget_batch_size": [POSITIVE_INT],
        "optimizer": [OPTIMIZER],
        "max_grad_norm": [POSITIVE],
    }

    def __init__(
        self, *, epochs: int = 1, lr: float = 1e-3, lam: float = 10.0, eps: float = 1e-6, batch_size: int = 64,
        forget_batch_size: int = 32, optimizer: str = "adam", max_grad_norm: float = 5.0,
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.lr = lr
        self.lam = lam
        self.eps = eps
        self.batch_size = batch_size
        self.forget_batch_size = forget_batch_size
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        opt = make_optimizer(model.parameters(), self.optimizer, self.lr)
        self.history_: list[float] = []
        self.forget_ce_: list[float] = []  # CE_f of each step's forget batch (before the step)
        model.train()
        dev = data.device
        for epoch in range(self.epochs):
            total = 0.0
            pairs = paired_batches(data.retain, data.forget, self.batch_size, self.forget_batch_size, generator)
            for (xr, yr), (xf, yf) in pairs:
                logits = model(torch.cat([xr, xf]).to(dev))  # one mixed batch: BN sees D_r and D_f together
                ce_r = F.cross_entropy(logits[: len(yr)], yr.to(dev))
                ce_f = F.cross_entropy(logits[len(yr) :], yf.to(dev))
                loss = untraining_loss(ce_f, ce_r, self.lam, self.eps)  # 1/(CE_f + ε) + λ·CE_r
                total += clipped_step(opt, model, loss, self.max_grad_norm, "untrain")
                self.forget_ce_.append(ce_f.item())
            self.history_.append(total)
            if data.on_epoch:
                data.on_epoch(epoch + 1, self.epochs, total)
        return model
