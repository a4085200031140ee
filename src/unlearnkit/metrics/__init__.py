"""Metrics: pure functions in :mod:`unlearnkit.metrics.functional`, registered wrappers here."""

from __future__ import annotations

from unlearnkit.metrics import ensemble_eval as _ensemble_eval  # noqa: F401  (registers the ε-score names)
from unlearnkit.metrics import lira as _lira  # noqa: F401  (registers the LiRA/U-LiRA names)
from unlearnkit.metrics import mia as _mia  # noqa: F401  (registers)
from unlearnkit.metrics import standard as _standard  # noqa: F401  (registers)
from unlearnkit.metrics import wfnet as _wfnet  # noqa: F401  (registers the WF-Net deletion/insertion figures)
from unlearnkit.metrics._base import (
    METRICS,
    EvalContext,
    Metric,
    MetricUnavailable,
    NotComputed,
    evaluate,
    is_not_computed,
    list_metrics,
    register_metric,
    select_metrics,
    value_to_json,
)
from unlearnkit.metrics.ensemble_eval import forget_quality_eval, forget_quality_of_models
from unlearnkit.metrics.forget_quality import (
    ForgetQualityResult,
    final_score,
    forget_quality,
    logit_scaled_confidence,
)

__all__ = [
    "METRICS",
    "EvalContext",
    "ForgetQualityResult",
    "Metric",
    "MetricUnavailable",
    "NotComputed",
    "evaluate",
    "final_score",
    "forget_quality",
    "forget_quality_eval",
    "forget_quality_of_models",
    "is_not_computed",
    "list_metrics",
    "logit_scaled_confidence",
    "register_metric",
    "select_metrics",
    "value_to_json",
]
