"""Pieces several methods share: losses, relabelling, the paired forget/retain batch stream."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from unlearnkit.engine import check_finite, cycle, iterate


def random_other_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """For each label, a uniformly random *different* label (needs ``num_classes >= 2``)."""
    offset = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y + offset) % num_classes


def l1_to(model: nn.Module, reference: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean absolute difference between ``model``'s parameters and ``reference`` (||θ−θ0||₁ / |θ|)."""
    diffs = [(p - reference[n]).abs().sum() for n, p in model.named_parameters() if p.requires_grad]
    numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return torch.stack(diffs).sum() / max(numel, 1)


def paired_batches(
    retain: Dataset, forget: Dataset, batch_size: int, forget_batch_size: int, generator: torch.Generator
) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]:
    """One epoch over ``retain``, each batch paired with a batch from an endless pass over ``forget``."""
    forget_stream = cycle(forget, forget_batch_size, generator)
    for rb in iterate(retain, batch_size, shuffle=True, generator=generator):
        yield rb, next(forget_stream)


@torch.no_grad()
def accuracy_on(model: nn.Module, dataset: Dataset, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (keeps the model's train/eval mode)."""
    was = model.training
    model.eval()
    correct = total = 0
    for xb, yb in iterate(dataset, 512):
        correct += (model(xb.to(device)).argmax(1).cpu() == yb).sum().item()
        total += len(yb)
    model.train(was)
    return correct / max(total, 1)


def ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on a batch."""
    return F.cross_entropy(model(x), y)


def clipped_step(opt: torch.optim.Optimizer, model: nn.Module, loss: torch.Tensor, max_grad_norm: float,
                 where: str) -> float:  # fmt: skip
    """One optimiser step on ``loss`` with the gradient norm clipped to ``max_grad_norm``; returns the loss.

    A non-finite loss raises (:func:`~unlearnkit.engine.check_finite`) before the weights are touched.
    """
    check_finite(loss, where)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()
    return loss.item()
