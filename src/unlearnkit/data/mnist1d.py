"""MNIST-1D (Greydanus, 2020): 40-point 1-D signals of the digits 0-9, generated locally.

The ``mnist1d`` package builds the dataset procedurally from its templates with a fixed seed, so it is
offline and reproducible. Inputs are shaped ``[1, 40]`` (one channel), 4,000 train and 1,000 test.
"""

from __future__ import annotations

import numpy as np
import torch

from unlearnkit.data._base import ArrayDataset, DatasetBundle, register_dataset


@register_dataset("mnist1d")
def mnist1d(root: str | None = None, download: bool = False) -> DatasetBundle:
    """Generate MNIST-1D with the package's default arguments (seed 42, 5,000 samples)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    d = make_dataset(args)
    xtr = torch.as_tensor(d["x"], dtype=torch.float32).unsqueeze(1)
    xte = torch.as_tensor(d["x_test"], dtype=torch.float32).unsqueeze(1)
    ytr, yte = np.asarray(d["y"], np.int64), np.asarray(d["y_test"], np.int64)
    return DatasetBundle(
        name="mnist1d",
        train=ArrayDataset(xtr, ytr),
        test=ArrayDataset(xte, yte),
        train_targets=ytr,
        test_targets=yte,
        num_classes=10,
        in_shape=(1, int(xtr.shape[-1])),
        class_names=[str(i) for i in range(10)],
        meta={"source": "mnist1d.make_dataset", "seed": int(args.seed)},
    )
