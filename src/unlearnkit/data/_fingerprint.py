"""Content fingerprints of datasets: what a cached model was trained on, so changed data never reuses it.

:func:`dataset_fingerprint` hashes

* in-memory sets (:class:`~unlearnkit.data.ArrayDataset` and its uint8 image variant, ``TensorDataset``)
  by their tensors' bytes, dtypes and shapes (the built-in loaders, ``image_folder`` and the torchvision
  sets included, decode everything into such tensors, so their fingerprint is of the pixels actually used);
* torchvision sets holding their decoded arrays (``MNIST``, ``CIFAR10``, ``SVHN`` handed to ``from_torch``)
  by ``data`` and ``targets`` plus the ``repr`` of their transforms;
* file-backed sets (``torchvision.datasets.DatasetFolder``/``ImageFolder`` and anything else with a
  ``samples`` list of ``(path, target)``) by the file list with sizes and modification times, their class
  mapping and the ``repr`` of their transforms;
* ``Subset`` and ``ConcatDataset`` by their parts (and the indices);
* any other ``Dataset`` (or one of the above whose transforms print an object address, such as a lambda)
  by its samples, iterated once.

The result is remembered on the dataset object (an attribute), so it is computed once per object.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

_ATTR = "_unlearnkit_fingerprint"


def _update_tensor(h: Any, t: torch.Tensor | np.ndarray) -> None:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}|".encode())
        a = t.numpy() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy()
    else:
        a = np.ascontiguousarray(t)
    h.update(f"T|{a.dtype.str}|{a.shape}|".encode())
    if a.dtype == object:
        h.update(repr(a.tolist()).encode())
    else:
        h.update(memoryview(a.reshape(-1).view(np.uint8)))


def _update_value(h: Any, v: Any) -> None:
    if isinstance(v, torch.Tensor | np.ndarray):
        _update_tensor(h, v)
    elif isinstance(v, tuple | list):
        h.update(f"S{len(v)}|".encode())
        for x in v:
            _update_value(h, x)
    elif isinstance(v, dict):
        h.update(f"D{len(v)}|".encode())
        for k in sorted(v, key=str):
            h.update(f"{k!s}=".encode())
            _update_value(h, v[k])
    elif isinstance(v, bytes):
        h.update(b"b|" + v)
    else:  # numbers, strings, None; a PIL image or other object: its array if it has one
        arr = getattr(v, "__array_interface__", None)
        if arr is not None:
            _update_tensor(h, np.asarray(v))
        else:
            h.update(f"{type(v).__name__}|{v!r}|".encode())


def _file_samples(ds: Dataset) -> list | None:
    samples = getattr(ds, "samples", None)
    if not isinstance(samples, list) or not samples or " at 0x" in _transform_repr(ds):
        return None
    first = samples[0]
    if not (isinstance(first, tuple | list) and first and isinstance(first[0], str | os.PathLike)):
        return None
    return samples


def _transform_repr(ds: Dataset) -> str:
    """The transforms' ``repr`` (part of what the set serves)."""
    return "|".join(f"{a}={getattr(ds, a, None)!r}" for a in ("transform", "target_transform", "transforms"))


def _data_targets(ds: Dataset) -> tuple[Any, Any] | None:
    """``(data, targets)`` of a torchvision-style set holding its decoded samples (MNIST, CIFAR, SVHN), when its
    transforms print the same in every process (a lambda's address would make the fingerprint change)."""
    data, targets = getattr(ds, "data", None), getattr(ds, "targets", getattr(ds, "labels", None))
    if not isinstance(data, torch.Tensor | np.ndarray) or targets is None or " at 0x" in _transform_repr(ds):
        return None
    return data, np.asarray(targets)


def _compute(ds: Dataset) -> str:
    h = hashlib.sha256()
    h.update(f"{type(ds).__module__}.{type(ds).__qualname__}|".encode())
    if isinstance(ds, Subset):
        h.update(dataset_fingerprint(ds.dataset).encode())
        _update_tensor(h, np.asarray(ds.indices, dtype=np.int64))
    elif isinstance(ds, ConcatDataset):
        for part in ds.datasets:
            h.update(dataset_fingerprint(part).encode())
    elif isinstance(ds, TensorDataset):
        for t in ds.tensors:
            _update_tensor(h, t)
    elif isinstance(getattr(ds, "x", None), torch.Tensor) and isinstance(getattr(ds, "y", None), torch.Tensor):
        _update_tensor(h, ds.x)  # ArrayDataset and subclasses (their item transform is fixed by the class)
        _update_tensor(h, ds.y)
    elif (arrays := _data_targets(ds)) is not None:
        for a in arrays:
            _update_tensor(h, a)
        h.update(_transform_repr(ds).encode())
    elif (samples := _file_samples(ds)) is not None:
        for item in samples:
            path = os.fspath(item[0])
            try:
                st = os.stat(path)
                h.update(f"F|{path}|{st.st_size}|{st.st_mtime_ns}|{item[1:]!r}\n".encode())
            except OSError:
                h.update(f"F|{path}|missing|{item[1:]!r}\n".encode())
        h.update(f"{getattr(ds, 'class_to_idx', None)!r}|{_transform_repr(ds)}".encode())
    else:
        n = len(ds)  # type: ignore[arg-type]
        h.update(f"N{n}|".encode())
        for i in range(n):
            _update_value(h, ds[i])
    return h.hexdigest()[:32]


def dataset_fingerprint(ds: Dataset) -> str:
    """Content hash (32 hex digits) of a dataset; computed once per object (see the module docstring)."""
    cached = getattr(ds, _ATTR, None)
    if isinstance(cached, str):
        return cached
    fp = _compute(ds)
    try:
        setattr(ds, _ATTR, fp)
    except (AttributeError, TypeError):  # __slots__ or a frozen object: recomputed next time
        pass
    return fp
