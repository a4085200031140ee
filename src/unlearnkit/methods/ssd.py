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

Defaults follow the code: α (``selection_weighting``) = 10, λ (``dampening_constant``) = 1, batches of 128,
every layer eligible. Parameters without a gradient (frozen) are left alone. Buffers (batch-norm running
statistics) are not dampened. A non-finite loss or importance raises :class:`TrainingDivergedError`.

**A bound worth knowing.** D contains D_f, so for per-sample importances I_D ≥ (|D_f|/|D|)·I_f, i.e.
I_f/I_D ≤ |D|/|D_f| (the batch estimate above obeys it approximately). With the code's α = 10, a forget
set of more than ~10% of D can select (almost) nothing: on digits, where one class is ~10% of D, SSD at
the defaults leaves the model as it was, and α = 7-8 tips from partial forgetting into collapse
(measured on small_cnn). The paper's full-class results are on CIFAR-100/-20, where a class is 1-5% of D.

``report_``: ``ssd_dampened`` (entries dampened), ``ssd_dampened_fraction`` (of all parameter entries).

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
from unlearnkit.methods._base import POSITIVE, POSITIVE_INT, Interval, LogUniform, Method, UnlearnData, register_method

#: α must be at least 1: an entry is selected when the forget set matters *more* to it than D does
AT_LEAST_ONE = Interval(float, 1.0, None, "left")


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
        "selection_weighting": [AT_LEAST_ONE],
        "dampening_constant": [POSITIVE],
        "batch_size": [POSITIVE_INT],
    }

    def __init__(self, *, selection_weighting: float = 10.0, dampening_constant: float = 1.0,
                 batch_size: int = 128) -> None:  # fmt: skip
        self.selection_weighting = selection_weighting
        self.dampening_constant = dampening_constant
        self.batch_size = batch_size

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        dev = data.device
        model.eval()  # importances at the deployed model: batch-norm statistics frozen, dropout off
        full = ConcatDataset([data.retain, data.forget])  # D = D_r ∪ D_f (the code uses the full train set)
        imp_f = diagonal_importance(model, data.forget, self.batch_size, dev, "ssd (forget importance)")
        imp_d = diagonal_importance(model, full, self.batch_size, dev, "ssd (training-set importance)")
        alpha, lam = float(self.selection_weighting), float(self.dampening_constant)
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
        self.report_ = {"ssd_dampened": dampened, "ssd_dampened_fraction": dampened / max(total, 1)}
        return model
