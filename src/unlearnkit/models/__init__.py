"""Models: small nets for the offline benchmarks and standard vision backbones."""

from __future__ import annotations

from unlearnkit.models import small as _small  # noqa: F401  (registers)
from unlearnkit.models._base import MODELS, create_model, list_models, register_model

__all__ = ["MODELS", "create_model", "list_models", "register_model"]
