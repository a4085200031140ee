"""WF-Net's deletion/insertion analysis as registered metrics (spec ``methods.md`` §1.5).

They apply only to a WF-Net model on a class request; anything else is ``not computed: not a WF-Net
model``. The model-specific analysis lives next to the method
(:meth:`~unlearnkit.methods._wfnet_model.WFNetModel.filter_analysis`): a model is a WF-Net here when it has
that method (:class:`FilterAnalysable`), so this module does not import the methods. The analysis runs on the scenario's
held-out images (``forget_test``: the forgotten classes, ``retain_test``: the others), once per
evaluation: every metric below reads the same cached result.

* ``wfnet_deletion_auc_forget`` ↓ / ``wfnet_insertion_auc_forget`` ↑: area under the forget-class accuracy
  while the filters most important to the class (1 − α) are removed / restored — the talk's figures;
* ``wfnet_deletion_auc_retain`` ↑ / ``wfnet_insertion_auc_retain`` ↓: the same for the other classes (a
  class-specific ranking spares them under deletion and does not restore them first under insertion);
* ``wfnet_deletion_curves``: the curves themselves, a JSON-able mapping (fractions, curves and AUCs of
  the α ranking and of the random and weight-magnitude baselines). It is not a number: it is stored
  with the run for the report section :mod:`unlearnkit.reports.wfnet`, which plots it. It is registered
  only when :func:`~unlearnkit.metrics.evaluate` keeps mapping values (``metrics._base.STRUCTURED_VALUES``).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset

from unlearnkit.metrics import _base
from unlearnkit.metrics._base import EvalContext, MetricUnavailable, register_metric

#: fractions of filters removed/restored at which the curves are sampled, denser near 0 where the curves
#: move most [CHOICE: the spec's 1% steps cost 10x more forward passes]
FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
#: at most this many test images of each of the forgotten and the kept classes (seeded subsample) [CHOICE]
MAX_SAMPLES = 1000
#: name of the structured (non-numeric) curves metric
CURVES_METRIC = "wfnet_deletion_curves"


@runtime_checkable
class FilterAnalysable(Protocol):
    """A model whose filters can be removed/restored by learned per-class importance (a WF-Net)."""

    @property
    def alpha_checksum(self) -> float:
        """A fingerprint of the importances (the analysis is cached per value)."""
        ...

    def filter_analysis(
        self, forget: Dataset, retain: Dataset, classes: Sequence[int], *, fractions: Sequence[float], seed: int,
        max_samples: int, device: torch.device | str,
    ) -> dict[str, Any]:  # fmt: skip
        """The deletion/insertion curves and AUCs (JSON-able)."""
        ...


#: per WF-Net model, analysis results by (splits hash, classes, α checksum)
_RESULTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], dict[str, Any]]] = weakref.WeakKeyDictionary()


def analysis(ctx: EvalContext) -> dict[str, Any]:
    """The deletion/insertion analysis of ``ctx.model`` on ``ctx.scenario`` (JSON-able, cached per model)."""
    model = ctx.model
    if not isinstance(model, FilterAnalysable):
        raise MetricUnavailable("not a WF-Net model")
    classes = tuple(ctx.scenario.forget_classes)
    if ctx.scenario.request.kind != "class" or not classes:
        raise MetricUnavailable("the deletion/insertion analysis needs a class request")
    checksum = model.alpha_checksum
    key = (ctx.scenario.splits_hash(), classes, checksum)
    per_model = _RESULTS.setdefault(model, {})
    if key not in per_model:
        forget, retain = ctx.scenario.split("forget_test"), ctx.scenario.split("retain_test")
        if forget is None or retain is None or len(forget) == 0 or len(retain) == 0:
            raise MetricUnavailable("the scenario has no held-out images of the forgotten and the kept classes")
        per_model[key] = model.filter_analysis(
            forget, retain, classes, fractions=FRACTIONS, seed=ctx.scenario.seed, max_samples=MAX_SAMPLES,
            device=ctx.device,
        )  # fmt: skip
    return per_model[key]


def _auc(ctx: EvalContext, curve: str) -> float:
    return float(analysis(ctx)["auc"]["alpha"][curve])


_NEEDS = {"forget_test", "retain_test"}


@register_metric("wfnet_deletion_auc_forget", higher_is_better=False, needs=_NEEDS)
def wfnet_deletion_auc_forget(ctx: EvalContext) -> float:
    """WF-Net: AUC of forget-class test accuracy as filters are removed by α-importance (lower is better)."""
    return _auc(ctx, "deletion_forget")


@register_metric("wfnet_insertion_auc_forget", higher_is_better=True, needs=_NEEDS)
def wfnet_insertion_auc_forget(ctx: EvalContext) -> float:
    """WF-Net: AUC of forget-class test accuracy as filters are restored by α-importance (higher is better)."""
    return _auc(ctx, "insertion_forget")


@register_metric("wfnet_deletion_auc_retain", higher_is_better=True, needs=_NEEDS)
def wfnet_deletion_auc_retain(ctx: EvalContext) -> float:
    """WF-Net: AUC of kept-class test accuracy as filters are removed by α-importance (higher is better)."""
    return _auc(ctx, "deletion_retain")


@register_metric("wfnet_insertion_auc_retain", higher_is_better=False, needs=_NEEDS)
def wfnet_insertion_auc_retain(ctx: EvalContext) -> float:
    """WF-Net: AUC of kept-class test accuracy as filters are restored by α-importance (lower is better)."""
    return _auc(ctx, "insertion_retain")


def wfnet_deletion_curves(ctx: EvalContext) -> dict[str, Any]:
    """WF-Net: the deletion/insertion curves (a JSON mapping for the report section, not a number)."""
    return analysis(ctx)


# A mapping is not a number: the curves are registered only where evaluate() stores mapping values as they
# are (metrics._base.STRUCTURED_VALUES); elsewhere the report section says the curves were not computed.
if getattr(_base, "STRUCTURED_VALUES", False):
    register_metric(CURVES_METRIC, higher_is_better=None, needs=_NEEDS)(wfnet_deletion_curves)  # type: ignore[arg-type]
