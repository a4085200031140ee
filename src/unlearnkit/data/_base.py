"""The dataset contract every loader returns: a :class:`DatasetBundle`.

A bundle holds a train and a test ``torch.utils.data.Dataset`` whose items are ``(x, y)`` with ``x`` a
float tensor (images in [0, 1], channels first) and ``y`` an ``int``; the integer labels are also kept
as numpy arrays so splits never have to iterate the data. Fine labels (for subclass forgetting, CIFAR-20
style) and per-sample attributes (for group forgetting) are optional.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from unlearnkit._registry import Registry
from unlearnkit.errors import UnlearnkitError


class ArrayDataset(Dataset):
    """An in-memory dataset over a feature tensor and an integer label tensor.

    The engine indexes ``x`` and ``y`` directly in batches (no per-item Python calls), which makes the
    small offline benchmarks fast.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor | np.ndarray) -> None:
        y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        if len(x) != len(y):
            raise UnlearnkitError(f"features and labels differ in length: {len(x)} vs {len(y)}")
        self.x = x.float()
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


@dataclass
class DatasetBundle:
    """A dataset with a fixed train/test split and the metadata forgetting needs.

    Attributes:
        name: registry name (or ``"custom"``).
        train, test: datasets yielding ``(x, y)``.
        train_targets, test_targets: integer labels, shape ``[n]``.
        num_classes: number of (coarse) classes.
        in_shape: shape of one input, e.g. ``(1, 8, 8)``.
        class_names: one name per class.
        train_fine, test_fine, fine_names: optional fine labels (subclass forgetting).
        train_attributes, test_attributes: optional named per-sample attributes (group forgetting).
        meta: free-form provenance (source, root, ...), stored with each run.
    """

    name: str
    train: Dataset
    test: Dataset
    train_targets: np.ndarray
    test_targets: np.ndarray
    num_classes: int
    in_shape: tuple[int, ...]
    class_names: list[str]
    train_fine: np.ndarray | None = None
    test_fine: np.ndarray | None = None
    fine_names: list[str] | None = None
    train_attributes: dict[str, np.ndarray] = field(default_factory=dict)
    test_attributes: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def fingerprint(self) -> str:
        """Content hash of the data (32 hex digits): train and test samples and labels, classes, input shape.

        Part of every model-cache key, so a changed folder or another ``from_torch`` bundle never reuses a
        model trained on different data. Computed once per bundle (see :mod:`unlearnkit.data._fingerprint`).
        """
        if self._fingerprint is None:
            from unlearnkit.data._fingerprint import dataset_fingerprint

            h = hashlib.sha256()
            h.update(repr((self.num_classes, tuple(self.in_shape))).encode())
            for part in (self.train, self.test):
                h.update(dataset_fingerprint(part).encode())
            for arr in (self.train_targets, self.test_targets):
                h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
            self._fingerprint = h.hexdigest()[:32]
        return self._fingerprint

    def __post_init__(self) -> None:
        self.train_targets = np.asarray(self.train_targets, dtype=np.int64)
        self.test_targets = np.asarray(self.test_targets, dtype=np.int64)
        if len(self.train_targets) != len(self.train) or len(self.test_targets) != len(self.test):
            raise UnlearnkitError(f"dataset {self.name!r}: targets do not match the number of samples")
        for arr in (self.train_targets, self.test_targets):
            if len(arr) and (arr.min() < 0 or arr.max() >= self.num_classes):
                raise UnlearnkitError(f"dataset {self.name!r}: labels must be integers in [0, {self.num_classes})")


#: name -> loader ``fn(root=None, download=False, **kwargs) -> DatasetBundle``
DATASETS: Registry[Callable[..., DatasetBundle]] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Callable[..., DatasetBundle]], Callable[..., DatasetBundle]]:
    """Decorator registering a dataset loader under ``name``."""
    return DATASETS.register(name)


def _targets_of(ds: Dataset) -> np.ndarray:
    for attr in ("targets", "labels", "y"):
        t = getattr(ds, attr, None)
        if t is not None:
            return np.asarray(t)
    return np.asarray([torch.as_tensor(ds[i][1]).item() for i in range(len(ds))])  # no int(): keep 0.5 visible


def from_torch(
    train: Dataset,
    test: Dataset,
    *,
    num_classes: int | None = None,
    name: str = "custom",
    class_names: list[str] | None = None,
) -> DatasetBundle:
    """Wrap any user ``Dataset`` pair with integer labels into a :class:`DatasetBundle`.

    Labels are read from ``.targets``/``.labels`` when present, otherwise by iterating once.
    """
    ytr, yte = _targets_of(train), _targets_of(test)
    for y, which in ((ytr, "train"), (yte, "test")):
        if y.size and not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.equal(np.mod(y, 1), 0)):
                raise UnlearnkitError(f"{which} labels must be integers, got dtype {y.dtype}")
    ytr, yte = ytr.astype(np.int64), yte.astype(np.int64)
    k = int(num_classes if num_classes is not None else max(ytr.max(), yte.max()) + 1)
    x0 = train[0][0]
    in_shape = tuple(torch.as_tensor(x0).shape)
    names = class_names or [str(i) for i in range(k)]
    return DatasetBundle(name, train, test, ytr, yte, k, in_shape, names)
