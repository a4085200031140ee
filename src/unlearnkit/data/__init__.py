"""Datasets: offline ``digits`` and ``mnist1d``, torchvision sets, image folders, any user Dataset."""

from __future__ import annotations

from unlearnkit.data import digits as _digits  # noqa: F401  (registers)
from unlearnkit.data import image_folder as _image_folder  # noqa: F401
from unlearnkit.data import mnist1d as _mnist1d  # noqa: F401
from unlearnkit.data import torchvision_sets as _torchvision_sets  # noqa: F401
from unlearnkit.data._base import DATASETS, ArrayDataset, DatasetBundle, from_torch, register_dataset
from unlearnkit.data._fingerprint import dataset_fingerprint


def load_dataset(name: str, root: str | None = None, download: bool = False, **kwargs: object) -> DatasetBundle:
    """Load the registered dataset ``name`` (``root``/``download`` go to torchvision loaders)."""
    return DATASETS.get(name)(root=root, download=download, **kwargs)


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching ``pattern``."""
    return DATASETS.list(pattern)


__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetBundle",
    "dataset_fingerprint",
    "from_torch",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
