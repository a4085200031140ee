"""Registered population membership-inference metrics (evaluation spec §3; methods spec §7.3).

Each attack looks at the single model under evaluation and asks how member-like the forget set D_f
looks next to the retain set D_r and/or the test set. All are registered with ``higher_is_better=None``:
the goal of unlearning is to **match the model retrained on D_r**, not to push the number to an extreme
(an over-forgotten D_f is itself detectable). Compare a method's value with the retrained model's.

* ``mia_loss_lr`` — NeurIPS 2023 challenge starting kit: CV accuracy of logistic regression on
  per-example cross-entropy, forget vs test (0.5 ≈ indistinguishable).
* ``mia_efficacy`` (confidence feature, as reported by Jia et al., NeurIPS 2023 "l1-sparse" and Fan et
  al., ICLR 2024 "SalUn"), ``mia_efficacy_entropy`` and ``mia_efficacy_m_entropy`` — OPTML's SVC
  MIA-Efficacy, fraction of D_f predicted non-member. Song & Mittal's (USENIX Security 2021) other
  features are available via :func:`unlearnkit.metrics.functional.mia.mia_efficacy`.
* ``mia_entropy_svc`` — Chundawat et al., AAAI 2023 (bad teaching) ``get_membership_attack_prob``: SVC on
  entropy, retain vs test, member rate on D_f; the "MIA" of methods spec §7.3.

A split that is too small for an attack yields ``not computed: <reason>`` rather than an error. Random
choices (balancing, subsampling, CV splits) use seed 0, so a model's values are reproducible.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from unlearnkit.metrics._base import EvalContext, MetricUnavailable, register_metric
from unlearnkit.metrics.functional import mia as Fmia

_SPLITS = ("forget", "retain", "test")
_SEED = 0


def _logits(ctx: EvalContext, split: str) -> torch.Tensor:
    z = ctx.logits(split)
    if not torch.isfinite(z).all():
        raise MetricUnavailable(f"the model's outputs on the {split} split contain NaN or infinite values")
    return z


def _probs_labels(ctx: EvalContext, split: str) -> tuple[np.ndarray, np.ndarray]:
    p = torch.softmax(_logits(ctx, split).double(), dim=1)
    return p.cpu().numpy(), ctx.labels(split).cpu().numpy()


def _losses(ctx: EvalContext, split: str) -> np.ndarray:
    z = _logits(ctx, split).double()
    return F.cross_entropy(z, ctx.labels(split).to(z.device).long(), reduction="none").cpu().numpy()


def _efficacy(ctx: EvalContext, feature: Fmia.Feature) -> float:
    args = [a for s in ("retain", "test", "forget") for a in _probs_labels(ctx, s)]
    try:
        return Fmia.mia_efficacy(*args, feature=feature, seed=_SEED)
    except Fmia.InsufficientSamplesError as e:
        raise MetricUnavailable(str(e)) from e


@register_metric("mia_loss_lr", higher_is_better=None, needs=_SPLITS)
def mia_loss_lr(ctx: EvalContext) -> float:
    """Starting-kit loss MIA: 5-split CV accuracy of logistic regression, forget vs test losses (match retrain).

    Per-example cross-entropy of the model on D_f (label 1) and on the test split (label 0), balanced by
    seeded subsampling; 0.5 ≈ indistinguishable. ``higher_is_better=None``: compare with the retrained model.
    """
    try:
        return Fmia.loss_lr_mia(_losses(ctx, "forget"), _losses(ctx, "test"), n_splits=5, seed=_SEED)
    except Fmia.InsufficientSamplesError as e:
        raise MetricUnavailable(str(e)) from e


@register_metric("mia_efficacy", higher_is_better=None, needs=_SPLITS)
def mia_efficacy(ctx: EvalContext) -> float:
    """MIA-Efficacy (SalUn/l1-sparse): fraction of D_f an SVC on confidence p_y calls non-member (match retrain).

    The SVC is fitted on the first |D_test| retain examples (member) vs the test split (non-member).
    ``higher_is_better=None``: the goal is the retrained model's value, not the maximum.
    """
    return _efficacy(ctx, "confidence")


@register_metric("mia_efficacy_entropy", higher_is_better=None, needs=_SPLITS)
def mia_efficacy_entropy(ctx: EvalContext) -> float:
    """MIA-Efficacy with the output-entropy feature: fraction of D_f predicted non-member (match retrain).

    ``higher_is_better=None``: the goal is the retrained model's value, not the maximum.
    """
    return _efficacy(ctx, "entropy")


@register_metric("mia_efficacy_m_entropy", higher_is_better=None, needs=_SPLITS)
def mia_efficacy_m_entropy(ctx: EvalContext) -> float:
    """MIA-Efficacy with Song & Mittal's modified entropy: fraction of D_f predicted non-member (match retrain).

    Uses the paper's Mentr, not the OPTML code's variant (see :mod:`unlearnkit.metrics.functional.mia`).
    ``higher_is_better=None``: the goal is the retrained model's value, not the maximum.
    """
    return _efficacy(ctx, "m_entropy")


@register_metric("mia_entropy_svc", higher_is_better=None, needs=_SPLITS)
def mia_entropy_svc(ctx: EvalContext) -> float:
    """Bad-teaching MIA: member rate on D_f of an SVC on entropy, retain vs test (lower = more forgetting).

    ``higher_is_better=None``: the goal is the retrained model's value (0 is over-forgetting).
    """
    try:
        return Fmia.entropy_svc_member_rate(
            _probs_labels(ctx, "retain")[0], _probs_labels(ctx, "test")[0], _probs_labels(ctx, "forget")[0],
            seed=_SEED,
        )  # fmt: skip
    except Fmia.InsufficientSamplesError as e:
        raise MetricUnavailable(str(e)) from e
