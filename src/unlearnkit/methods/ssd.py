"""SSD: Selective Synaptic Dampening, retrain-free unlearning by Fisher importance.

Foster, Schoepf, Brintrup, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
Dampening", AAAI 2024 (arXiv 2308.07707). Public code: ``if-loops/selective-synaptic-dampening``
(``ssd.py`` ``ParameterPerturber``; defaults from ``forget_*_main.py``). Paraphrased, never copied.

No gradient step touches the weights. Two diagonal Fisher-information estimates are computed at the
original weights θ (model in eval mode): one on the full training data D = D_r ∪ D_f (``I_D``) and one on
the forget set (``I_f``). Then, per parameter entry (paper Eq. 2-3):

    selected  ⇔  I_f[i] > α · I_D[i]                                  (synapse selection, α ≥ 1)
    β_i = min(λ · I_D[i] / I_f[i], 1)                                 (dampening factor, never > 1)
    θ_i ← β_i · θ_i   if selected,   θ_i unchanged otherwise          (unselected entries stay bit-identical)

**Importance estimate** (``importance``). The paper's importance is the diagonal of the Fisher information,
``I_S[i] = (1/|S|) Σ_{(x,y)∈S} (∂/∂θ_i CE(f_θ(x), y))²`` (the empirical Fisher: per-sample squared
gradients), ``importance="per_sample"``, the default, computed with ``torch.func.vmap`` (dearer than batch
gradients: about a backward pass per example plus one write of every parameter per example, so on a ResNet over
CIFAR expect minutes on a GPU; ``importance="batch"`` is the cheap one). The released code squares
the gradient of each *batch-mean* loss instead, ``I_S[i] = (1/m) Σ_b (∂/∂θ_i CE(f_θ(B_b), y_b))²``
over the batches of a sequential loader (``importance="batch"``, kept to reproduce it). The two differ in
kind, not only in noise: a batch-mean gradient cancels across the classes of a mixed batch and does not in
a one-class batch, so when the forget batches hold one class and the D batches are mixed (a class request
on a shuffled dataset), the batch estimate measures batch composition. Measured on digits/small_cnn (a class
request, bound |D|/|D_f| ≈ 10): the batch estimate puts the 90th / 99th percentile of I_f/I_D at 6.6 / 8.2, the
per-sample one at 1.7 / 4.2, so with the batch estimate a threshold that selects the forget-specific entries
also selects a large share of the network, and SSD either changes nothing or collapses the model (retain
accuracy −0.9); ``benchmarks/bench_ssd_calibration.py`` prints both distributions.

**A bound worth knowing.** With per-sample importances I_D = (|D_r|·I_r + |D_f|·I_f)/|D| ≥ (|D_f|/|D|)·I_f, so
I_f/I_D ≤ |D|/|D_f|: an α at or above the bound selects nothing. The code's α = 10 suits CIFAR-100 (a class is
1% of D, bound 100) and CIFAR-20 (5%, bound 20); on a 10-class problem (bound ≈ 10) it selects nothing.

**Request-dependent α (ours, not the paper's).** ``selection_weighting=None`` (the default) calibrates α for
each request on data SSD is given: candidates α_k = A·γ^k (γ = 0.85) from A = |D|/|D_f| (nothing selected)
down to 1, scanned in that order (each candidate dampens more than the one before), keeping

* the first candidate whose dampened model has forgotten: top-1 accuracy on D_f (at most
  ``calibration_samples`` examples) at or below what retraining would score, plus ``forget_tolerance`` — 0 for a
  class request (a retrained model never predicts a class it never saw), the original's accuracy on held-out
  examples for a sample-level request (a retrained model treats D_f as unseen data);
* among the candidates that lose at most ``retain_tolerance`` of top-1 accuracy against the original on held-out
  examples the request does not cover (the validation split minus the forget classes; the retain set when no
  validation split is given). A candidate beyond the tolerance is skipped, not the end of the scan: partial
  dampening can misroute retain examples that a harsher one restores. When no candidate forgets within the
  tolerance, the one with the lowest forget accuracy (the mildest of equals) is kept.

So α is the mildest dampening that forgets, within a bound on collateral damage. Each candidate costs two
forward passes over at most ``calibration_samples`` examples (the two importances are computed once). The
chosen α (beside the paper's 10) is stored with the run (``config.resolved_params``) and reported as the metric
``ssd_alpha``. Why: where a class is a large share of D (digits: 10%) the α that forgets without collateral
damage differs from class to class. The measurements behind this rule and its tolerances are in
``benchmarks/bench_ssd_calibration.py`` (proxy requests only). A given ``selection_weighting`` is used as is
(no calibration), as is λ (``dampening_constant``, the code's 1).

Defaults otherwise follow the code: batches of 128 (``batch_size``: the batch estimate's batches and the
per-sample chunks), every layer eligible. Parameters without a gradient (frozen) are left alone. Buffers
(batch-norm running statistics) are not dampened. A non-finite loss or importance raises
:class:`TrainingDivergedError`.

``report_``: ``ssd_dampened`` (entries dampened), ``ssd_dampened_fraction`` (of all parameter entries),
``ssd_alpha`` (the α used), ``ssd_calibration_steps`` (candidates evaluated; 0 for a given α).

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``selection_weighting`` log-uniform [1.0, 20.0]; ``dampening_constant`` log-uniform [0.1, 20.0]. The ranges bracket
the paper's values and stay inside ``_parameter_constraints``; the first trial (the defaults) is the calibrated α.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import ConcatDataset, Dataset, Subset

from unlearnkit.engine import check_finite, iterate, labels_of
from unlearnkit.errors import DataAccessError, TrainingDivergedError
from unlearnkit.methods._base import (
    NONE,
    POSITIVE,
    POSITIVE_INT,
    UNIT,
    Interval,
    LogUniform,
    Method,
    Options,
    UnlearnData,
    register_method,
)
from unlearnkit.methods._losses import accuracy_on

#: α must be at least 1: an entry is selected when the forget set matters *more* to it than D does
AT_LEAST_ONE = Interval(float, 1.0, None, "left")
#: a tolerated retain-accuracy loss, strictly between 0 and 1
OPEN_UNIT = Interval(float, 0.0, 1.0, "neither")
#: the code's α (``forget_*_main.py``), shown beside the calibrated one
PAPER_ALPHA = 10.0
#: ratio between successive α candidates of the calibration (ours)
CALIBRATION_STEP = 0.85
#: per-sample gradients are computed for at most this many parameter entries at once (~256 MB; 1 GB on CUDA)
_PER_SAMPLE_BUDGET = {"cpu": 2**26, "cuda": 2**28}


def alpha_candidates(n_train: int, n_forget: int) -> list[float]:
    """The calibration's α candidates, strongest selection last: |D|/|D_f|·0.85^k down to 1 (1 included)."""
    top = max(1.0, n_train / max(n_forget, 1))
    out = [top]
    while out[-1] * CALIBRATION_STEP > 1.0:
        out.append(out[-1] * CALIBRATION_STEP)
    if out[-1] > 1.0:
        out.append(1.0)
    return out


def diagonal_importance(
    model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, where: str
) -> dict[str, torch.Tensor]:
    """The released code's estimate: mean over sequential batches of the squared gradient of the batch-mean CE.

    The model's train/eval mode is left as the caller set it; gradients are cleared afterwards.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    imp = {n: torch.zeros_like(p) for n, p in params.items()}
    batches = 0
    for xb, yb in iterate(dataset, batch_size):
        loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
        check_finite(loss, where)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (n, _), g in zip(params.items(), grads, strict=True):
            if g is not None:
                imp[n] += g.detach() ** 2
        batches += 1
    return _finite_mean(imp, batches, where)


def per_sample_importance(
    model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, where: str
) -> dict[str, torch.Tensor]:
    """The empirical Fisher diagonal: mean over examples of the squared per-example CE gradient (torch.func).

    Examples are processed in chunks of at most ``batch_size`` (fewer for big models, to bound memory).
    """
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**p, **frozen}, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(out, y.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    n_entries = sum(p.numel() for p in params.values())
    budget = _PER_SAMPLE_BUDGET.get(device.type, _PER_SAMPLE_BUDGET["cpu"])
    chunk = max(1, min(batch_size, budget // max(n_entries, 1)))
    imp = {n: torch.zeros_like(p) for n, p in params.items()}
    seen = 0
    for xb, yb in iterate(dataset, chunk):
        g = per_example(params, xb.to(device), yb.to(device))
        for n in imp:
            imp[n] += g[n].pow(2).sum(0)
        seen += len(yb)
    return _finite_mean(imp, seen, where)


def _finite_mean(imp: dict[str, torch.Tensor], count: int, where: str) -> dict[str, torch.Tensor]:
    for n, t in imp.items():
        t /= max(count, 1)
        if not torch.isfinite(t).all():
            raise TrainingDivergedError(f"non-finite importance for {n!r} during {where}")
    return imp


@register_method("ssd")
class SelectiveSynapticDampening(Method):
    """Dampen the weights that matter far more to D_f than to D (no training)."""

    paper = 'Foster et al., "... Selective Synaptic Dampening", AAAI 2024, arXiv:2308.07707'
    search_space = {"selection_weighting": LogUniform(1.0, 20.0), "dampening_constant": LogUniform(0.1, 20.0)}
    needs = frozenset({"forget", "retain"})  # and "val" when given (the calibration; see the docstring)
    _parameter_constraints = {
        "selection_weighting": [AT_LEAST_ONE, NONE],
        "dampening_constant": [POSITIVE],
        "batch_size": [POSITIVE_INT],
        "importance": [Options(frozenset({"per_sample", "batch"}))],
        "retain_tolerance": [OPEN_UNIT],
        "forget_tolerance": [UNIT],
        "calibration_samples": [POSITIVE_INT],
    }

    def __init__(self, *, selection_weighting: float | None = None, dampening_constant: float = 1.0,
                 batch_size: int = 128, importance: str = "per_sample", retain_tolerance: float = 0.02,
                 forget_tolerance: float = 0.0, calibration_samples: int = 2048) -> None:  # fmt: skip
        self.selection_weighting = selection_weighting
        self.dampening_constant = dampening_constant
        self.batch_size = batch_size
        self.importance = importance
        self.retain_tolerance = retain_tolerance
        self.forget_tolerance = forget_tolerance
        self.calibration_samples = calibration_samples

    def resolved_params(self, data: UnlearnData) -> dict[str, float]:
        """The α calibrated for the last request (beside the paper's), when ``selection_weighting`` is not given."""
        if self.selection_weighting is not None or not hasattr(self, "alpha_"):
            return {}
        return {"selection_weighting": self.alpha_, "selection_weighting_paper": PAPER_ALPHA}

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        dev = data.device
        model.eval()  # importances at the deployed model: batch-norm statistics frozen, dropout off
        full = ConcatDataset([data.retain, data.forget])  # D = D_r ∪ D_f (the code uses the full train set)
        estimate = per_sample_importance if self.importance == "per_sample" else diagonal_importance
        imp_f = estimate(model, data.forget, self.batch_size, dev, "ssd (forget importance)")
        imp_d = estimate(model, full, self.batch_size, dev, "ssd (training-set importance)")
        steps = 0
        if self.selection_weighting is not None:
            alpha = float(self.selection_weighting)
        else:
            alpha, steps = self._calibrate(model, data, imp_f, imp_d, generator)
        with torch.no_grad():
            dampened, total = _dampen(model, model, imp_f, imp_d, alpha, float(self.dampening_constant))
        self.alpha_ = alpha
        self.report_ = {"ssd_dampened": dampened, "ssd_dampened_fraction": dampened / max(total, 1),
                        "ssd_alpha": alpha, "ssd_calibration_steps": steps}  # fmt: skip
        return model

    def _calibrate(self, model: nn.Module, data: UnlearnData, imp_f: dict[str, torch.Tensor],
                   imp_d: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[float, int]:  # fmt: skip
        """The mildest α of the scan that forgets within the retain tolerance (module docstring)."""
        n_forget = len(data.forget)
        candidates = alpha_candidates(len(data.retain) + n_forget, n_forget)
        held_out, sample_level = _calibration_set(data, self.calibration_samples, generator)
        forget_idx = torch.randperm(n_forget, generator=generator)[: min(self.calibration_samples, n_forget)]
        forget = Subset(data.forget, forget_idx.tolist())
        floor = accuracy_on(model, held_out, data.device) - self.retain_tolerance
        # what retraining would score on D_f: 0 for a class request, held-out accuracy for a sample-level one
        target = (
            accuracy_on(model, sample_level, data.device) if sample_level is not None else 0.0
        ) + self.forget_tolerance
        trial = copy.deepcopy(model).eval()
        lam = float(self.dampening_constant)
        best, steps = (1.0 + self.forget_tolerance, candidates[0]), 0  # (forget accuracy, α) of the best so far
        for alpha in candidates:
            with torch.no_grad():
                _dampen(trial, model, imp_f, imp_d, alpha, lam)
            steps += 1
            if accuracy_on(trial, held_out, data.device) < floor:
                continue  # collateral damage beyond the tolerance: not a candidate (a harsher one may recover)
            forget_acc = accuracy_on(trial, forget, data.device)
            if forget_acc <= target:
                return alpha, steps  # forgotten: the mildest α that does it
            if forget_acc < best[0]:
                best = (forget_acc, alpha)
        return best[1], steps  # nothing forgets within the tolerance: the one that forgets most


def _calibration_set(data: UnlearnData, n: int, generator: torch.Generator) -> tuple[Dataset, Dataset | None]:
    """Held-out examples the request does not cover (the validation split minus the forget classes; the retain
    set when no validation split is given), at most ``n``; and, for a sample-level request, the held-out
    examples whose accuracy stands for retraining's accuracy on D_f (``None`` for a class request)."""
    try:
        pool: Dataset | None = data.val
    except DataAccessError:
        pool = None
    if pool is not None and data.forget_classes:
        keep = ~torch.isin(labels_of(pool), torch.tensor(data.forget_classes))
        pool = Subset(pool, keep.nonzero().flatten().tolist())
    if pool is None or len(pool) == 0:
        pool = data.retain
    sample_level = None if data.forget_classes else pool
    idx = torch.randperm(len(pool), generator=generator)[: min(n, len(pool))].tolist()
    return Subset(pool, idx), sample_level


def _dampen(target: nn.Module, source: nn.Module, imp_f: dict[str, torch.Tensor], imp_d: dict[str, torch.Tensor],
            alpha: float, lam: float) -> tuple[int, int]:  # fmt: skip
    """Write SSD's dampened copy of ``source``'s parameters into ``target`` (may be the same module).

    Returns (entries dampened, entries in all).
    """
    dampened = total = 0
    src = dict(source.named_parameters())
    for name, p in target.named_parameters():
        total += p.numel()
        w = src[name]
        if name not in imp_f:
            p.copy_(w)
            continue
        i_f, i_d = imp_f[name], imp_d[name]
        selected = i_f > alpha * i_d  # Eq. 2: synapse selection
        # Eq. 3: β = min(λ·I_D / I_f, 1); selected entries have I_f > 0, so the division is safe there
        beta = torch.where(selected, (lam * i_d / torch.where(selected, i_f, 1.0)).clamp(max=1.0), 1.0)
        p.copy_(torch.where(selected, w * beta, w))  # unselected entries keep their exact bits
        dampened += int(selected.sum())
    return dampened, total
