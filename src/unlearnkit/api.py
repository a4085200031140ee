"""The Python API's verbs: ``train``, ``unlearn`` and ``evaluate``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearnkit.engine import TrainConfig, resolve_device, seed_everything, train_model
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import UnlearnData, create_method
from unlearnkit.metrics import MetricValue
from unlearnkit.metrics import evaluate as _evaluate
from unlearnkit.models import create_model
from unlearnkit.protocols import ResourceBuilder, ResourceInputs
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


def evaluate(
    model: nn.Module,
    scenario: Scenario,
    *,
    reference: nn.Module | None = None,
    random_model: nn.Module | None = None,
    original: nn.Module | None = None,
    metrics: Iterable[str] | None = None,
    timing: dict[str, float] | None = None,
    device: str | torch.device = "auto",
    method: str | None = None,
    method_params: Mapping[str, Any] | None = None,
    unlearned_models: Sequence[nn.Module] | None = None,
    model_factory: str | Callable[[], nn.Module] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    lira_shadows: int = 0,
    lira_nonmember_split: str = "auto",
    lira_fixed_variance: bool = True,
    ensemble_n: int | None = None,
    ensemble_originals: str = "shared",
    cache_dir: str | Path | None = None,
) -> dict[str, MetricValue]:
    """Compute ``metrics`` (default: every registered one) for ``model`` on ``scenario``.

    Metrics that compare against extra models get them built here, once, from the architecture and the
    recipe: LiRA's shadows (``lira_shadows`` >= 4), U-LiRA's unlearned shadows (also ``method``), and the
    NeurIPS-2023 ε score's ensembles (``ensemble_n`` >= 2 with ``method`` run N times from ``original``, or
    N given ``unlearned_models``). Trained models of a registered architecture are cached under
    ``cache_dir`` as the benchmark runner caches them, so the values equal the runner's for the same seed.

    Args:
        model: the model to evaluate.
        scenario: the scenario whose splits are used.
        reference: the model retrained on D_r (needed by divergence metrics).
        random_model: randomly initialised model of the same architecture (ZRF).
        original: the model before unlearning (the ε score's N unlearning runs start from it).
        metrics: names to compute; unknown names raise.
        timing: measured costs (``time_s``, ``retrain_time_s``, ``peak_mem_mb``).
        device: where to run the forward passes and any training.
        method: the registered method that produced ``model`` (U-LiRA and the ε score rerun it).
        method_params: its hyperparameters.
        unlearned_models: N models from N runs of the unlearning algorithm (the ε score's unlearned side).
        model_factory: the architecture: a registered model name or a zero-argument ``nn.Module`` factory.
        model_kwargs: passed to a registered model's factory.
        train_config: the recipe ``original`` was trained with (default :class:`TrainConfig`, as ``train``).
        lira_shadows: LiRA shadow models (0 = off, else >= 4).
        lira_nonmember_split: ``auto``, ``test``, ``val`` or ``forget_test``.
        lira_fixed_variance: one global σ in the LiRA tests (advised below ~64 shadows).
        ensemble_n: models per side of the ε score (default: ``len(unlearned_models)``, else 0 = off).
        ensemble_originals: ``shared`` (every run starts from ``original``, as published) or ``per_seed``.
        cache_dir: root of the model caches (default ``$UNLEARNKIT_CACHE``); unused for a factory callable.

    Returns:
        name -> float (or a JSON-able mapping), or :class:`~unlearnkit.metrics.NotComputed` with the reason.

    Raises:
        UnlearnkitError: unknown metric, model or method names, invalid hyperparameters, or an
            ``ensemble_n`` that contradicts ``unlearned_models``.
    """
    if isinstance(lira_shadows, bool) or not isinstance(lira_shadows, int) or lira_shadows < 0:
        raise UnlearnkitError(f"lira_shadows must be an integer >= 0, got {lira_shadows!r}")
    given = list(unlearned_models) if unlearned_models is not None else None
    if given is not None and not all(isinstance(m, nn.Module) for m in given):
        raise UnlearnkitError("unlearned_models must be a sequence of nn.Module")
    if ensemble_n is None:
        ensemble_n = len(given) if given is not None else 0
    elif given is not None and ensemble_n != len(given):
        raise UnlearnkitError(f"ensemble_n = {ensemble_n} but {len(given)} unlearned_models were given")
    if method is not None:
        create_method(method, **dict(method_params or {})).validate_params()  # bad names fail before any work
    if model_factory is not None and train_config is None:
        train_config = TrainConfig()
    dev = resolve_device(device)
    inputs = ResourceInputs(
        scenario, model=model_factory, model_kwargs=dict(model_kwargs or {}), train=train_config, device=dev,
        method=method, params=dict(method_params or {}), original=original, unlearned_models=given,
        lira_shadows=lira_shadows, lira_nonmember_split=lira_nonmember_split, ensemble_n=ensemble_n,
        ensemble_originals=ensemble_originals,
    )  # fmt: skip
    return _evaluate(
        model, scenario, reference=reference, random_model=random_model, original=original, metrics=metrics,
        timing=timing, device=dev, resources=ResourceBuilder(inputs, cache_dir=cache_dir),
        options={"lira_fixed_variance": lira_fixed_variance},
    )  # fmt: skip
