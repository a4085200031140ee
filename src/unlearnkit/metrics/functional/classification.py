"""Accuracy and predictive entropy."""

from __future__ import annotations

import numpy as np
import torch


def accuracy(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Top-1 accuracy, a fraction in [0, 1]: mean of ``argmax(logits) == labels``."""
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"expected logits [n, C] and labels [n], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((logits.argmax(1) == labels).double().mean())


def entropy(probs: torch.Tensor | np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``probs`` ``[n, C]``, with 0·log 0 = 0."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)
