"""Fine-tune (FT): keep training on the retain set only; forgetting comes from catastrophic forgetting.

The standard baseline of Golatkar et al. (CVPR 2020) and most later papers; defaults follow the
bad-teaching CIFAR-20 notebook's range (a few epochs, lr 1e-4 to 1e-2) [CHOICE].

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-4, 1e-2]; ``epochs`` integer [1, 10]; ``optimizer`` adam or sgd. The ranges
bracket the defaults and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.engine import TrainConfig, train_model
from unlearnkit.methods._base import (
    NON_NEGATIVE,
    OPTIMIZER,
    POSITIVE,
    POSITIVE_INT,
    Choice,
    IntRange,
    LogUniform,
    Method,
    UnlearnData,
    register_method,
)


@register_method("finetune")
class Finetune(Method):
    """Minimise CE on D_r for ``epochs`` epochs (cosine schedule)."""

    paper = 'baseline, as in Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020, arXiv:1911.04933'
    search_space = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 10), "optimizer": Choice(("adam", "sgd"))}
    needs = frozenset({"retain"})
    _parameter_constraints = {
        "epochs": [POSITIVE_INT],
        "lr": [POSITIVE],
        "batch_size": [POSITIVE_INT],
        "optimizer": [OPTIMIZER],
        "weight_decay": [NON_NEGATIVE],
    }

    def __init__(
        self, *, epochs: int = 5, lr: float = 1e-3, batch_size: int = 64, optimizer: str = "adam",
        weight_decay: float = 5e-4,
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        cfg = TrainConfig(
            epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, optimizer=self.optimizer,
            weight_decay=self.weight_decay, scheduler="cosine",
        )  # fmt: skip
        self.history_ = train_model(
            model, data.retain, cfg, device=data.device, generator=generator, on_epoch=data.on_epoch,
            where="finetune",
        )  # fmt: skip
        return model
