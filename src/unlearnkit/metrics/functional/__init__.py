"""Pure metric functions on arrays/tensors: no models, no I/O."""

from __future__ import annotations

from unlearnkit.metrics.functional.classification import accuracy, entropy
from unlearnkit.metrics.functional.divergence import activation_distance, js_divergence, zrf

__all__ = ["accuracy", "activation_distance", "entropy", "js_divergence", "zrf"]
