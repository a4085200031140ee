"""The train and eval loops every part of unlearnkit reuses (nanoGPT-sized, on purpose).

In-memory datasets (:class:`~unlearnkit.data.ArrayDataset`, or a ``Subset`` of one) are batched by
indexing their tensors directly; anything else goes through a ``DataLoader`` with ``num_workers=0`` and
a seeded generator, so a seed fixes the batch order either way.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from unlearnkit.data import ArrayDataset
from unlearnkit.errors import TrainingDivergedError, UnlearnkitError

Batch = tuple[torch.Tensor, torch.Tensor]
EpochCallback = Callable[[int, int, float], None]


def _as_arrays(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(x, y) tensors of an in-memory dataset or a (nested) Subset of one, else None."""
    idx: np.ndarray | None = None
    while isinstance(ds, Subset):
        sub = np.asarray(ds.indices, dtype=np.int64)
        idx = sub if idx is None else sub[idx]
        ds = ds.dataset
    if isinstance(ds, ArrayDataset):
        if idx is None:
            return ds.x, ds.y
        t = torch.as_tensor(idx)
        return ds.x[t], ds.y[t]
    return None


def iterate(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Yield ``(x, y)`` batches (on CPU) from ``dataset``."""
    if batch_size < 1:
        raise UnlearnkitError(f"batch_size must be >= 1, got {batch_size}")
    arrays = _as_arrays(dataset)
    if arrays is not None:
        x, y = arrays
        n = len(y)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for i in range(0, stop, batch_size):
            j = order[i : i + batch_size]
            yield (x[j].float().div_(255.0) if x.dtype == torch.uint8 else x[j]), y[j]  # uint8 images -> [0, 1]
        return
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0, drop_last=drop_last
    )
    for xb, yb in loader:
        yield xb.float(), torch.as_tensor(yb, dtype=torch.long)


def cycle(dataset: Dataset, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
    """Endless shuffled batches (re-shuffled every pass)."""
    while True:
        yield from iterate(dataset, batch_size, shuffle=True, generator=generator)


@dataclass
class TrainConfig:
    """How the original and the retrained models are trained (and the default for fine-tuning).

    Attributes:
        epochs: passes over the training data.
        lr: learning rate.
        batch_size: mini-batch size.
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        weight_decay: L2 penalty (decoupled for adamw).
        momentum: SGD momentum.
        scheduler: ``cosine`` (to 0 over the run) or ``none``.
        amp: bfloat16 autocast when training on CUDA (ignored on CPU).
    """

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    scheduler: str = "cosine"
    amp: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise UnlearnkitError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise UnlearnkitError(f"lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise UnlearnkitError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise UnlearnkitError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in ("cosine", "none"):
            raise UnlearnkitError(f"unknown scheduler {self.scheduler!r}; expected 'cosine' or 'none'")
        if self.weight_decay < 0:
            raise UnlearnkitError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def to_dict(self) -> dict:
        """Plain dict (for hashing and storage)."""
        return asdict(self)


OPTIMIZERS = ("adam", "adamw", "sgd")


def make_optimizer(
    params: object, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, *, fused: bool = False
) -> torch.optim.Optimizer:
    """``adam`` / ``adamw`` / ``sgd`` over ``params``; ``fused=True`` asks torch for its fused kernel (the same
    update in one pass over each tensor: faster on the wide stacked tensors of an ensemble, equal up to float
    rounding)."""
    opts: dict[str, Any] = {"fused": True} if fused else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **opts)  # type: ignore[arg-type]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **opts)  # type: ignore[arg-type]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **opts)  # type: ignore[arg-type]
    raise UnlearnkitError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when ``enabled``; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Raise :class:`TrainingDivergedError` if ``loss`` is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise TrainingDivergedError(f"loss became {loss.item()} during {where}")


def train_model(
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainConfig,
    *,
    device: torch.device,
    generator: torch.Generator | None = None,
    on_epoch: EpochCallback | None = None,
    where: str = "training",
) -> list[float]:
    """Minimise cross-entropy on ``dataset`` in place; return the mean loss of each epoch."""
    model.to(device).train()
    opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    steps_per_epoch = max(1, math.ceil(len(dataset) / cfg.batch_size))
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs * steps_per_epoch))
        if cfg.scheduler == "cosine"
        else None
    )
    history: list[float] = []
    for epoch in range(cfg.epochs):
        total, count = 0.0, 0
        for xb, yb in iterate(dataset, cfg.batch_size, shuffle=True, generator=generator):
            xb, yb = xb.to(device), yb.to(device)
            with autocast(device, cfg.amp):
                loss = F.cross_entropy(model(xb), yb)
            check_finite(loss, where)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.item() * len(yb)
            count += len(yb)
        history.append(total / max(count, 1))
        if on_epoch is not None:
            on_epoch(epoch + 1, cfg.epochs, history[-1])
    model.eval()
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, dataset: Dataset, *, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``dataset`` in order, as a float32 CPU tensor ``[n, C]``."""
    was_training = model.training
    model.to(device).eval()
    outs = [model(xb.to(device)).float().cpu() for xb, _ in iterate(dataset, batch_size)]
    model.train(was_training)
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)


def labels_of(dataset: Dataset) -> torch.Tensor:
    """Labels of ``dataset`` in order (fast for in-memory datasets)."""
    arrays = _as_arrays(dataset)
    if arrays is not None:
        return arrays[1].clone()
    return torch.cat([yb for _, yb in iterate(dataset, 512)]) if len(dataset) else torch.empty(0, dtype=torch.long)
