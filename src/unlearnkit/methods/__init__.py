"""Unlearning methods, one per file, registered by name (importing this package fills the registry)."""

from __future__ import annotations

from unlearnkit.methods import finetune, neggrad, neggrad_plus, random_labels, retrain  # noqa: F401
from unlearnkit.methods._base import (
    METHODS,
    Method,
    UnlearnData,
    create_method,
    list_methods,
    register_method,
)

__all__ = ["METHODS", "Method", "UnlearnData", "create_method", "list_methods", "register_method"]
