"""LiRA and U-LiRA as registered metrics: per-example membership attacks on the forget set.

* **LiRA** — Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022,
  arXiv 2112.03570 (evaluation spec §2.1). Does the model under audit still look as if it trained on
  its forget examples?
* **U-LiRA** — Hayes, Shumailov, Triantafillou, Khalifa, Papernot, "Inexact Unlearning Needs More
  Careful Evaluations to Avoid a False Sense of Privacy", SaTML 2025, arXiv 2403.01218 (spec §2.2). The
  same likelihood-ratio test, re-targeted to "x was trained on and then unlearned *with this method*"
  versus "x was never trained on".

The shadow models are resources (:mod:`unlearnkit.protocols.shadows` trains them; its docstring describes
the pool, the keep mask and the U-LiRA forget sets):

* ``shadow_bank``: M shadows, each trained on half of a pool, with φ of the untouched shadows on the 2k
  scored examples (k forget examples, k held-out non-members);
* ``unlearned_shadows``: ``[M, 2k]`` φ of the same shadows after unlearning with the audited method.

Here is only the attack: IN = φ(x) of shadows that trained on x (LiRA) or trained on and then unlearned it
(U-LiRA); OUT = φ(x) of shadows that never trained on x: untouched ones for LiRA and, for U-LiRA, by
default (option ``ulira_out="unlearned"``) the same unlearned shadows (unlearned on their own forget sets,
which never held x), so that both sides come from models the audited method has run on, as in Hayes et
al.'s game; ``ulira_out="untouched"`` takes U-LiRA's OUT from the shadows as trained. The target's φ(x) is
scored with the Gaussian log-likelihood ratio of :func:`~unlearnkit.metrics.functional.lira.lira_scores`
(median μ, σ = std + 1e-30; φ = :func:`~unlearnkit.metrics.logit_scaled_confidence`), and the scores of
the k forget vs k non-member examples give AUC, TPR at 1% FPR and the best balanced attack accuracy.

**Reading the numbers.** All six metrics are ``higher_is_better=None``: an unlearned model should score
what the model retrained on D_r scores (≈ 0.5 AUC, ≈ 1% TPR at 1% FPR), not the extreme. For LiRA, whose
IN side is the untouched shadows, an over-forgotten D_f (less confident than never-seen examples) shows as
an AUC below 0.5. For U-LiRA it does not: its IN side is learnt from the method's own shadows, so any
systematic difference between forgotten and never-seen examples, too little forgetting or too much,
raises the AUC above 0.5; an AUC well below 0.5 is noise or a mis-specified OUT side (with
``ulira_out="untouched"``, a method that lowers every example's confidence can invert the AUC). Few
shadows make the Gaussian fits noisy; the option ``lira_fixed_variance`` (default True: one global σ, the
LiRA README's advice below ~64 shadows) applies to both attacks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unlearnkit.errors import UnlearnkitError
from unlearnkit.metrics._base import EvalContext, MetricUnavailable, register_metric
from unlearnkit.metrics.functional.lira import attack_accuracy, lira_scores, roc_auc, tpr_at_fpr

#: the false-positive budget of the ``*_tpr_at_1pct_fpr`` metrics
FPR_TARGET = 0.01

LIRA_METRICS = ("lira_auc", "lira_tpr_at_1pct_fpr", "lira_acc")
ULIRA_METRICS = ("ulira_auc", "ulira_tpr_at_1pct_fpr", "ulira_acc")
#: U-LiRA's OUT side: shadows that never trained on x, after unlearning their own forget sets or as trained
ULIRA_OUT = ("unlearned", "untouched")
ULIRA_OUT_DEFAULT = "unlearned"
#: for the reports: every LiRA figure should *match the retrained model*, not be pushed to an extreme
HIGHER_IS_BETTER: dict[str, bool | None] = dict.fromkeys(LIRA_METRICS + ULIRA_METRICS)


def check_ulira_out(value: object) -> str:
    """``value`` if it names a U-LiRA OUT side (:data:`ULIRA_OUT`); raises a one-line error otherwise."""
    if not isinstance(value, str) or value not in ULIRA_OUT:
        raise UnlearnkitError(f"ulira_out must be one of {', '.join(ULIRA_OUT)}, got {value!r}")
    return value


def attack_figures(
    prefix: str,
    target_phis: Sequence[np.ndarray],
    in_phi: np.ndarray,
    out_phi: np.ndarray,
    in_mask: np.ndarray,
    is_member: np.ndarray,
    *,
    online: bool = True,
    fixed_variance: bool = False,
) -> dict[str, float]:
    """AUC, TPR at 1% FPR and attack accuracy of the likelihood-ratio test on one or more targets (pooled).

    Args:
        prefix: ``"lira"`` or ``"ulira"`` (the returned names).
        target_phis: per target model, ``[2k]`` φ on the scored examples.
        in_phi: ``[M, 2k]`` φ of the IN shadows (used where ``in_mask``).
        out_phi: ``[M, 2k]`` φ of the OUT shadows (used where not ``in_mask``): the untouched shadows for
            LiRA; for U-LiRA the unlearned ones (default) or the untouched ones.
        in_mask: ``[M, 2k]`` True where shadow m trained on scored example i.
        is_member: ``[2k]`` True for the targets' forget examples.
        online: the two-Gaussian test (True) or the OUT-only offline test.
        fixed_variance: one global σ.
    """
    scores = np.concatenate([
        lira_scores(t, in_phi, out_phi, in_mask=in_mask, out_mask=~in_mask, online=online,
                    fixed_variance=fixed_variance)
        for t in target_phis
    ])  # fmt: skip
    labels = np.tile(is_member, len(target_phis))
    return {
        f"{prefix}_auc": roc_auc(scores, labels),
        f"{prefix}_tpr_at_1pct_fpr": tpr_at_fpr(scores, labels, FPR_TARGET),
        f"{prefix}_acc": attack_accuracy(scores, labels),
    }


def _target_phi(ctx: EvalContext) -> np.ndarray:
    bank = ctx.resource("shadow_bank")

    def compute() -> np.ndarray:
        try:
            return bank.phi(ctx.model)
        except UnlearnkitError as e:  # e.g. NaN logits
            raise MetricUnavailable(f"the target model's outputs on the scored examples: {e}") from None

    return ctx.memo("lira_target_phi", compute)


def _attack(ctx: EvalContext, prefix: str) -> dict[str, float]:
    out_side = check_ulira_out(ctx.option("ulira_out", ULIRA_OUT_DEFAULT)) if prefix == "ulira" else "untouched"

    def compute() -> dict[str, float]:
        bank = ctx.resource("shadow_bank")
        base = bank.base_phi()
        in_phi = base if prefix == "lira" else ctx.resource("unlearned_shadows")
        out_phi = in_phi if out_side == "unlearned" else base
        return attack_figures(prefix, [_target_phi(ctx)], in_phi, out_phi, bank.keep[:, bank.scored], bank.is_member,
                              online=True, fixed_variance=bool(ctx.option("lira_fixed_variance", True)))  # fmt: skip

    return ctx.memo(f"{prefix}_attack_{out_side}", compute)


_DESCRIPTIONS = {
    "auc": "ROC AUC, forget vs held-out examples",
    "tpr_at_1pct_fpr": "TPR at 1% FPR, forget vs held-out examples",
    "acc": "best balanced attack accuracy, forget vs held-out examples",
}
_ATTACKS = {
    "lira": ("LiRA (online)", {"shadow_bank"}),
    "ulira": (
        "U-LiRA (IN: shadows trained on x, then unlearned with the same method; OUT: shadows that never trained "
        "on x, unlearned too unless ulira_out=untouched)",
        {"shadow_bank", "unlearned_shadows"},
    ),
}


def _register(prefix: str, stat: str) -> None:
    what, needs = _ATTACKS[prefix]

    def metric(ctx: EvalContext) -> float:
        return _attack(ctx, prefix)[f"{prefix}_{stat}"]

    register_metric(f"{prefix}_{stat}", higher_is_better=None, needs=needs,
                    description=f"{what}: {_DESCRIPTIONS[stat]} (match retrain)")(metric)  # fmt: skip


for _prefix in _ATTACKS:
    for _stat in _DESCRIPTIONS:
        _register(_prefix, _stat)
