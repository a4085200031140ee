"""NegGrad+: descent on the retain set and ascent on the forget set in the same step.

Kurmanji et al. (SCRUB, NeurIPS 2023, arXiv 2302.09880) define it as
L = α·CE(D_r) − (1 − α)·CE(D_f); their code uses α close to 1. Each step pairs one retain batch with
one forget batch; the forget stream cycles, so an epoch is one pass over D_r.

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-5, 1e-2]; ``epochs`` integer [1, 10]; ``alpha`` uniform [0.5, 0.99]. The ranges bracket the
defaults and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.engine import make_optimizer
from unlearnkit.methods._base import (
    OPTIMIZER,
    POSITIVE,
    POSITIVE_INT,
    UNIT,
    IntRange,
    LogUniform,
    Method,
    Uniform,
    UnlearnData,
    register_method,
)
from unlearnkit.methods._losses import ce, clipped_step, paired_batches


@register_method("neggrad_plus")
class NegGradPlus(Method):
    """Minimise α·CE_r − (1−α)·CE_f over paired retain/forget batches."""

    paper = 'NegGrad+ of Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023, arXiv:2302.09880'
    search_space = {"lr": LogUniform(1e-5, 1e-2), "epochs": IntRange(1, 10), "alpha": Uniform(0.5, 0.99)}
    needs = frozenset({"forget", "retain"})
    _parameter_constraints = {
        "epochs": [POSITIVE_INT],
        "lr": [POSITIVE],
        "alpha": [UNIT],
        "batch_size": [POSITIVE_INT],
        "optimizer": [OPTIMIZER],
        "max_grad_norm": [POSITIVE],
    }

    def __init__(
        self, *, epochs: int = 3, lr: float = 1e-3, alpha: float = 0.9, batch_size: int = 64,
        optimizer: str = "adam", max_grad_norm: float = 5.0,
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.lr = lr
        self.alpha = alpha
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        opt = make_optimizer(model.parameters(), self.optimizer, self.lr)
        self.history_: list[float] = []
        model.train()
        dev = data.device
        for epoch in range(self.epochs):
            total = 0.0
            pairs = paired_batches(data.retain, data.forget, self.batch_size, self.batch_size, generator)
            for (xr, yr), (xf, yf) in pairs:
                ce_r = ce(model, xr.to(dev), yr.to(dev))
                ce_f = ce(model, xf.to(dev), yf.to(dev))
                loss = self.alpha * ce_r - (1 - self.alpha) * ce_f  # α·CE_r − (1−α)·CE_f
                total += clipped_step(opt, model, loss, self.max_grad_norm, "neggrad_plus")
            self.history_.append(total)
            if data.on_epoch:
                data.on_epoch(epoch + 1, self.epochs, total)
        return model
