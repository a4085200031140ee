"""Unlearning methods, one per file, registered by name (importing this package fills the registry)."""

from __future__ import annotations

from unlearnkit.methods import (  # noqa: F401  (importing registers each method)
    bad_teacher,
    boundary_expand,
    boundary_shrink,
    bounded_l1,
    cf_k,
    eu_k,
    finetune,
    fisher_forgetting,
    l1_sparse,
    lora_bounded,
    neggrad,
    neggrad_l1,
    neggrad_lora,
    neggrad_plus,
    random_labels,
    retrain,
    salun,
    scrub,
    sisa,
    ssd,
    unsir,
    untrain,
    wfnet,
)
from unlearnkit.methods._base import (
    METHODS,
    Method,
    UnlearnData,
    check_method_modality,
    create_method,
    list_methods,
    register_method,
)

__all__ = [
    "METHODS",
    "Method",
    "UnlearnData",
    "check_method_modality",
    "create_method",
    "list_methods",
    "register_method",
]
