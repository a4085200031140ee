"""SSD: Selective Synaptic Dampening, retrain-free unlearning by Fisher importance.

Foster, Schoepf, Brintrup, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
Dampening", AAAI 2024 (arXiv 2308.07707). Public code: ``if-loops/selective-synaptic-dampening``
(``ssd.py`` ``ParameterPerturber``; defaults from ``forget_*_main.py``). Paraphrased, never copied.

No gradient step touches the weights. Two diagonal Fisher-information estimates are computed at the
original weights θ (model in eval mode), as the code does: for a data set S cut into batches B_1..B_m,

    I_S[i] = (1/m) Σ_b ( ∂/∂θ_i  CE(f_θ(B_b), y_b) )²          (squared gradient of the batch-mean loss)

one on the full training data D = D_r ∪ D_f (``I_D``) and one on the forget set (``I_f``). Then, per
parameter entry (paper Eq. 2-3):

    selected  ⇔  I_f[i] > α · I_D[i]                                  (synapse selection, α ≥ 1)
    β_i = min(λ · I_D[i] / I_f[i], 1)                                 (dampening factor, never > 1)
    θ_i ← β_i · θ_i   if selected,   θ_i unchanged otherwise          (unselected entries stay bit-identical)

Defaults follow the code (λ (``dampening_constant``) = 1, batches of 128, every layer eligible) except α
(``selection_weighting``), which depends on the request (see below): the code's α = 10 is used when the
request allows it. Parameters without a gradient (frozen) are left alone. Buffers (batch-norm running
statistics) are not dampened. A non-finite loss or importance raises :class:`TrainingDivergedError`.

**A bound worth knowing.** D contains D_f, so for per-sample importances I_D ≥ (|D_f|/|D|)·I_f, i.e.
I_f/I_D ≤ |D|/|D_f| (the batch estimate above obeys it approximately). With the code's α = 10, a forget
set of more than ~10% of D can select (almost) nothing: on digits, where one class is ~10% of D, SSD at
the defaults leaves the model as it was, and α = 7-8 tips from partial forgetting into collapse
(measured on small_cnn). The paper's full-class results are on CIFAR-100/-20, where a class is 1-5% of D.

**Request-dependent default (ours, not the paper's).** ``selection_weighting=None`` (the default) resolves
α = min(10, 0.8 · |D|/|D_f|) for each request: the paper's α = 10 whenever the bound leaves it reachable
(|D_f| ≤ 8% of D, e.g. a CIFAR-100 class), else 80% of the bound, so that some synapses can be selected.
On digits (a class is ~10% of D, bound ≈ 9.7) it gives α ≈ 7.8 instead of the paper's 10, which selects
nothing there. The resolved value is stored with each run (``config.resolved_params``) and reported as
the metric ``ssd_alpha``. It is a floor, not a tuning: on digits/small_cnn, α alone sits on a cliff between
no forgetting and collapse at λ = 1 (measured: α = 7 leaves retain accuracy 0.45, α = 9 forgets nothing);
``unlearnkit tune`` searches α with λ, and a larger λ (a milder dampening, e.g. α = 3, λ = 6: forget 0.00,
retain 0.96 on class 1) is what makes SSD usable there.

``report_``: ``ssd_dampened`` (entries dampened), ``ssd_dampened_fraction`` (of all parameter entries),
``ssd_alpha`` (the α used).

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``selection_weighting`` log-uniform [1.0, 20.0]; ``dampening_constant`` log-uniform [0.1, 20.0]. The ranges bracket
the defaults and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from unlearnkit.engine import check_finite, iterate
from unlearnkit.errors import TrainingDivergedError
from unlearnkit.methods._base import (
    NONE,
    POSITIVE,
    POSITIVE_INT,
    Interval,
    LogUniform,
    Method,
    UnlearnData,
    register_method,
)

#: α must be at least 1: an entry is selected when the forget set matters *more* to it than D does
AT_LEAST_ONE = Interval(float, 1.0, None, "left")
#: the code's α (``forget_*_main.py``), used whenever the request leaves it reachable
PAPER_ALPHA = 10.0
#: the request-dependent default takes this fraction of the bound |D|/|D_f| when the paper's α is above it (ours)
AUTO_FRACTION = 0.8


def auto_alpha(n_train: int, n_forget: int) -> float:
    """The request-dependent default α = min(10, 0.8 · |D|/|D_f|), at least 1 (see the module docstring)."""
    return max(1.0, min(PAPER_ALPHA, AUTO_FRACTION * n_train / max(n_forget, 1)))


def diagonal_importance(
    model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, where: str
) -> dict[str, torch.Tensor]:
    """Mean over batches of the squared gradient of the batch-mean cross-entropy, per parameter entry.

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
    for n, t in imp.items():
        t /= max(batches, 1)
        if not torch.isfinite(t).all():
            raise TrainingDivergedError(f"non-finite importance for {n!r} during {where}")
    return imp


@register_method("ssd")
class SelectiveSynapticDampening(Method):
    """Dampen the weights that matter far more to D_f than to D (no training)."""

    paper = 'Foster et al., "... Selective Synaptic Dampening", AAAI 2024, arXiv:2308.07707'
    search_space = {"selection_weighting": LogUniform(1.0, 20.0), "dampening_constant": LogUniform(0.1, 20.0)}
    needs = frozenset({"forget", "retain"})
    _parameter_constraints = {
        "selection_weighting": [AT_LEAST_ONE, NONE],
        "dampening_constant": [POSITIVE],
        "batch_size": [POSITIVE_INT],
    }

    def __init__(self, *, selection_weighting: float | None = None, dampening_constant: float = 1.0,
                 batch_size: int = 128) -> None:  # fmt: skip
        self.selection_weighting = selection_weighting
        self.dampening_constant = dampening_constant
        self.batch_size = batch_size

    def alpha(self, data: UnlearnData) -> float:
        """α for this request: the given ``selection_weighting``, else :func:`auto_alpha` of the data sizes."""
        if self.selection_weighting is not None:
            return float(self.selection_weighting)
        n_forget = len(data.forget)
        return auto_alpha(len(data.retain) + n_forget, n_forget)

    def resolved_params(self, data: UnlearnData) -> dict[str, float]:
        """The α this request resolves (beside the paper's), when ``selection_weighting`` is left to the request."""
        if self.selection_weighting is not None:
            return {}
        return {"selection_weighting": self.alpha(data), "selection_weighting_paper": PAPER_ALPHA}

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        dev = data.device
        model.eval()  # importances at the deployed model: batch-norm statistics frozen, dropout off
        full = ConcatDataset([data.retain, data.forget])  # D = D_r ∪ D_f (the code uses the full train set)
        imp_f = diagonal_importance(model, data.forget, self.batch_size, dev, "ssd (forget importance)")
        imp_d = diagonal_importance(model, full, self.batch_size, dev, "ssd (training-set importance)")
        alpha, lam = self.alpha(data), float(self.dampening_constant)
        dampened = total = 0
        with torch.no_grad():
            for name, p in model.named_parameters():
                total += p.numel()
                if name not in imp_f:
                    continue
                i_f, i_d = imp_f[name], imp_d[name]
                selected = i_f > alpha * i_d  # Eq. 2: synapse selection
                # Eq. 3: β = min(λ·I_D / I_f, 1); selected entries have I_f > 0, so the division is safe there
                beta = torch.where(selected, (lam * i_d / torch.where(selected, i_f, 1.0)).clamp(max=1.0), 1.0)
                p.copy_(torch.where(selected, p * beta, p))  # unselected entries keep their exact bits
                dampened += int(selected.sum())
        self.report_ = {"ssd_dampened": dampened, "ssd_dampened_fraction": dampened / max(total, 1), "ssd_alpha": alpha}
        return model
