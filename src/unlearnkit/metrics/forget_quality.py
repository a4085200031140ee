"""Forgetting quality F and the final score of the NeurIPS 2023 Machine Unlearning challenge.

Reference: Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS
unlearning competition", arXiv 2406.09073; the published scorer is ``metric.py`` in
``google-deepmind/unlearning_evaluation`` (commit ffae0ff), function ``compute_forget_score_from_confs``.
This module re-implements that scorer (evaluation spec §1.3–1.7) and reproduces its outputs on the
fixture ``forget_quality_official.json`` (F to 1e-9, per-example ε to 1e-5).

For every forget example s, N unlearned and N retrained models give two samples of the logit-scaled
confidence φ (§1.3). A family of per-example threshold attacks (§1.4) separates them; each attack's
(FPR, FNR) becomes an ε through the hypothesis-testing bound of Kairouz et al. (§1.2 Eq. 1, §1.4 step 5); ε_s is the
strongest attack, binned into a score H(s) that halves every 0.5 of ε; F is the mean of H.

Where we follow the scorer rather than the organisers' PDF, or where the scorer is not defined:

* **Bins.** The PDF says 13 bins (ε ∈ [0, 6.5)); the scorer's top is ⌈ln(N−1)⌉, i.e. 14 bins for N = 512
  ([6.5, 7) worth 2^−13). We do what the scorer does. The 14th bin is unreachable at N = 512 (the
  largest finite ε is ln((1−δ−1/N)·N) ≈ 6.236), so both give the same F there.
* **float32.** The scorer computes rates as float32 means and ε in float32, and its single-threshold
  grid is a float32 ``torch.linspace``. We do the same (rates are ``float32(count) / float32(N)``, the
  grid is rounded to float32 with torch's two-sided linspace formula), so ε carries float32 precision and
  lands in the same bin as the scorer's.
* **No admissible rule.** If every rule of both families is discarded (e.g. all 2N values equal), the
  scorer fails an assertion. We return ε = 0 (no attack has evidence) and label the rule ``"none"``.
* **Ties.** When both families reach the same ε, ``rule`` says ``"double"``: the scorer lists the
  interval rules first and takes the first maximum.

Three implementations give identical results (same ε per example, same rule, same F):

* :func:`forget_quality` (**block search**, vectorised over examples, in torch on the CPU or a given
  device). The single-threshold family (~100 rules per unit of φ) is counted with ``np.searchsorted``
  per example. For the ~160k interval rules, ε(fp, fn) is *non-increasing* in both counts wherever it is
  defined, and along the 400 left edges L_k of one right edge the counts move monotonically (L_k grows, so
  the false positives fall and the misses grow). So over a block of left edges k0 ≤ k ≤ k1, every rule's ε
  is at most U[fp(k1), fn(k0)], where U is the table of ε maxima over the quadrant fp' ≥ fp, fn' ≥ fn
  (:func:`_quadrant_max`). Stage one evaluates exactly the 21 block boundaries k = 0, 20, …, 380, 399 of every
  right edge (8k rules an example instead of 160k) and bounds the 20 blocks between them; stage two evaluates
  exactly only the blocks whose bound could beat the best rule found (and, for the tie rule of ``rule``,
  reach the single family's best). Every skipped rule is provably no better, so the maximum is exact; the
  left edges are computed with ``np.linspace``'s own float formula (``k·step + start``, last = stop), so
  every evaluated rule counts exactly the models the scorer's rule counts.
* :func:`_forget_quality_searchsorted` (the previous implementation, kept for the benchmark and the tests):
  all rules of one example at a time with ``np.searchsorted`` on the sorted samples, ε read from a
  precomputed [N+1, N+1] table of ε per count pair.
* :func:`_forget_quality_loop` compares every value with every threshold, as the scorer does.

``benchmarks/bench_forget_quality.py`` times the first two on the same inputs in one run.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from unlearnkit.errors import UnlearnkitError

DELTA = 1e-5  # δ of (ε, δ)-unlearning (metric.py L24)
EPSILON_CAP = 50.0  # ε of a peaky example and of perfect separation (after clipping)
THRESHOLDS_PER_UNIT = 100  # grid density: thresholds per unit of φ
BUFFER = 2.0  # b: how far the interval rules reach beyond the narrower sample
NUM_LEFT_EDGES = int(math.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT))  # 400 left edges per right edge
PEAKY_RATIO = 0.01  # smaller range / larger range below this → ε = cap
BIN_WIDTH = 0.5  # H halves every 0.5 of ε

ArrayLike = np.ndarray | torch.Tensor


# ---------------------------------------------------------------------------------------------------
# §1.3 The statistic φ
# ---------------------------------------------------------------------------------------------------


def _as_numpy(x: ArrayLike | float | list) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def logit_scaled_confidence(logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Logit-scaled confidence φ = log(p_y + 1e-45) − log(Σ_{j≠y} p_j + 1e-45) of the true label.

    The softmax is taken in float64 after subtracting the largest logit (as LiRA's ``score.py`` and the
    challenge's ``compute_logit_scaled_confidence``); the wrong-class mass is summed, not taken as 1 − p_y,
    so φ stays accurate for confident models. The 1e-45 terms bound φ to about ±103.6 (−ln 1e-45), which
    is reached once the winning margin exceeds ~745 (the float64 underflow of exp). The scorer exponentiates
    in the logits' own dtype before casting; we cast first, which only matters for float16/32 inputs.

    Args:
        logits: ``[..., C]`` scores of C ≥ 2 classes (numpy or torch).
        labels: ``[...]`` integer true labels in ``[0, C)``.

    Returns:
        float64 array of ``labels``' shape.
    """
    z = _as_numpy(logits)
    y = _as_numpy(labels)
    if z.ndim < 1 or z.shape[-1] < 2:
        raise UnlearnkitError(f"logits must have shape [..., C] with C >= 2 classes, got {z.shape}")
    if y.shape != z.shape[:-1]:
        raise UnlearnkitError(f"labels shape {y.shape} does not match logits {z.shape} (expected {z.shape[:-1]})")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise UnlearnkitError(f"labels must be integers, got dtype {y.dtype}")
    n_classes = z.shape[-1]
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise UnlearnkitError(f"labels must lie in [0, {n_classes}), got values in [{y.min()}, {y.max()}]")
    z = z.astype(np.float64)
    if not np.isfinite(z).all():
        raise UnlearnkitError("logits contain NaN or infinite values")
    z = z - z.max(axis=-1, keepdims=True)  # largest logit → 0, so exp never overflows
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)  # [..., C] softmax
    idx = y[..., None].astype(np.intp)
    p_y = np.take_along_axis(p, idx, axis=-1)[..., 0]
    np.put_along_axis(p, idx, 0.0, axis=-1)
    q = p.sum(axis=-1)  # Σ_{j≠y} p_j
    return np.log(p_y + 1e-45) - np.log(q + 1e-45)


# ---------------------------------------------------------------------------------------------------
# Result type and input checks
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ForgetQualityResult:
    """Output of :func:`forget_quality`.

    Attributes:
        F: forgetting quality, the mean of ``scores``, in [0, 1]; higher is better.
        epsilons: ``[|S|]`` per-example ε, clipped to [0, 50] (50 = peaky or perfectly separated).
        rule: ``[|S|]`` which attack set ε: ``"peaky"`` (range-ratio short-circuit), ``"single"``
            (one threshold, φ ≥ t), ``"double"`` (interval, L ≤ φ ≤ R) or ``"none"`` (every rule discarded).
        n_models: N, models per side.
        scores: ``[|S|]`` bin scores H(s) = 2^−⌊ε/0.5⌋ for ε < ⌈ln(N−1)⌉, else 0.
    """

    F: float
    epsilons: np.ndarray
    rule: np.ndarray
    n_models: int
    scores: np.ndarray


def _check_confs(unlearned_conf: ArrayLike, retrained_conf: ArrayLike, delta: float) -> tuple[np.ndarray, np.ndarray]:
    try:
        u = _as_numpy(unlearned_conf).astype(np.float64)
        r = _as_numpy(retrained_conf).astype(np.float64)
    except (TypeError, ValueError) as e:
        raise UnlearnkitError(f"confidences must be numeric arrays: {e}") from None
    if u.ndim != 2 or r.ndim != 2:
        raise UnlearnkitError(f"confidences must be 2-D [N models, |S| examples], got {u.shape} and {r.shape}")
    if u.shape != r.shape:
        raise UnlearnkitError(f"unlearned and retrained confidences differ in shape: {u.shape} vs {r.shape}")
    if u.shape[0] < 2:
        raise UnlearnkitError(f"need N >= 2 models per side, got N = {u.shape[0]}")
    if u.shape[1] < 1:
        raise UnlearnkitError("need at least one forget example (|S| >= 1), got 0 columns")
    if not (np.isfinite(u).all() and np.isfinite(r).all()):
        raise UnlearnkitError("confidences contain NaN or infinite values")
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0.0 <= delta < 1.0:
        raise UnlearnkitError(f"delta must be a number in [0, 1), got {delta!r}")
    return u, r


def _orient(u: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """§1.4 step 2: per example, the side with the larger median is positive (ties: unlearned)."""
    retrain_is_positive = np.median(r, axis=0) > np.median(u, axis=0)  # [|S|]
    return np.where(retrain_is_positive, r, u), np.where(retrain_is_positive, u, r)


def _is_peaky(pos: np.ndarray, neg: np.ndarray) -> bool:
    """§1.4 step 1: smaller range / larger range < 0.01 (two constant samples are not peaky: 0/0)."""
    pos_diff, neg_diff = pos.max() - pos.min(), neg.max() - neg.min()
    largest, smallest = max(pos_diff, neg_diff), min(pos_diff, neg_diff)
    return bool(largest > 0 and smallest / largest < PEAKY_RATIO)


# ---------------------------------------------------------------------------------------------------
# §1.4 steps 3–4: the two rule families' thresholds
# ---------------------------------------------------------------------------------------------------


def _linspace_f32(start: float, stop: float, num: int) -> np.ndarray:
    """``torch.linspace(start, stop, num)`` in float32 (the scorer's default dtype), returned as float64.

    torch fills the first half forwards from ``start`` and the second half backwards from ``stop``; this is
    the CUDA kernel's formula. torch's vectorised CPU kernel can differ by an ulp of float32, which only
    matters for a φ lying exactly between the two roundings.
    """
    s, e = np.float32(start), np.float32(stop)
    if num <= 0:
        return np.empty(0)
    if num == 1:
        return np.array([s], dtype=np.float64)
    step = (e - s) / np.float32(num - 1)
    i = np.arange(num, dtype=np.float32)
    half = num // 2
    out = np.empty(num, dtype=np.float32)
    out[:half] = s + step * i[:half]
    out[half:] = e - step * (np.float32(num - 1) - i[half:])
    return out.astype(np.float64)


def _single_thresholds(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """§1.4 step 3: linspace(min, max, ⌈(max−min)·100⌉) over the pooled 2N values (empty if max == min)."""
    lo = min(pos.min(), neg.min())
    hi = max(pos.max(), neg.max())
    return _linspace_f32(lo, hi, int(math.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))


def _double_setup(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """§1.4 step 4: the narrower side becomes positive; returns (positive, negative, right edges, w)."""
    pos_diff, neg_diff = pos.max() - pos.min(), neg.max() - neg.min()
    width = neg_diff if pos_diff > neg_diff else pos_diff
    if pos_diff >= neg_diff:  # ties: the originally negative side becomes positive, as in the scorer
        pos, neg = neg, pos
    lo = pos.min() + width - BUFFER
    hi = pos.max() + BUFFER
    right = np.linspace(lo, hi, int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))  # ~400 edges, float64
    return pos, neg, right, float(width)


def _left_edges(right: np.ndarray, width: float) -> np.ndarray:
    """[len(right), 400] left edges: linspace(r − w − b, r − w + b, 400) for each right edge r."""
    return np.linspace(right - width - BUFFER, right - width + BUFFER, NUM_LEFT_EDGES, axis=-1)


# ---------------------------------------------------------------------------------------------------
# §1.4 step 5: rates → ε
# ---------------------------------------------------------------------------------------------------


def _rates_to_epsilon(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """Per-rule ε from float32 rates: +inf if FPR = FNR = 0, NaN (rule dropped) if exactly one is 0,
    else max(log(1−δ−FPR) − log FNR, log(1−δ−FNR) − log FPR) clipped below at 0, a NaN term ignored."""
    fpr = np.asarray(fpr, dtype=np.float32)
    fnr = np.asarray(fnr, dtype=np.float32)
    one_minus_delta = np.float32(1 - delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.log(one_minus_delta - fpr) - np.log(fnr)
        t2 = np.log(one_minus_delta - fnr) - np.log(fpr)
        eps = np.maximum(np.fmax(t1, t2), np.float32(0))  # fmax = nanmax of two; maximum keeps NaN
    eps = np.where(fpr * fnr == 0, np.float32(np.nan), eps)
    return np.where((fpr == 0) & (fnr == 0), np.float32(np.inf), eps)


def _epsilon_table(n: int, delta: float) -> np.ndarray:
    """[N+1, N+1] float32 table: entry [fp, fn] is the ε of a rule with fp false and fn missed positives."""
    counts = np.arange(n + 1, dtype=np.float32)
    rates = counts / np.float32(n)  # float32(count) / float32(N), as torch.mean of float32 indicators
    return _rates_to_epsilon(rates[:, None], rates[None, :], delta)


def _nanmax(x: np.ndarray) -> float:
    """Max ignoring NaN; NaN when empty or all NaN."""
    if x.size == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmax(x))


def _combine(eps_double: float, eps_single: float) -> tuple[float, str]:
    """ε_s over both families and the winning family; ties go to "double" (listed first by the scorer)."""
    if math.isnan(eps_double) and math.isnan(eps_single):
        return 0.0, "none"
    if math.isnan(eps_single) or (not math.isnan(eps_double) and eps_double >= eps_single):
        return min(max(eps_double, 0.0), EPSILON_CAP), "double"
    return min(max(eps_single, 0.0), EPSILON_CAP), "single"


# ---------------------------------------------------------------------------------------------------
# §1.5 bins and F
# ---------------------------------------------------------------------------------------------------


def _bin_scores(epsilons: np.ndarray, n: int) -> np.ndarray:
    """H = 2^−⌊ε/0.5⌋ for ε < ⌈ln(N−1)⌉ (the scorer's top; 7 for N = 512, i.e. 14 bins), else 0."""
    top = math.ceil(math.log(n - 1))  # N = 2: ln 1 = 0, so no bin and F = 0, as in the scorer
    h = np.power(0.5, np.floor(epsilons / BIN_WIDTH))
    return np.where(epsilons < top, h, 0.0)


def _result(epsilons: list[float], rules: list[str], n: int) -> ForgetQualityResult:
    eps = np.asarray(epsilons, dtype=np.float64)
    scores = _bin_scores(eps, n)
    rule = np.asarray(rules, dtype=str)
    for a in (eps, scores, rule):
        a.setflags(write=False)
    return ForgetQualityResult(F=math.fsum(scores) / len(scores), epsilons=eps, rule=rule, n_models=n, scores=scores)


# ---------------------------------------------------------------------------------------------------
# Per-rule ε of one example, two ways
# ---------------------------------------------------------------------------------------------------

RuleEpsilons = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _rule_epsilons_fast(pos: np.ndarray, neg: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(interval ε [R·400], single ε [T]) of one example from counts: sort once, then ``searchsorted`` gives
    the number of models each rule accepts for all rules at once; ε is read from the count-pair table."""
    n = len(pos)
    pos, neg = np.sort(pos), np.sort(neg)
    # Single threshold, "positive" iff φ ≥ t: missed positives = #pos < t; false positives = #neg ≥ t.
    t = _single_thresholds(pos, neg)  # [T]
    fn = np.searchsorted(pos, t, side="left")
    fp = n - np.searchsorted(neg, t, side="left")
    eps_single = table[fp, fn]
    # Interval, "positive" iff L ≤ φ ≤ R: accepted = #(≤ R) − #(< L), which is ≤ 0 when L > R (then 0).
    p, q, right, width = _double_setup(pos, neg)
    left = _left_edges(right, width)  # [R, 400]
    tp = np.maximum(np.searchsorted(p, right, side="right")[:, None] - np.searchsorted(p, left, side="left"), 0)
    fp = np.maximum(np.searchsorted(q, right, side="right")[:, None] - np.searchsorted(q, left, side="left"), 0)
    eps_double = table[fp, n - tp].ravel()  # [R·400], row-major like the scorer's flattening
    return eps_double, eps_single


def _rule_epsilons_loop(pos: np.ndarray, neg: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference for :func:`_rule_epsilons_fast`: compare every value with every threshold and take float32
    means over the models axis, one right edge at a time, as the published scorer does."""
    # Single-threshold family: [N, T] comparisons.
    t = _single_thresholds(pos, neg)
    fnr = (pos[:, None] < t[None, :]).astype(np.float32).mean(axis=0)
    fpr = (neg[:, None] >= t[None, :]).astype(np.float32).mean(axis=0)
    eps_single = _rates_to_epsilon(fpr, fnr, delta)
    # Double-threshold family: for each right edge, its own 400 left edges; [N, 400] comparisons each.
    p, q, right, width = _double_setup(pos, neg)
    eps_double = []
    for tr in right:
        left = np.linspace(tr - width - BUFFER, tr - width + BUFFER, NUM_LEFT_EDGES)
        p_in = (left[None, :] <= p[:, None]) & (p[:, None] <= tr)
        q_in = (left[None, :] <= q[:, None]) & (q[:, None] <= tr)
        fnr = (~p_in).astype(np.float32).mean(axis=0)
        fpr = q_in.astype(np.float32).mean(axis=0)
        eps_double.append(_rates_to_epsilon(fpr, fnr, delta))
    return np.concatenate(eps_double) if eps_double else np.empty(0, np.float32), eps_single


def _score(u: np.ndarray, r: np.ndarray, rule_epsilons: RuleEpsilons) -> ForgetQualityResult:
    """§1.7 recipe: orient, short-circuit peaky examples, max over both families, clip, bin, average."""
    n = u.shape[0]
    pos_all, neg_all = _orient(u, r)
    epsilons: list[float] = []
    rules: list[str] = []
    for s in range(u.shape[1]):  # one example at a time: memory O(#rules), whatever |S|
        pos, neg = pos_all[:, s], neg_all[:, s]
        if _is_peaky(pos, neg):
            epsilons.append(EPSILON_CAP)
            rules.append("peaky")
            continue
        eps_double, eps_single = rule_epsilons(pos, neg)
        e, rule = _combine(_nanmax(eps_double), _nanmax(eps_single))
        epsilons.append(e)
        rules.append(rule)
    return _result(epsilons, rules, n)


# ---------------------------------------------------------------------------------------------------
# The block search: interval family of all examples at once, bounded by the quadrant-max table
# ---------------------------------------------------------------------------------------------------

#: block sizes of the successive refinements: each surviving block of left edges is split into blocks of the
#: next size, whose end points are evaluated exactly and whose bounds decide which survive; the last size, 1,
#: evaluates every edge left (the right edge itself is the first block: edges 0..399)
LEVELS = (80, 16, 4, 1)
CHUNK = 64  # examples per vectorised step
_NONE = -1.0  # a dropped rule's ε (NaN in the scorer) in the encoded tables; every kept ε is >= 0


def _quadrant_max(table: np.ndarray) -> np.ndarray:
    """U[fp, fn] = max of ``table`` over fp' ≥ fp, fn' ≥ fn (dropped rules as -1): the bound of a block."""
    u = np.maximum.accumulate(table[::-1, ::-1], axis=0)
    return np.maximum.accumulate(u, axis=1)[::-1, ::-1].copy()


def _left_edges_at(k: torch.Tensor, start: torch.Tensor, stop: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Left edges with indices ``k`` (float64), bit for bit what ``np.linspace(start, stop, 400)`` gives:
    ``k * step + start`` in two roundings, and ``stop`` itself for the last one."""
    out = k * step + start
    return torch.where(k == NUM_LEFT_EDGES - 1, stop, out)


def _interval_max(
    p: torch.Tensor, q: torch.Tensor, right: torch.Tensor, width: torch.Tensor, floor: torch.Tensor,
    eps_flat: torch.Tensor, bound_flat: torch.Tensor, n: int,
) -> torch.Tensor:  # fmt: skip
    """Best interval-rule ε of c examples ([c]; -1 where every rule is dropped), exact wherever it is ≥ ``floor``.

    Args:
        p, q: [c, N] sorted positive (narrower) and negative samples of the interval family.
        right: [c, R] right edges, NaN-padded; width: [c] the narrower sample's range.
        floor: [c] the single family's best ε (-1: none). Blocks that cannot reach it are skipped, so a result
            below ``floor`` may be below the family's true best, never above it, and any result ≥ ``floor``
            is exact: enough for max(both families) and for the tie rule (``double`` when ≥ single).
        eps_flat, bound_flat: the ε table and its quadrant maxima, flattened (index fp·(N+1) + fn).
    """
    c = right.shape[0]
    dev, dt = right.device, right.dtype
    valid = ~torch.isnan(right)
    r = torch.where(valid, right, torch.zeros((), dtype=dt, device=dev))
    a_right = torch.searchsorted(p, r, right=True)  # [c, R] #p ≤ R
    b_right = torch.searchsorted(q, r, right=True)
    base = r - width[:, None]  # np.linspace(right - width - BUFFER, right - width + BUFFER, 400, axis=-1)
    start, stop = base - BUFFER, base + BUFFER
    step = (stop - start) / (NUM_LEFT_EDGES - 1)
    best = torch.full((c,), _NONE, dtype=eps_flat.dtype, device=dev)
    s, j = valid.nonzero(as_tuple=True)  # the blocks to refine: (example, right edge, first and last left edge)
    k0 = torch.zeros_like(s)
    k1 = torch.full_like(s, NUM_LEFT_EDGES - 1)
    for size in LEVELS:
        if len(s) == 0:
            break
        # end points of the sub-blocks: k0, k0 + size, …, k1 (repeats at the end are harmless)
        n_points = int(((k1 - k0 + size - 1) // size).max()) + 1
        k = torch.minimum(k0[:, None] + size * torch.arange(n_points, device=dev), k1[:, None])  # [M, P]
        edges = _left_edges_at(k.to(dt), start[s, j][:, None], stop[s, j][:, None], step[s, j][:, None])
        fp, fn = _counts(p, q, s, a_right[s, j], b_right[s, j], edges, n)  # [M, P]
        best = best.scatter_reduce(0, s, eps_flat[fp * (n + 1) + fn].amax(dim=1), reduce="amax")
        if size == 1:
            break
        # sub-block i spans k[:, i]..k[:, i+1]: its fp is smallest at its last edge, its fn at its first
        bound = bound_flat[fp[:, 1:] * (n + 1) + fn[:, :-1]]  # [M, P-1]
        keep = (bound > best[s][:, None]) & (bound >= floor[s][:, None]) & (k[:, 1:] > k[:, :-1])
        m, i = keep.nonzero(as_tuple=True)
        s, j, k0, k1 = s[m], j[m], k[m, i], k[m, i + 1]
    return best


def _counts(
    p: torch.Tensor, q: torch.Tensor, s: torch.Tensor, a_right: torch.Tensor, b_right: torch.Tensor,
    edges: torch.Tensor, n: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(false positives, misses) [M, P] of the rules "L ≤ φ ≤ R" with left edges ``edges`` [M, P] of example
    ``s`` [M] whose right edges accept ``a_right`` positives and ``b_right`` negatives [M] (#φ ≤ R).

    Rows are regrouped per example (padded to the example with most rows) for one batched searchsorted."""
    c = p.shape[0]
    per = torch.bincount(s, minlength=c)
    pos = torch.arange(len(s), device=s.device) - (torch.cumsum(per, 0) - per)[s]  # row's place in its example
    sizes = (c, int(per.max()), edges.shape[1])
    padded = edges.new_zeros(sizes)
    padded[s, pos] = edges
    a_left = torch.searchsorted(p, padded.view(c, -1)).view(sizes)[s, pos]  # #p < L
    b_left = torch.searchsorted(q, padded.view(c, -1)).view(sizes)[s, pos]
    tp = (a_right[:, None] - a_left).clamp_(min=0)  # #(≤ R) − #(< L); ≤ 0 when L > R
    fp = (b_right[:, None] - b_left).clamp_(min=0)
    return fp, n - tp


def _score_blocks(u: np.ndarray, r: np.ndarray, delta: float, device: torch.device) -> ForgetQualityResult:
    """§1.7 recipe with the block search: per-example setup and single family, then the interval family of
    :data:`CHUNK` examples at a time on ``device``."""
    n, n_ex = u.shape
    pos_all, neg_all = _orient(u, r)
    table = _epsilon_table(n, delta)
    encoded = np.where(np.isnan(table), np.float32(_NONE), table).astype(np.float32)
    eps_flat = torch.from_numpy(encoded.ravel()).to(device)
    bound_flat = torch.from_numpy(_quadrant_max(encoded).ravel()).to(device)
    epsilons = np.zeros(n_ex)
    rules = np.full(n_ex, "peaky", dtype=object)
    live: list[int] = []
    ps, qs, rights, widths, singles = [], [], [], [], []
    for s in range(n_ex):  # cheap per-example work: peaky check, single family, interval set-up
        pos, neg = np.sort(pos_all[:, s]), np.sort(neg_all[:, s])
        if _is_peaky(pos, neg):
            epsilons[s] = EPSILON_CAP
            continue
        t = _single_thresholds(pos, neg)  # "positive" iff φ ≥ t
        eps_single = table[n - np.searchsorted(neg, t, side="left"), np.searchsorted(pos, t, side="left")]
        p, q, right, width = _double_setup(pos, neg)
        live.append(s)
        singles.append(_nanmax(eps_single))
        ps.append(p)
        qs.append(q)
        rights.append(right)
        widths.append(width)
    for c0 in range(0, len(live), CHUNK):
        sl = slice(c0, c0 + CHUNK)
        r_max = max(len(x) for x in rights[sl])
        right = np.full((len(rights[sl]), r_max), np.nan)
        for i, x in enumerate(rights[sl]):
            right[i, : len(x)] = x
        single = np.asarray(singles[sl], dtype=np.float32)  # float32 table values: exact
        single[np.isnan(single)] = _NONE

        def on(a: object) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a), device=device)

        best = _interval_max(on(np.stack(ps[sl])), on(np.stack(qs[sl])), on(right), on(widths[sl]), on(single),
                             eps_flat, bound_flat, n).cpu().numpy()  # fmt: skip
        for i, s in enumerate(live[sl]):
            e, rule = _combine(math.nan if best[i] == _NONE else float(best[i]), singles[c0 + i])
            epsilons[s] = e
            rules[s] = rule
    return _result(list(epsilons), list(rules), n)


# ---------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------


def forget_quality(
    unlearned_conf: ArrayLike, retrained_conf: ArrayLike, delta: float = DELTA, device: str | torch.device | None = None
) -> ForgetQualityResult:
    """Forgetting quality F of the NeurIPS 2023 unlearning challenge (evaluation spec §1.3–1.5).

    Args:
        unlearned_conf: ``[N, |S|]`` φ (see :func:`logit_scaled_confidence`) of each forget example under
            each of N unlearned models.
        retrained_conf: ``[N, |S|]`` the same under N models retrained from scratch without S.
        delta: δ of (ε, δ)-unlearning; the challenge used 1e-5.
        device: where the interval rules are counted (torch, float64; default the CPU). The result is the
            same on every device: counts are exact and ε is read from one float32 table.

    Returns:
        A :class:`ForgetQualityResult`: F, per-example ε, winning rule and bin score.

    Raises:
        UnlearnkitError: shapes differ or are not 2-D, N < 2, |S| = 0, values not finite, δ not in [0, 1),
            or an unknown device.
    """
    u, r = _check_confs(unlearned_conf, retrained_conf, delta)
    try:
        dev = torch.device("cpu") if device is None else torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UnlearnkitError(f"forget_quality: bad device {device!r} ({e})") from None
    return _score_blocks(u, r, delta, dev)


def _forget_quality_searchsorted(
    unlearned_conf: ArrayLike, retrained_conf: ArrayLike, delta: float = DELTA
) -> ForgetQualityResult:
    """The previous :func:`forget_quality`: every rule of one example at a time (``np.searchsorted`` on the
    sorted samples, ε from the count-pair table). Kept as a second reference and for the benchmark."""
    u, r = _check_confs(unlearned_conf, retrained_conf, delta)
    table = _epsilon_table(u.shape[0], delta)  # ε for every (false positives, false negatives) count pair
    return _score(u, r, lambda pos, neg: _rule_epsilons_fast(pos, neg, table))


def _forget_quality_loop(
    unlearned_conf: ArrayLike, retrained_conf: ArrayLike, delta: float = DELTA
) -> ForgetQualityResult:
    """Plain reference implementation of :func:`forget_quality`: every rule's rates by direct comparison.

    About 30x slower than :func:`_forget_quality_searchsorted` at N = 512; used to cross-check the fast
    paths in the tests.
    """
    u, r = _check_confs(unlearned_conf, retrained_conf, delta)
    return _score(u, r, lambda pos, neg: _rule_epsilons_loop(pos, neg, delta))


# ---------------------------------------------------------------------------------------------------
# §1.6 final score
# ---------------------------------------------------------------------------------------------------


def final_score(
    F: float | ForgetQualityResult,
    ra_u: float | ArrayLike,
    ra_r: float | ArrayLike,
    ta_u: float | ArrayLike,
    ta_r: float | ArrayLike,
) -> float:
    """Challenge score F × (RA_U / RA_R) × (TA_U / TA_R) (spec §1.6; ``main.py`` L337).

    Args:
        F: forgetting quality, or the :class:`ForgetQualityResult` holding it.
        ra_u, ra_r: retain-set accuracy of the unlearned (U) and retrained (R) models.
        ta_u, ta_r: test-set accuracy of the same.

    Each accuracy is a scalar or the per-model accuracies, averaged unweighted as the scorer does; any
    consistent unit works (fractions or %). The ratios are **not
    capped at 1**, as published: an unlearner more accurate than retraining is rewarded, not only a less
    accurate one penalised.
    """
    f = F.F if isinstance(F, ForgetQualityResult) else float(F)
    if not math.isfinite(f) or f < 0:
        raise UnlearnkitError(f"forget quality must be a finite number >= 0, got {f!r}")
    means = []
    for name, acc in (("ra_u", ra_u), ("ra_r", ra_r), ("ta_u", ta_u), ("ta_r", ta_r)):
        try:
            a = _as_numpy(acc).astype(np.float64).ravel()
        except (TypeError, ValueError):
            raise UnlearnkitError(f"{name} must be numeric accuracies, got {acc!r}") from None
        if a.size == 0 or not np.isfinite(a).all() or (a < 0).any():
            raise UnlearnkitError(f"{name} must be finite non-negative accuracies, got {acc!r}")
        means.append(float(a.mean()))
    mean_ra_u, mean_ra_r, mean_ta_u, mean_ta_r = means
    if mean_ra_r == 0 or mean_ta_r == 0:
        raise UnlearnkitError("retrained accuracies must be > 0 to form the ratios")
    return f * (mean_ra_u / mean_ra_r) * (mean_ta_u / mean_ta_r)
