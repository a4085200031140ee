"""The NeurIPS-2023 ε score as registered metrics: F, the final score and the ceiling an ideal unlearner reaches.

Reference: Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS
unlearning competition", arXiv 2406.09073; the published scorer ``google-deepmind/unlearning_evaluation``
(``main.py``, ``metric.py``). Evaluation spec §1.1, §1.5–1.8. The scorer
(:func:`~unlearnkit.metrics.forget_quality`) is in ``forget_quality.py``; the ensembles it compares are
resources built by :mod:`unlearnkit.protocols.ensembles` (whose docstring gives the seeds, the shared
original and the reading of the ceiling):

* ``reference_ensemble``: N models retrained on D_r (R), an independent retrained ensemble (C), and C's F
  against R (the ceiling: what a perfect unlearner scores at this N);
* ``unlearned_ensemble``: N unlearned models (the method run N times, or N given models).

Each member is summarised by :class:`MemberStats` (φ on the forget set, retain and test accuracy); F =
:func:`~unlearnkit.metrics.forget_quality` of U's φ against R's, the final score =
:func:`~unlearnkit.metrics.final_score` with the mean accuracies (fractions). The ratios are uncapped.

The reference figures (ceiling, ``ensemble_n``, ``ra_r``, ``ta_r``) are the same for every method of a
scenario (:data:`REFERENCE_KEYS`). When the method fails on a run the method's figures are
``not computed`` and the reference ones stay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unlearnkit.engine import labels_of, predict_logits
from unlearnkit.engine.checks import nonfinite_weights
from unlearnkit.metrics._base import EvalContext, MetricUnavailable, register_metric
from unlearnkit.metrics.forget_quality import final_score, forget_quality, logit_scaled_confidence
from unlearnkit.scenario import Scenario

#: every figure of the ε score
KEYS = ("forget_quality", "final_score", "forget_quality_ceiling", "final_score_ceiling", "ensemble_n",
        "ra_u", "ra_r", "ta_u", "ta_r")  # fmt: skip
#: keys whose value is the same for every method of a scenario (reference figures, not a gap to retrain)
REFERENCE_KEYS = ("forget_quality_ceiling", "final_score_ceiling", "ensemble_n", "ra_r", "ta_r")


@dataclass(frozen=True)
class MemberStats:
    """What the score needs from one model.

    Attributes:
        phi: ``[|S|]`` logit-scaled confidence on the forget set, in the set's order.
        retain_acc: accuracy on D_r (fraction).
        test_acc: accuracy on the test set (fraction).
    """

    phi: np.ndarray
    retain_acc: float
    test_acc: float


def member_stats(model: nn.Module, scenario: Scenario, device: torch.device) -> MemberStats:
    """φ on D_f and the retain/test accuracies of ``model``.

    Raises:
        MetricUnavailable: the model has non-finite weights or outputs (an ensemble never scores such a member).
    """
    bad = nonfinite_weights(model)
    if bad is not None:
        raise MetricUnavailable(f"an ensemble member has non-finite weights ({bad}); the ε score is not computed")

    def finite(logits: torch.Tensor, split: str) -> torch.Tensor:
        if not bool(torch.isfinite(logits).all()):
            raise MetricUnavailable(f"an ensemble member has non-finite outputs on {split}; no ε score from it")
        return logits

    def acc(split: str) -> float:
        ds = scenario.split(split)
        logits = finite(predict_logits(model, ds, device=device), split)
        return float((logits.argmax(1) == labels_of(ds)).double().mean())

    logits = finite(predict_logits(model, scenario.forget, device=device), "forget")
    phi = logit_scaled_confidence(logits, labels_of(scenario.forget).numpy())
    return MemberStats(phi=phi, retain_acc=acc("retain"), test_acc=acc("test"))


def mean(values: Iterable[float]) -> float:
    """Exact mean (``math.fsum``) of per-model figures."""
    v = list(values)
    return math.fsum(v) / len(v)


def _phis(members: list[MemberStats]) -> np.ndarray:
    return np.stack([m.phi for m in members])


# -- the reference figures (need only the reference ensemble) ---------------------------------------------

_REF = {"reference_ensemble"}
_BOTH = {"reference_ensemble", "unlearned_ensemble"}


@register_metric("forget_quality_ceiling", higher_is_better=None, needs=_REF)
def forget_quality_ceiling(ctx: EvalContext) -> float:
    """F of an independent retrained ensemble vs the retrained one: the best at this N."""
    return ctx.resource("reference_ensemble").ceiling_f


@register_metric("final_score_ceiling", higher_is_better=None, needs=_REF)
def final_score_ceiling(ctx: EvalContext) -> float:
    """Final score of the independent retrained ensemble (the ideal unlearner)."""
    refs = ctx.resource("reference_ensemble")
    r, c = refs.retrained, refs.ceiling
    return final_score(refs.ceiling_f, mean(m.retain_acc for m in c), mean(m.retain_acc for m in r),
                       mean(m.test_acc for m in c), mean(m.test_acc for m in r))  # fmt: skip


@register_metric("ensemble_n", higher_is_better=None, needs=_REF)
def ensemble_n(ctx: EvalContext) -> float:
    """Models per side N of the forgetting-quality ensembles."""
    return float(len(ctx.resource("reference_ensemble").retrained))


@register_metric("ra_r", higher_is_better=None, needs=_REF)
def ra_r(ctx: EvalContext) -> float:
    """Mean retain accuracy of the N retrained models (fraction)."""
    return mean(m.retain_acc for m in ctx.resource("reference_ensemble").retrained)


@register_metric("ta_r", higher_is_better=None, needs=_REF)
def ta_r(ctx: EvalContext) -> float:
    """Mean test accuracy of the N retrained models (fraction)."""
    return mean(m.test_acc for m in ctx.resource("reference_ensemble").retrained)


# -- the method's figures ---------------------------------------------------------------------------------


@register_metric("forget_quality", higher_is_better=True, needs=_BOTH)
def forget_quality_metric(ctx: EvalContext) -> float:
    """NeurIPS-2023 forgetting quality F, N unlearned vs N retrained models (read vs ceiling)."""
    refs, unlearned = ctx.resource("reference_ensemble"), ctx.resource("unlearned_ensemble")
    return ctx.memo("forget_quality_F", lambda: forget_quality(_phis(unlearned), _phis(refs.retrained)).F)


@register_metric("final_score", higher_is_better=True, needs=_BOTH)
def final_score_metric(ctx: EvalContext) -> float:
    """NeurIPS-2023 score F × (RA_U/RA_R) × (TA_U/TA_R), uncapped."""
    refs, u = ctx.resource("reference_ensemble"), ctx.resource("unlearned_ensemble")
    r = refs.retrained
    f = forget_quality_metric(ctx)
    return final_score(f, mean(m.retain_acc for m in u), mean(m.retain_acc for m in r),
                       mean(m.test_acc for m in u), mean(m.test_acc for m in r))  # fmt: skip


@register_metric("ra_u", higher_is_better=True, needs=_BOTH)
def ra_u(ctx: EvalContext) -> float:
    """Mean retain accuracy of the N unlearned models (fraction)."""
    return mean(m.retain_acc for m in ctx.resource("unlearned_ensemble"))


@register_metric("ta_u", higher_is_better=True, needs=_BOTH)
def ta_u(ctx: EvalContext) -> float:
    """Mean test accuracy of the N unlearned models (fraction)."""
    return mean(m.test_acc for m in ctx.resource("unlearned_ensemble"))
