"""Retrain from scratch on the retain set: exact unlearning, the gold standard every method is compared to.

The model is re-initialised with the scenario's model factory and trained with the same recipe as the
original (``UnlearnData.train_config``), so the only difference is the missing forget set.

Retraining has no hyperparameters of its own (``search_space = {}``): it is the reference every tuning
measures against.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.engine import train_model
from unlearnkit.methods._base import Method, UnlearnData, register_method


@register_method("retrain")
class Retrain(Method):
    """Train a freshly initialised model on D_r with the original training recipe."""

    paper = "baseline: retraining from scratch on the retain set (exact unlearning)"
    search_space = {}
    needs = frozenset({"retain", "train_recipe"})

    def __init__(self) -> None:
        pass

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        assert data.make_model is not None and data.train_config is not None  # checked by check_data
        fresh = data.make_model().to(data.device)
        self.history_ = train_model(
            fresh, data.retain, data.train_config, device=data.device, generator=generator,
            on_epoch=data.on_epoch, where="retrain",
        )  # fmt: skip
        return fresh
