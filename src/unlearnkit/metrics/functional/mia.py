"""Population membership-inference attacks (MIAs) used in vision-unlearning papers (evaluation spec §3).

All attacks fit a classifier on *one* model's outputs and ask how member-like the forget set D_f looks.
None of them is "higher is better": an unlearned model should score what the model retrained on D_r
scores.

* :func:`mia_features` — the five per-example features of Song & Mittal, "Systematic Evaluation of
  Privacy Risks of Machine Learning Models" (USENIX Security 2021): correctness, confidence p_y,
  entropy, modified entropy and the full probability vector.
* :func:`loss_lr_mia` — the NeurIPS 2023 Machine Unlearning Challenge starting kit
  (``unlearning-challenge/starting-kit``, ``unlearning-CIFAR10.ipynb``; also the SCRUB repo): logistic
  regression on per-example cross-entropy losses, forget (1) vs test (0), cross-validated accuracy.
  0.5 means the two sets are indistinguishable by their losses.
* :func:`svc_mia_efficacy` / :func:`mia_efficacy` — "MIA-Efficacy" of the OPTML group (Jia et al.,
  "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023, ``OPTML-Group/Unlearn-Sparse``; Fan et
  al., "SalUn", ICLR 2024, ``OPTML-Group/Unlearn-Saliency``, ``evaluation/SVC_MIA.py``): an RBF SVC
  (C=3, gamma='auto') fitted on retain (member) vs test (non-member) features, returning the fraction of
  D_f predicted *non-member*. The papers report the ``confidence`` feature.
* :func:`entropy_svc_member_rate` — ``get_membership_attack_prob`` of Chundawat et al., "Can Bad Teaching
  Induce Forgetting?" (AAAI 2023, ``vikram2000b/bad-teaching-unlearning``, ``metrics.py``): the same SVC
  on output entropy, retain (1) vs test (0), returning the *member* rate on D_f (lower = more forgetting).

**Modified entropy.** We implement Song & Mittal's definition

    Mentr(p, y) = −(1 − p_y) log p_y − Σ_{j≠y} p_j log(1 − p_j).

The OPTML ``m_entropy`` differs in two ways (evaluation spec §3.3, caveat 2): its "reverse" log term is
``log p`` instead of ``log(1 − p)``, and ``modified_probs[:, labels]`` indexes *columns* by every label in
the batch, so each row gets 1 − p_j for every class j that occurs anywhere in the batch. With a batch
containing all classes it computes −Σ_j (1 − p_j) log p_j for every row, independent of the row's label.
Numbers from our ``m_entropy`` are therefore not comparable with the repo's.

**Sizes.** SVC training sets are capped (``max_per_side``, default 2,000 rows on the larger side) by a
seeded subsample without replacement that keeps the member/non-member ratio, so the attacks stay fast on
large splits; the starting-kit attack balances forget
and test by subsampling the larger side (the kit subsamples only the forget set) with a seeded RNG.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score
from sklearn.svm import SVC

from unlearnkit.metrics.functional.classification import entropy

#: the feature families of :func:`mia_features`, in Song & Mittal's order
FEATURES: tuple[str, ...] = ("correctness", "confidence", "entropy", "m_entropy", "prob")

Feature = Literal["correctness", "confidence", "entropy", "m_entropy", "prob"]

_LOG_FLOOR = 1e-30


class InsufficientSamplesError(ValueError):
    """A split is too small for the attack (e.g. too few samples per class for cross-validation)."""


def _as_probs_labels(
    probs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if p.ndim != 2:
        raise ValueError(f"expected probabilities of shape [n, C], got {p.shape}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"expected labels of shape [{p.shape[0]}], got {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must be integers in [0, {p.shape[1]})")
    return p, y.astype(np.int64)


def _safe_log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, _LOG_FLOOR))


def modified_entropy(probs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Song & Mittal's modified entropy per row: −(1−p_y) log p_y − Σ_{j≠y} p_j log(1−p_j).

    Logs are clamped at 1e-30. Low for confidently correct predictions, high for confidently wrong ones
    (unlike plain entropy, which is low for both). See the module docstring for how the OPTML code differs.
    """
    p, y = _as_probs_labels(probs, labels)
    rows = np.arange(p.shape[0])
    p_y = p[rows, y]
    # reverse term for every class, then remove the j == y column
    rev = p * _safe_log(1.0 - p)
    rev[rows, y] = 0.0
    return -(1.0 - p_y) * _safe_log(p_y) - rev.sum(axis=1)


def mia_features(probs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Song & Mittal's per-example MIA features from softmax outputs ``[n, C]`` and labels ``[n]``.

    Returns:
        ``correctness`` (float 0/1, argmax == y), ``confidence`` (p_y), ``entropy`` (−Σ p log p, nats,
        0·log 0 = 0), ``m_entropy`` (:func:`modified_entropy`), each of shape ``[n]``, and ``prob`` (the
        probability matrix itself, ``[n, C]``).
    """
    p, y = _as_probs_labels(probs, labels)
    rows = np.arange(p.shape[0])
    return {
        "correctness": (p.argmax(axis=1) == y).astype(np.float64),
        "confidence": p[rows, y].copy(),
        "entropy": entropy(p),
        "m_entropy": modified_entropy(p, y),
        "prob": p.copy(),
    }


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``x`` without replacement, kept in their original order (all rows if n >= len)."""
    if n >= len(x):
        return x
    return x[np.sort(rng.choice(len(x), size=n, replace=False))]


def _cap(
    member: np.ndarray, nonmember: np.ndarray, max_per_side: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Subsample both sides by one common factor so the larger has at most ``max_per_side`` rows.

    A common factor keeps the member/non-member ratio of the full sets (it matters for the unbalanced
    bad-teaching attack); each side keeps at least 2 rows.
    """
    if max_per_side is None:
        return member, nonmember
    if max_per_side < 2:
        raise ValueError(f"max_per_side must be >= 2 or None, got {max_per_side}")
    largest = max(len(member), len(nonmember))
    if largest <= max_per_side:
        return member, nonmember
    factor = max_per_side / largest
    rng = np.random.default_rng(seed)
    n_m, n_n = (max(2, round(len(a) * factor)) for a in (member, nonmember))
    return _subsample(member, n_m, rng), _subsample(nonmember, n_n, rng)


def _as_2d(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim == 0:
        raise ValueError(f"{name} must be an array of per-example values, got a scalar")
    a = a.reshape(-1, 1) if a.ndim == 1 else a.reshape(a.shape[0], int(np.prod(a.shape[1:])))
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def loss_lr_mia(
    forget_losses: np.ndarray | torch.Tensor,
    test_losses: np.ndarray | torch.Tensor,
    n_splits: int = 5,
    seed: int = 0,
    test_size: float = 0.1,
) -> float:
    """Starting-kit MIA: CV accuracy of logistic regression telling forget losses (1) from test losses (0).

    The larger side is subsampled (seeded, without replacement) to the size n of the smaller one; the
    attacker is ``LogisticRegression()`` with default settings, scored by
    ``cross_val_score(..., cv=StratifiedShuffleSplit(n_splits, test_size=test_size, random_state=seed))``
    with accuracy; the mean over splits is returned. 0.5 ≈ indistinguishable, 1.0 = fully separable.
    The kit uses ``n_splits=10, random_state=0``; SCRUB uses 5 splits (our default, as the issue asks).

    Raises:
        InsufficientSamplesError: if n is too small for every split to hold both classes in its
            train and test parts (n < 2, or ceil(test_size·2n) < 2, or 2n − ceil(test_size·2n) < 2).
    """
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    f = _as_2d(forget_losses, "forget_losses")
    t = _as_2d(test_losses, "test_losses")
    if f.shape[1] != 1 or t.shape[1] != 1:
        raise ValueError("expected one loss per example")
    n = min(len(f), len(t))
    n_test = int(np.ceil(test_size * 2 * n))
    if n < 2 or n_test < 2 or 2 * n - n_test < 2:
        raise InsufficientSamplesError(
            f"loss MIA needs more samples: {len(f)} forget and {len(t)} test losses give {n} per class, "
            f"too few for a stratified {test_size:g} hold-out with both classes"
        )
    rng = np.random.default_rng(seed)
    f, t = _subsample(f, n, rng), _subsample(t, n, rng)
    x = np.concatenate([t, f])
    y = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
    cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=seed)
    scores = cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy")
    return float(np.mean(scores))


def _fit_svc(member: np.ndarray, nonmember: np.ndarray) -> SVC:
    x = np.concatenate([member, nonmember])
    y = np.concatenate([np.ones(len(member), dtype=np.int64), np.zeros(len(nonmember), dtype=np.int64)])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    return clf


def _check_sides(**sides: np.ndarray) -> None:
    for name, a in sides.items():
        if len(a) < 2:
            raise InsufficientSamplesError(f"the SVC attack needs at least 2 {name} samples, got {len(a)}")


def svc_mia_efficacy(
    shadow_train_feat: np.ndarray | torch.Tensor,
    shadow_test_feat: np.ndarray | torch.Tensor,
    target_feat: np.ndarray | torch.Tensor,
    *,
    max_per_side: int | None = 2000,
    seed: int = 0,
) -> float:
    """OPTML MIA-Efficacy: fraction of ``target_feat`` (D_f) an RBF SVC predicts *non-member*, TN/|D_f|.

    The SVC (``C=3, gamma='auto', kernel='rbf'``) is fitted on ``shadow_train_feat`` (members, label 1;
    the OPTML code passes the first |D_test| retain examples) against ``shadow_test_feat`` (non-members,
    label 0; D_test). Features may be ``[n]`` or ``[n, d]``. The training sides are subsampled (seeded,
    one common factor) so the larger has at most ``max_per_side`` rows (``None`` = no cap); the target set
    is not subsampled.
    Higher = D_f looks more like unseen data; the goal is to match the retrained model.
    """
    member = _as_2d(shadow_train_feat, "shadow_train_feat")
    nonmember = _as_2d(shadow_test_feat, "shadow_test_feat")
    target = _as_2d(target_feat, "target_feat")
    _check_sides(member=member, **{"non-member": nonmember})
    if len(target) == 0:
        raise InsufficientSamplesError("the target (forget) set is empty")
    if not member.shape[1] == nonmember.shape[1] == target.shape[1]:
        raise ValueError(f"feature widths differ: {member.shape[1]}, {nonmember.shape[1]}, {target.shape[1]}")
    member, nonmember = _cap(member, nonmember, max_per_side, seed)
    clf = _fit_svc(member, nonmember)
    return float(1.0 - clf.predict(target).mean())


def mia_efficacy(
    retain_probs: np.ndarray | torch.Tensor,
    retain_labels: np.ndarray | torch.Tensor,
    test_probs: np.ndarray | torch.Tensor,
    test_labels: np.ndarray | torch.Tensor,
    forget_probs: np.ndarray | torch.Tensor,
    forget_labels: np.ndarray | torch.Tensor,
    feature: Feature = "confidence",
    *,
    max_per_side: int | None = 2000,
    seed: int = 0,
) -> float:
    """MIA-Efficacy on one of Song & Mittal's features, as in OPTML's ``SVC_MIA_forget_efficacy``.

    Shadow members are the first |D_test| retain examples (the OPTML code's
    ``Subset(retain, range(len(test)))``), shadow non-members are D_test, targets are D_f; then
    :func:`svc_mia_efficacy`. ``feature`` is one of :data:`FEATURES`; SalUn / l1-sparse report
    ``confidence``.
    """
    if feature not in FEATURES:
        raise ValueError(f"unknown MIA feature {feature!r}; expected one of {', '.join(FEATURES)}")
    fr = mia_features(retain_probs, retain_labels)[feature]
    ft = mia_features(test_probs, test_labels)[feature]
    ff = mia_features(forget_probs, forget_labels)[feature]
    return svc_mia_efficacy(fr[: len(ft)], ft, ff, max_per_side=max_per_side, seed=seed)


def entropy_svc_member_rate(
    retain_probs: np.ndarray | torch.Tensor,
    test_probs: np.ndarray | torch.Tensor,
    forget_probs: np.ndarray | torch.Tensor,
    *,
    max_per_side: int | None = 2000,
    seed: int = 0,
) -> float:
    """Bad-teaching ``get_membership_attack_prob``: member rate on D_f of an entropy SVC.

    ``SVC(C=3, gamma='auto', kernel='rbf')`` on the output entropy of the retain set (label 1) vs the test
    set (label 0) — all of each, unbalanced as in the reference code; when the larger side exceeds
    ``max_per_side`` both are subsampled (seeded) by one factor, keeping their ratio — then the mean
    predicted-member rate on D_f is returned.
    Lower = more forgetting; the goal is to match the retrained model.
    """
    ent: dict[str, np.ndarray] = {}
    for name, p in (("retain", retain_probs), ("test", test_probs), ("forget", forget_probs)):
        a = np.asarray(p.detach().cpu() if isinstance(p, torch.Tensor) else p, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"expected {name} probabilities of shape [n, C], got {a.shape}")
        ent[name] = entropy(a)
    member, nonmember, target = ent["retain"], ent["test"], ent["forget"]
    _check_sides(retain=member, test=nonmember)
    if len(target) == 0:
        raise InsufficientSamplesError("the forget set is empty")
    member, nonmember = _as_2d(member, "retain entropy"), _as_2d(nonmember, "test entropy")
    member, nonmember = _cap(member, nonmember, max_per_side, seed)
    clf = _fit_svc(member, nonmember)
    return float(clf.predict(_as_2d(target, "forget entropy")).mean())
