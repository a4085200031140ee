"""Unlearning methods, one per file, registered by name (importing this package fills the registry).

To add your own: subclass :class:`Method` (keyword-only hyperparameters in ``__init__``, declared in
``_parameter_constraints`` with the constraint helpers below, and a ``_unlearn(model, data, generator)`` body
reading :class:`UnlearnData`), decorate it with :func:`register_method`; see ``docs/adding_a_method.md``.
"""

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
    BOOLEAN,
    METHODS,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    NONE,
    OPTIMIZER,
    POSITIVE,
    POSITIVE_INT,
    UNIT,
    Choice,
    Interval,
    IntRange,
    LogUniform,
    Method,
    Options,
    Uniform,
    UnlearnData,
    check_method_modality,
    create_method,
    list_methods,
    register_method,
    search_space_problems,
)
from unlearnkit.methods._losses import accuracy_on, ce, clipped_step

__all__ = [
    "BOOLEAN",
    "METHODS",
    "NONE",
    "NON_NEGATIVE",
    "NON_NEGATIVE_INT",
    "OPTIMIZER",
    "POSITIVE",
    "POSITIVE_INT",
    "UNIT",
    "Choice",
    "IntRange",
    "Interval",
    "LogUniform",
    "Method",
    "Options",
    "Uniform",
    "UnlearnData",
    "accuracy_on",
    "ce",
    "check_method_modality",
    "clipped_step",
    "create_method",
    "list_methods",
    "register_method",
    "search_space_problems",
]
