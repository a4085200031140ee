"""scikit-learn's ``digits`` (8x8 grey images of 0-9, 1,797 samples): the offline default.

It ships with scikit-learn, so nothing is downloaded. scikit-learn gives no test split, so a fixed
stratified 75/25 split (seed 0, independent of any run's seed) plays the role of the official one.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from unlearnkit.data._base import ArrayDataset, DatasetBundle, register_dataset

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@register_dataset("digits")
def digits(root: str | None = None, download: bool = False) -> DatasetBundle:
    """Load digits as ``1x8x8`` images in [0, 1]; ``root``/``download`` are accepted and unused."""
    d = load_digits()
    x = torch.as_tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)  # [n, 1, 8, 8]
    y = d.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return DatasetBundle(
        name="digits",
        train=ArrayDataset(x[tr], y[tr]),
        test=ArrayDataset(x[te], y[te]),
        train_targets=y[tr],
        test_targets=y[te],
        num_classes=10,
        in_shape=(1, 8, 8),
        class_names=[str(i) for i in range(10)],
        meta={"source": "sklearn.datasets.load_digits", "test_fraction": TEST_FRACTION},
    )
