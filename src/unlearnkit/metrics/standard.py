"""The registered standard metrics: accuracies, divergences to the retrained model, ZRF, cost.

Accuracies are fractions in [0, 1]. ``acc_forget`` is the accuracy on D_f (training samples); for a
class request the goal is 0, for a random request the goal is to match the retrained model, so its
``higher_is_better`` is ``None`` (match the reference).
"""

from __future__ import annotations

import math

from unlearnkit.metrics import functional as Fm
from unlearnkit.metrics._base import EvalContext, MetricUnavailable, register_metric


def _acc(split: str, ctx: EvalContext) -> float:
    return Fm.accuracy(ctx.logits(split), ctx.labels(split))


@register_metric("acc_retain", higher_is_better=True, needs={"retain"})
def acc_retain(ctx: EvalContext) -> float:
    """Accuracy on the retain set D_r."""
    return _acc("retain", ctx)


@register_metric("acc_forget", higher_is_better=None, needs={"forget"})
def acc_forget(ctx: EvalContext) -> float:
    """Accuracy on the forget set D_f (match retrain; 0 for class requests)."""
    return _acc("forget", ctx)


@register_metric("acc_val", higher_is_better=True, needs={"val"})
def acc_val(ctx: EvalContext) -> float:
    """Accuracy on the validation split."""
    return _acc("val", ctx)


@register_metric("acc_test", higher_is_better=True, needs={"test"})
def acc_test(ctx: EvalContext) -> float:
    """Accuracy on the whole test split."""
    return _acc("test", ctx)


@register_metric("acc_forget_test", higher_is_better=False, needs={"forget_test"})
def acc_forget_test(ctx: EvalContext) -> float:
    """Accuracy on test samples of the forgotten class/subclass/group."""
    return _acc("forget_test", ctx)


@register_metric("acc_retain_test", higher_is_better=True, needs={"retain_test"})
def acc_retain_test(ctx: EvalContext) -> float:
    """Accuracy on test samples of the kept classes."""
    return _acc("retain_test", ctx)


def _forget_eval_split(ctx: EvalContext) -> str:
    # Class-level requests: held-out images of the forgotten class (as in the bad-teaching notebook);
    # sample-level requests: the forget set itself.
    return "forget_test" if ctx.scenario.forget_test_idx is not None and len(ctx.scenario.forget_test_idx) else "forget"


@register_metric("activation_distance", higher_is_better=False, needs={"forget", "retrained"})
def activation_distance(ctx: EvalContext) -> float:
    """Mean L2 distance between softmax outputs of the model and the retrained model on forget data."""
    s = _forget_eval_split(ctx)
    return Fm.activation_distance(ctx.probs(s), ctx.probs(s, "retrained"))


@register_metric("js_divergence", higher_is_better=False, needs={"forget", "retrained"})
def js_divergence(ctx: EvalContext) -> float:
    """Mean JS divergence (nats) to the retrained model's outputs on forget data."""
    s = _forget_eval_split(ctx)
    return Fm.js_divergence(ctx.probs(s), ctx.probs(s, "retrained"))


@register_metric("zrf", higher_is_better=None, needs={"forget", "random_model"})
def zrf(ctx: EvalContext) -> float:
    """ZRF: 1 − mean JS to a randomly initialised model on forget data (compare with retrain's)."""
    s = _forget_eval_split(ctx)
    return Fm.zrf(ctx.probs(s), ctx.probs(s, "random_model"))


@register_metric("time_s", higher_is_better=False, needs={"timing"})
def time_s(ctx: EvalContext) -> float:
    """Wall time of the unlearning call (seconds)."""
    if "time_s" not in ctx.timing:
        raise MetricUnavailable("the run's wall time was not measured")
    return ctx.timing["time_s"]


@register_metric("time_ratio_vs_retrain", higher_is_better=False, needs={"timing"})
def time_ratio_vs_retrain(ctx: EvalContext) -> float:
    """Wall time divided by retraining's wall time (both measured by the same runner on this device)."""
    if "time_s" not in ctx.timing or not ctx.timing.get("retrain_time_s"):
        raise MetricUnavailable("retraining time was not measured")
    return ctx.timing["time_s"] / ctx.timing["retrain_time_s"]


@register_metric("peak_mem_mb", higher_is_better=False, needs={"timing"})
def peak_mem_mb(ctx: EvalContext) -> float:
    """Peak memory during unlearning (CUDA: max allocated; CPU: growth of the process's peak RSS), MiB."""
    if "peak_mem_mb" not in ctx.timing:
        raise MetricUnavailable("peak memory was not measured")
    return ctx.timing["peak_mem_mb"]


@register_metric("param_l2_to_retrain", higher_is_better=False, needs={"retrained"})
def param_l2_to_retrain(ctx: EvalContext) -> float:
    """L2 distance between the flattened parameters of the model and the retrained model."""
    assert ctx.retrained is not None
    a = dict(ctx.model.named_parameters())
    b = dict(ctx.retrained.named_parameters())
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise MetricUnavailable("the model and the retrained model have different parameter shapes")
    sq = sum(float(((a[k].detach().cpu().double() - b[k].detach().cpu().double()) ** 2).sum()) for k in a)
    return math.sqrt(sq)
