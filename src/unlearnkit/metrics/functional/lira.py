"""The Likelihood Ratio Attack (LiRA) as pure functions: per-example Gaussian likelihood ratios, ROC figures.

Reference: Carlini, Chien, Nasr, Song, Terzis, Tramèr, "Membership Inference Attacks From First
Principles", IEEE S&P 2022, arXiv 2112.03570; reference code ``tensorflow/privacy``,
``research/mi_lira_2021/plot.py`` (``generate_ours``, ``generate_ours_offline``, ``sweep``). The unlearning
variant U-LiRA (Hayes et al., arXiv 2403.01218) uses the same test with different shadow distributions;
the attacks are registered in :mod:`unlearnkit.metrics.shadow_attacks` and the shadow models trained in
:mod:`unlearnkit.protocols.shadows`.

For each example x, shadow models give samples of the statistic φ(x) (the logit-scaled confidence of
:func:`unlearnkit.metrics.logit_scaled_confidence`) from models that trained on x ("IN") and from models
that did not ("OUT"). Each side is modelled as a Gaussian N(μ, σ²) and the target model's φ(x) is scored
by the log-likelihood ratio (evaluation spec §2.1, "online attack")

    Λ(x) = log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²)          (higher = more member-like).

Reference-code details that we follow (and where they differ from the paper's text):

* **μ is the median** of the shadow values, not the mean; **σ is the standard deviation** (ddof 0)
  **plus 1e-30**.
* **Truncation** (``truncate=True``, default): every example's IN sample is cut to the smallest IN count
  over all examples (keeping the first values in shadow order), and likewise OUT, as ``generate_ours``
  does. ``truncate=False`` uses every available value, so examples with more shadows get tighter fits.
* **Fixed variance** (``fixed_variance=True``): one σ for all examples. As in the reference code this is
  the standard deviation of *all* IN values pooled together (around their global mean, so it includes
  the spread between examples), and in the online attack **both σ_in and σ_out come from the IN data**
  (evaluation spec §2.1, "code quirk"). The offline attack's fixed σ comes from the OUT data.
* **Offline attack** (``online=False``) uses only OUT shadows. The reference code ranks by
  −log N(φ; μ_out, σ_out) (``offline_tail="two_sided"``, default): an example is member-like when it is
  unlikely under OUT in *either* direction. The paper's version is one-sided, Λ = Pr[Z ≤ φ] with
  Z ~ N(μ_out, σ_out²); ``offline_tail="one_sided"`` returns its logarithm (same ranking, better
  resolution in the tail).
* **Sign.** The reference returns −Λ and negates again inside ``sweep``; we return Λ itself, so higher
  scores always mean "member" and :func:`roc_auc` / :func:`tpr_at_fpr` take the scores as they are.
* **Augmentations** (the reference averages Λ over mirrored/shifted queries) are not implemented: φ is
  one value per (model, example).

ROC figures: :func:`roc_auc` (``sklearn.metrics.roc_auc_score``), :func:`tpr_at_fpr` (the largest TPR on
``sklearn.metrics.roc_curve`` whose FPR is at most the target; the reference prints the TPR at the last
point with FPR *strictly* below 0.1%) and :func:`attack_accuracy` (the reference's balanced accuracy
max_t [1 − (FPR + FNR)/2]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

from unlearnkit.errors import UnlearnkitError

SIGMA_FLOOR = 1e-30  # added to every σ, as in the reference code
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

ArrayLike = np.ndarray | torch.Tensor | Sequence


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise UnlearnkitError(f"{name} must be numeric") from None


def _as_samples(phi: ArrayLike, mask: ArrayLike | None, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Shadow values as a padded ``[M, n]`` array plus a boolean ``[M, n]`` validity mask.

    ``phi`` is either an ``[M, n]`` array (with an optional mask of the same shape) or a Python list of
    ``n`` one-dimensional samples, one per example (their lengths may differ; no mask then).
    """
    if isinstance(phi, (list, tuple)):
        if mask is not None:
            raise UnlearnkitError(f"{name}: a list of per-example samples carries its own counts; give no mask")
        if len(phi) != n:
            raise UnlearnkitError(
                f"{name}: a list must hold one 1-D sample per example ({n} examples), got {len(phi)} entries"
            )
        cols = [_to_numpy(c, name) for c in phi]
        if any(c.ndim != 1 for c in cols):
            raise UnlearnkitError(f"{name}: every per-example sample in the list must be 1-D")
        m = max((len(c) for c in cols), default=0)
        values = np.zeros((m, n))
        valid = np.zeros((m, n), dtype=bool)
        for j, c in enumerate(cols):
            values[: len(c), j] = c
            valid[: len(c), j] = True
    else:
        values = _to_numpy(phi, name)
        if values.ndim != 2 or values.shape[1] != n:
            raise UnlearnkitError(f"{name} must have shape [M, {n}] (models x examples), got {values.shape}")
        if mask is None:
            valid = np.ones(values.shape, dtype=bool)
        else:
            valid = np.asarray(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask)
            if valid.dtype != bool:
                raise UnlearnkitError(f"the mask of {name} must be boolean, got dtype {valid.dtype}")
            if valid.shape != values.shape:
                raise UnlearnkitError(f"the mask of {name} has shape {valid.shape}, expected {values.shape}")
    if not np.isfinite(values[valid]).all():
        raise UnlearnkitError(f"{name} contains NaN or infinite values")
    counts = valid.sum(axis=0)
    if n and counts.min() < 1:
        missing = int((counts < 1).sum())
        raise UnlearnkitError(f"{name}: {missing} of {n} examples have no shadow values (every example needs one)")
    return values, valid


def _truncate(valid: np.ndarray) -> np.ndarray:
    """Keep, per example, only the first ``min count`` valid rows (the reference's ``x[:in_size]``)."""
    if valid.size == 0:
        return valid
    k = valid.sum(axis=0).min()
    return valid & (np.cumsum(valid, axis=0) <= k)


def _fit(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-example median and std (ddof 0) over valid rows, and the std of all valid values pooled."""
    v = np.where(valid, values, np.nan)
    mu = np.nanmedian(v, axis=0)
    sd = np.nanstd(v, axis=0)
    pooled = float(np.std(values[valid])) if valid.any() else 0.0
    return mu, sd, pooled


def gaussian_logpdf(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """log N(x; μ, σ²) elementwise (σ > 0; no floor added here)."""
    z = (x - mu) / sigma
    return -0.5 * z * z - np.log(sigma) - _HALF_LOG_2PI


def lira_scores(
    target_phi: ArrayLike,
    in_phi: ArrayLike | None,
    out_phi: ArrayLike,
    *,
    in_mask: ArrayLike | None = None,
    out_mask: ArrayLike | None = None,
    online: bool = True,
    fixed_variance: bool = False,
    offline_tail: Literal["two_sided", "one_sided"] = "two_sided",
    truncate: bool = True,
) -> np.ndarray:
    """LiRA membership scores of one target model's examples (higher = more likely a member).

    Args:
        target_phi: ``[n]`` φ of the target model on the n examples.
        in_phi: φ of IN shadow models: an ``[M_in, n]`` array (row m = shadow m; use ``in_mask`` to mark
            which entries count), or a list of ``n`` 1-D samples of any lengths. Ignored (may be ``None``)
            when ``online=False``.
        out_phi: φ of OUT shadow models, in the same forms as ``in_phi``.
        in_mask, out_mask: boolean ``[M, n]`` masks of the valid entries of array inputs. With one set of
            shadows ``phi`` ``[M, n]`` and its keep mask ``keep`` ``[M, n]`` (True = trained on the
            example), call ``lira_scores(t, phi, phi, in_mask=keep, out_mask=~keep)``.
        online: the two-Gaussian likelihood ratio (True) or the OUT-only offline test (False).
        fixed_variance: one global σ for all examples (see the module docstring for the reference quirk).
        offline_tail: ``"two_sided"`` (reference code, −log N(φ; μ_out, σ_out)) or ``"one_sided"`` (the
            paper, log Pr[Z ≤ φ]); used only when ``online=False``.
        truncate: cut every example's IN (and OUT) sample to the smallest count over examples, as the
            reference code does.

    Returns:
        float64 ``[n]`` scores: log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out) online; the chosen offline
        statistic otherwise.

    Example:
        >>> import numpy as np
        >>> s = lira_scores(np.array([1.0]), np.array([[0.0], [2.0]]), np.array([[-3.0], [-1.0]]))
        >>> round(float(s[0]), 6)  # IN: N(1, 1) at 1; OUT: N(-2, 1) at 1 -> 0 - (-4.5)
        4.5
    """
    t = _to_numpy(target_phi, "target_phi")
    if t.ndim != 1:
        raise UnlearnkitError(f"target_phi must be 1-D (one value per example), got shape {t.shape}")
    if not np.isfinite(t).all():
        raise UnlearnkitError("target_phi contains NaN or infinite values")
    if offline_tail not in ("two_sided", "one_sided"):
        raise UnlearnkitError(f"offline_tail must be 'two_sided' or 'one_sided', got {offline_tail!r}")
    n = len(t)
    out_v, out_ok = _as_samples(out_phi, out_mask, n, "out_phi")
    if truncate:
        out_ok = _truncate(out_ok)
    mu_out, sd_out, pooled_out = _fit(out_v, out_ok)

    if not online:  # generate_ours_offline: OUT only
        sigma_out = (pooled_out if fixed_variance else sd_out) + SIGMA_FLOOR
        if offline_tail == "one_sided":
            return norm.logcdf(t, loc=mu_out, scale=sigma_out)
        return -gaussian_logpdf(t, mu_out, sigma_out)

    if in_phi is None:
        raise UnlearnkitError("the online attack needs in_phi (pass online=False for the OUT-only attack)")
    in_v, in_ok = _as_samples(in_phi, in_mask, n, "in_phi")
    if truncate:
        in_ok = _truncate(in_ok)
    mu_in, sd_in, pooled_in = _fit(in_v, in_ok)
    if fixed_variance:  # reference quirk: both σ from the IN data
        sigma_in = sigma_out = np.full(n, pooled_in + SIGMA_FLOOR)
    else:
        sigma_in, sigma_out = sd_in + SIGMA_FLOOR, sd_out + SIGMA_FLOOR
    return gaussian_logpdf(t, mu_in, sigma_in) - gaussian_logpdf(t, mu_out, sigma_out)


def _scores_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = _to_numpy(scores, "scores")
    y = np.asarray(labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels)
    if s.ndim != 1 or y.ndim != 1 or len(s) != len(y):
        raise UnlearnkitError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    if not np.isfinite(s).all():
        raise UnlearnkitError("scores contain NaN or infinite values")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise UnlearnkitError("labels must be 0/1 (1 = member) or boolean")
        y = y.astype(bool)
    if y.all() or not y.any():
        raise UnlearnkitError("labels must contain both members (1) and non-members (0)")
    return s, y


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` (higher = member) for 0/1 ``labels``; 0.5 = chance."""
    s, y = _scores_labels(scores, labels)
    return float(roc_auc_score(y, s))


def tpr_at_fpr(scores: ArrayLike, labels: ArrayLike, fpr: float = 0.01) -> float:
    """The largest TPR among the ROC points (``sklearn.metrics.roc_curve``) whose FPR is ≤ ``fpr``.

    Every threshold of the score is a point (``drop_intermediate=False``); the curve starts at (0, 0), so
    the result is defined (0 when no threshold stays within the FPR budget).
    """
    if not 0.0 <= fpr <= 1.0:
        raise UnlearnkitError(f"fpr must be in [0, 1], got {fpr}")
    s, y = _scores_labels(scores, labels)
    f, t, _ = roc_curve(y, s, drop_intermediate=False)
    return float(t[f <= fpr].max())


def attack_accuracy(scores: ArrayLike, labels: ArrayLike) -> float:
    """Best balanced accuracy over thresholds, max_t [1 − (FPR + FNR)/2] (the reference's ``sweep``).

    The threshold is chosen on the same examples it is scored on, so this is an optimistic (upper)
    figure; 0.5 = indistinguishable.
    """
    s, y = _scores_labels(scores, labels)
    f, t, _ = roc_curve(y, s, drop_intermediate=False)
    return float(np.max(1.0 - (f + (1.0 - t)) / 2.0))
