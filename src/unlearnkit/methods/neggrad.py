"""NegGrad: gradient ascent on the forget set (maximise CE on D_f).

The standard baseline (e.g. Golatkar et al., CVPR 2020; Thudi et al., 2022). The loss is unbounded, so
gradients are clipped, and training stops early once the forget-set accuracy reaches
``stop_forget_acc`` (spec §7.2: "stop when Acc_f reaches 0" [CHOICE]; ``None`` runs every epoch).

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-5, 1e-2]; ``epochs`` integer [1, 10]. The ranges bracket the defaults and stay inside
``_parameter_constraints``.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.engine import iterate, make_optimizer
from unlearnkit.methods._base import (
    NONE,
    OPTIMIZER,
    POSITIVE,
    POSITIVE_INT,
    UNIT,
    IntRange,
    LogUniform,
    Method,
    UnlearnData,
    register_method,
)
from unlearnkit.methods._losses import accuracy_on, ce, clipped_step


@register_method("neggrad")
class NegGrad(Method):
    """Minimise −CE(f(x_f), y_f) on D_f with clipped gradients."""

    paper = 'baseline, as in Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020, arXiv:1911.04933'
    search_space = {"lr": LogUniform(1e-5, 1e-2), "epochs": IntRange(1, 10)}
    needs = frozenset({"forget"})
    _parameter_constraints = {
        "epochs": [POSITIVE_INT],
        "lr": [POSITIVE],
        "batch_size": [POSITIVE_INT],
        "optimizer": [OPTIMIZER],
        "max_grad_norm": [POSITIVE],
        "stop_forget_acc": [UNIT, NONE],
    }

    def __init__(
        self, *, epochs: int = 5, lr: float = 1e-4, batch_size: int = 64, optimizer: str = "adam",
        max_grad_norm: float = 1.0, stop_forget_acc: float | None = None,
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        self.stop_forget_acc = stop_forget_acc

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        opt = make_optimizer(model.parameters(), self.optimizer, self.lr)
        self.history_: list[float] = []
        model.train()
        for epoch in range(self.epochs):
            total = 0.0
            for xb, yb in iterate(data.forget, self.batch_size, shuffle=True, generator=generator):
                loss = -ce(model, xb.to(data.device), yb.to(data.device))  # ascent on CE_f
                total += clipped_step(opt, model, loss, self.max_grad_norm, "neggrad")
            self.history_.append(total)
            if data.on_epoch:
                data.on_epoch(epoch + 1, self.epochs, total)
            if self.stop_forget_acc is not None:
                if accuracy_on(model, data.forget, data.device) <= self.stop_forget_acc:
                    break
        return model
