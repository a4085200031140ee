"""The Python API's verbs: ``train`` and ``unlearn`` (``evaluate`` lives in :mod:`unlearnkit.metrics`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unlearnkit.engine import TrainConfig, resolve_device, seed_everything, train_model
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import UnlearnData, create_method
from unlearnkit.models import create_model
from unlearnkit.scenario import Scenario


def train(
    model: str | nn.Module,
    scenario: Scenario,
    *,
    on: str = "train",
    config: TrainConfig | None = None,
    seed: int | None = None,
    device: str | torch.device = "auto",
    **model_kwargs: Any,
) -> nn.Module:
    """Train ``model`` (a registered name or a module, trained in place) on a split of ``scenario``.

    Args:
        model: registered model name (built for the scenario's classes and input shape) or an ``nn.Module``.
        scenario: the scenario.
        on: ``"train"`` (D = D_r ∪ D_f: the original model) or ``"retain"`` (retrain from scratch).
        config: the training recipe (default :class:`TrainConfig`).
        seed: defaults to the scenario's seed.
        device: ``auto``/``cpu``/``cuda``/``mps``.
    """
    if on not in ("train", "retain"):
        raise UnlearnkitError(f"train(on=...) must be 'train' or 'retain', got {on!r}")
    seed = scenario.seed if seed is None else seed
    generator = seed_everything(seed)
    net = (
        model
        if isinstance(model, nn.Module)
        else create_model(model, scenario.bundle.num_classes, scenario.bundle.in_shape, **model_kwargs)
    )
    train_model(net, scenario.split(on), config or TrainConfig(), device=resolve_device(device), generator=generator)
    return net


def unlearn(
    method: str,
    model: nn.Module,
    scenario: Scenario | UnlearnData,
    *,
    device: str | torch.device = "auto",
    **params: Any,
) -> nn.Module:
    """Run the registered ``method`` (with hyperparameters ``params``) on a copy of ``model``."""
    m = create_method(method, **params)
    data = scenario if isinstance(scenario, UnlearnData) else UnlearnData.from_scenario(scenario, device=device)
    return m.unlearn(model, data)
