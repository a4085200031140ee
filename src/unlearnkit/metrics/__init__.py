"""Metrics: pure functions in :mod:`unlearnkit.metrics.functional`, registered wrappers here.

Metrics that need extra models (LiRA's shadows, the ε score's ensembles) declare them in ``needs`` and read
them with ``ctx.resource(name)``; :mod:`unlearnkit.protocols` builds them. This package never imports
:mod:`unlearnkit.methods`.
"""

from __future__ import annotations

from unlearnkit.metrics import epsilon_score as _epsilon_score  # noqa: F401  (registers the ε-score figures)
from unlearnkit.metrics import mia as _mia  # noqa: F401  (registers)
from unlearnkit.metrics import relearn as _relearn  # noqa: F401  (registers the relearning metrics)
from unlearnkit.metrics import shadow_attacks as _shadow_attacks  # noqa: F401  (registers LiRA/U-LiRA)
from unlearnkit.metrics import standard as _standard  # noqa: F401  (registers)
from unlearnkit.metrics import wfnet as _wfnet  # noqa: F401  (registers the WF-Net deletion/insertion figures)
from unlearnkit.metrics._base import (
    METRICS,
    EvalContext,
    Metric,
    MetricUnavailable,
    MetricValue,
    NotComputed,
    ResourceProvider,
    evaluate,
    evaluate_context,
    is_not_computed,
    list_metrics,
    register_metric,
    select_metrics,
    value_to_json,
)
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
    "MetricValue",
    "NotComputed",
    "ResourceProvider",
    "evaluate",
    "evaluate_context",
    "final_score",
    "forget_quality",
    "is_not_computed",
    "list_metrics",
    "logit_scaled_confidence",
    "register_metric",
    "select_metrics",
    "value_to_json",
]
