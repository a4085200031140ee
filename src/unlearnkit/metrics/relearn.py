"""Relearning metrics: forget accuracy after a fine-tuning attack, RelearnTime, RTT and a linear probe.

The attacks run in :mod:`unlearnkit.protocols.relearn` (resource ``relearn_attack``); the wrappers here
read its result (after-attack values at the end of the step budget; a curve may go on beyond it with
``relearn.extra_steps``). Every row gets them, the original and the retrained model included: the retrained model's
value under the same attack is the floor a method is compared with. References: Goel et al., "Towards
adversarial evaluation for inexact machine unlearning" (arXiv 2201.06640); Deeb & Roger, "Do unlearning
methods remove information from language model weights?" (arXiv 2410.08827, RTT); ERASURE's RelearnTime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from unlearnkit.metrics._base import EvalContext, MetricUnavailable, register_metric

#: the metrics this module registers (reports and the off switch use the list)
RELEARN_METRICS = (
    "relearn_acc_forget_test", "relearn_time", "relearn_rtt_acc", "probe_acc_forget", "relearn_curve",
    "relearn_forget_only_acc", "relearn_retain_only_acc",
)  # fmt: skip


def steps_to_reach(curve: Sequence[float], threshold: float) -> int:
    """First step whose accuracy reaches ``threshold`` (``curve[0]`` is before the attack); ``len-1`` if none.

    The value is capped at the attack's budget (``len(curve) - 1`` steps): a model the attack never brings
    back to the threshold scores the whole budget.
    """
    for step, acc in enumerate(curve):
        if acc >= threshold:
            return step
    return len(curve) - 1


def relearn_time(curves: Sequence[Sequence[float]], original_acc: float) -> float:
    """RelearnTime: mean over attack seeds of the steps until accuracy reaches half of ``original_acc``."""
    return float(np.mean([steps_to_reach(c, 0.5 * original_acc) for c in curves]))


def _attack(ctx: EvalContext) -> Any:
    return ctx.resource("relearn_attack")


def _final(curves: Sequence[Sequence[float]], budget: int) -> float:
    """Mean over seeds of the accuracy at the end of the budget (a curve may go on beyond it)."""
    return float(np.mean([c[min(budget, len(c) - 1)] for c in curves]))


@register_metric("relearn_acc_forget_test", higher_is_better=False, needs={"forget_test", "relearn_attack"})
def relearn_acc_forget_test(ctx: EvalContext) -> float:
    """Forget-test accuracy after the relearning attack (k forget images + retain; compare with retrain's)."""
    res = _attack(ctx)
    return _final(res.curves, res.budget)


@register_metric("relearn_time", higher_is_better=True, needs={"forget_test", "original", "relearn_attack"})
def relearn_time_metric(ctx: EvalContext) -> float:
    """RelearnTime: attack steps until forget-test accuracy reaches half of the original's (capped)."""
    original = float((ctx.logits("forget_test", "original").argmax(1) == ctx.labels("forget_test")).float().mean())
    res = _attack(ctx)
    return relearn_time([c[: res.budget + 1] for c in res.curves], original)


@register_metric("relearn_rtt_acc", higher_is_better=None, needs={"relearn_attack"})
def relearn_rtt_acc(ctx: EvalContext) -> float:
    """RTT: accuracy on one half of the forget set after attacking with the other (compare with retrain's)."""
    res = _attack(ctx)
    if res.kind != "rtt":
        raise MetricUnavailable("RTT splits a sample-level forget set; class requests report relearn_acc_forget_test")
    return _final(res.curves, res.budget)


@register_metric("probe_acc_forget", higher_is_better=None, needs={"relearn_attack"})
def probe_acc_forget(ctx: EvalContext) -> float:
    """Few-shot linear probe on penultimate features, scored on forget-test / the held-out forget half."""
    return float(np.mean(_attack(ctx).probe))


@register_metric("relearn_curve", higher_is_better=None, needs={"relearn_attack"})
def relearn_curve(ctx: EvalContext) -> dict[str, Any]:
    """Accuracy per attack step (mean and per seed; step 0 is before the attack), for the recovery plot."""
    res = _attack(ctx)
    return {
        "kind": res.kind,
        "mean": [round(v, 6) for v in res.mean_curve()],
        "per_seed": [[round(v, 6) for v in c] for c in res.curves],
        "budget": res.budget,
        "variants": {v: [round(x, 6) for x in res.mean_curve(v)] for v in res.variants},
        "settings": dict(res.settings),
        "attacked": res.attacked,
    }


def _variant(ctx: EvalContext, name: str) -> float:
    res = _attack(ctx)
    if name not in res.variants:
        raise MetricUnavailable(f"the {name.replace('_', '-')} attack is off (relearn.{name}: true runs it)")
    return _final(res.variants[name], res.budget)


@register_metric("relearn_forget_only_acc", higher_is_better=None, needs={"relearn_attack"})
def relearn_forget_only_acc(ctx: EvalContext) -> float:
    """Forget accuracy after the attack with only the k forget images per batch (option; compare with retrain's)."""
    return _variant(ctx, "forget_only")


@register_metric("relearn_retain_only_acc", higher_is_better=None, needs={"relearn_attack"})
def relearn_retain_only_acc(ctx: EvalContext) -> float:
    """Forget accuracy after fine-tuning on retain images only, zero forget images (option; compare with retrain's)."""
    return _variant(ctx, "retain_only")
