"""Sanity checks on models: no number is ever computed from a model with NaN/inf weights or outputs."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from unlearnkit.engine.loops import iterate


def nonfinite_weights(model: nn.Module) -> str | None:
    """The name of the first floating parameter or buffer holding NaN/inf, or ``None`` when all are finite."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
            return name
    return None


def nonfinite_reason(
    model: nn.Module, dataset: Dataset | None, *, device: torch.device, batch_size: int = 64
) -> str | None:
    """Why ``model`` must not be scored (non-finite weights, or outputs on the first batch of ``dataset``).

    Returns ``None`` for a finite model.
    """
    bad = nonfinite_weights(model)
    if bad is not None:
        return f"the model has non-finite weights ({bad})"
    if dataset is None or len(dataset) == 0:
        return None
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.no_grad():
            xb, _ = next(iter(iterate(dataset, batch_size)))
            out = model(xb.to(device))
    finally:
        model.train(was_training)
    if isinstance(out, torch.Tensor) and out.is_floating_point() and not bool(torch.isfinite(out).all()):
        return "the model has non-finite outputs on the first evaluation batch"
    return None


def collapse_flag(metrics: dict[str, object], num_classes: int, *, margin: float = 0.05) -> str | None:
    """A warning when retain or test accuracy is within ``margin`` of chance (``1/num_classes``), else ``None``.

    Such a model is scored (it is a real outcome, e.g. of a too large learning rate) but reports flag it.
    """
    chance = 1.0 / max(1, num_classes)
    for name in ("acc_retain", "acc_retain_test", "acc_test"):
        v = metrics.get(name)
        if isinstance(v, int | float) and not isinstance(v, bool) and abs(float(v) - chance) <= margin:
            return f"collapsed: {name} {float(v):.3f} is within {margin} of chance ({chance:.3f})"
    return None
