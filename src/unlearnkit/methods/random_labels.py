"""Random labels (Amnesiac-style relabelling; Graves et al., AAAI 2021).

Each forget sample gets a random label different from its own, drawn once; the model is then trained
on the relabelled D_f together with D_r. Defaults: 3 epochs, Adam (the bad-teaching notebook uses
lr 1e-4 on CIFAR; 1e-3 suits the small offline models) [CHOICE].

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-4, 1e-2]; ``epochs`` integer 1, 5. The ranges bracket the defaults and stay inside
``_parameter_constraints``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import ConcatDataset

from unlearnkit.data import ArrayDataset
from unlearnkit.engine import TrainConfig, iterate, train_model
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
from unlearnkit.methods._losses import random_other_labels


@register_method("random_labels")
class RandomLabels(Method):
    """Train on D_f (each sample relabelled to a random wrong class) ∪ D_r."""

    paper = 'Graves et al., "Amnesiac Machine Learning", AAAI 2021, arXiv:2010.10981'
    search_space = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 5)}
    needs = frozenset({"forget", "retain"})
    _parameter_constraints = {
        "epochs": [POSITIVE_INT],
        "lr": [POSITIVE],
        "batch_size": [POSITIVE_INT],
        "optimizer": [OPTIMIZER],
        "weight_decay": [NON_NEGATIVE],
    }

    def __init__(
        self, *, epochs: int = 3, lr: float = 1e-3, batch_size: int = 64, optimizer: str = "adam",
        weight_decay: float = 0.0,
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        xs, ys = zip(*iterate(data.forget, 512), strict=True)
        x_f, y_f = torch.cat(xs), torch.cat(ys)
        relabelled = ArrayDataset(x_f, random_other_labels(y_f, data.num_classes, generator))
        cfg = TrainConfig(
            epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, optimizer=self.optimizer,
            weight_decay=self.weight_decay, scheduler="none",
        )  # fmt: skip
        self.history_ = train_model(
            model, ConcatDataset([relabelled, data.retain]), cfg, device=data.device, generator=generator,
            on_epoch=data.on_epoch, where="random_labels",
        )  # fmt: skip
        return model
