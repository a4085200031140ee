"""Output-distribution distances used for class unlearning (Chundawat et al., AAAI 2023).

* Activation distance: mean over samples of the L2 distance between two softmax vectors.
* Jensen–Shannon divergence: the textbook per-sample JS(p, q) = ½KL(p‖m) + ½KL(q‖m), m = (p+q)/2, in
  nats (bounded by ln 2), averaged over samples. The bad-teaching reference code instead computes
  ½KL(m‖p) + ½KL(m‖q) averaged over all n·C elements (``F.kl_div`` argument order and
  ``reduction='mean'``), which is not a bounded JS; we implement the textbook form (evaluation spec §4).
* ZRF = 1 − mean JS(p_unlearned, p_random), against a randomly initialised "incompetent" model.
"""

from __future__ import annotations

import numpy as np
import torch


def _rows(p: torch.Tensor | np.ndarray) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected probabilities of shape [n, C], got {a.shape}")
    return a


def activation_distance(p: torch.Tensor | np.ndarray, q: torch.Tensor | np.ndarray) -> float:
    """Mean ‖p_i − q_i‖₂ over rows of two probability matrices ``[n, C]``."""
    a, b = _rows(p), _rows(q)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    return float(np.linalg.norm(a - b, axis=1).mean())


def js_per_sample(p: torch.Tensor | np.ndarray, q: torch.Tensor | np.ndarray) -> np.ndarray:
    """JS(p_i, q_i) in nats for each row."""
    a, b = _rows(p), _rows(q)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    m = 0.5 * (a + b)

    def kl(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, x * (np.log(x) - np.log(y)), 0.0).sum(axis=1)

    return np.clip(0.5 * kl(a, m) + 0.5 * kl(b, m), 0.0, np.log(2.0))


def js_divergence(p: torch.Tensor | np.ndarray, q: torch.Tensor | np.ndarray) -> float:
    """Mean per-sample Jensen–Shannon divergence (nats, in [0, ln 2])."""
    return float(js_per_sample(p, q).mean())


def zrf(p_unlearned: torch.Tensor | np.ndarray, p_random: torch.Tensor | np.ndarray) -> float:
    """Zero-Retrain Forgetting score 1 − mean JS(p_unlearned, p_random); 1 = behaves like a random net."""
    return float(1.0 - js_per_sample(p_unlearned, p_random).mean())
