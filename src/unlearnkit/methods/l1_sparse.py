"""ℓ1-sparse unlearning: fine-tune on the retain set with an ℓ1 penalty that decays to zero.

Jia, Liu, Ram, Yao, Liu, Liu, Sharma, Liu, "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023
(arXiv 2304.04934). Public code: ``OPTML-Group/Unlearn-Sparse`` (``unlearn/FT.py``: ``FT_iter`` with
``with_l1=True``, the ``FT_prune`` / "l1-sparse" entry). Paraphrased, never copied.

Sparsity-aware unlearning (paper Eq. 3): minimise over θ, starting from the original θ_o,

    L_t(θ) = CE(f_θ; D_r) + γ_t · ‖θ‖₁,        ‖θ‖₁ = Σ_i |θ_i| over every parameter

with a linearly decaying penalty weight, as the code computes it per epoch t = 0..E−1:

    γ_t = γ · (1 − t / (E − E_0))   for t < E − E_0,    γ_t = 0 afterwards

(``E_0`` = ``no_l1_epochs``, 0 by default, so the last epoch still has γ/E of the weight; the penalty
reaches 0 only after the schedule). The sparse prior pushes weights that D_r does not support toward
zero; the penalty fades so the last epochs recover retain accuracy.

The code uses SGD (momentum 0.9, weight decay 5e-4) with lr 0.01 for 10 epochs on CIFAR ResNet-18;
the paper's γ is recalled as 5e-4 [UNVERIFIED]. Defaults here, for the small offline models: Adam,
lr 1e-3, 5 epochs, γ = 5e-4, batches of 64, no weight decay [CHOICE, measured on digits/small_cnn: SGD
at lr 0.01 barely moved the model in 10 epochs; with Adam the ℓ1 term is what makes it forget — the
same run with γ = 0 keeps 28% accuracy on the forgotten class, against 0% with γ = 5e-4]. The penalty
is over every trainable parameter (biases and batch-norm affine included), as the code's
``l1_regularization`` does.

``history_``: per epoch ``(γ_t, mean CE, ‖θ‖₁ at the end of the epoch)``; :func:`l1_schedule` gives γ_t.

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-4, 1e-2]; ``epochs`` integer [1, 10]; ``alpha`` log-uniform [1e-5, 1e-2]. The ranges bracket
the defaults and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.engine import check_finite, iterate, make_optimizer
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    OPTIMIZER,
    POSITIVE,
    POSITIVE_INT,
    IntRange,
    LogUniform,
    Method,
    UnlearnData,
    register_method,
)


def l1_schedule(alpha: float, epochs: int, no_l1_epochs: int = 0) -> list[float]:
    """γ_t for t = 0..epochs−1: linear decay from ``alpha`` over ``epochs − no_l1_epochs`` epochs, then 0."""
    span = epochs - no_l1_epochs
    return [alpha * (1 - t / span) if t < span else 0.0 for t in range(epochs)]


def l1_norm(model: nn.Module) -> torch.Tensor:
    """‖θ‖₁ over every trainable parameter."""
    return torch.stack([p.abs().sum() for p in model.parameters() if p.requires_grad]).sum()


@register_method("l1_sparse")
class L1Sparse(Method):
    """Fine-tune on D_r minimising CE + γ_t·‖θ‖₁ with γ_t decaying linearly over the epochs."""

    paper = 'Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023, arXiv:2304.04934'
    search_space = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 10), "alpha": LogUniform(1e-5, 1e-2)}
    needs = frozenset({"retain"})
    _parameter_constraints = {
        "epochs": [POSITIVE_INT],
        "alpha": [NON_NEGATIVE],
        "no_l1_epochs": [NON_NEGATIVE_INT],
        "lr": [POSITIVE],
        "batch_size": [POSITIVE_INT],
        "optimizer": [OPTIMIZER],
        "momentum": [NON_NEGATIVE],
        "weight_decay": [NON_NEGATIVE],
    }

    def __init__(
        self, *, epochs: int = 5, alpha: float = 5e-4, no_l1_epochs: int = 0, lr: float = 1e-3,
        batch_size: int = 64, optimizer: str = "adam", momentum: float = 0.9, weight_decay: float = 0.0,
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.alpha = alpha
        self.no_l1_epochs = no_l1_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        if self.no_l1_epochs >= self.epochs:
            raise UnlearnkitError(
                f"method 'l1_sparse': no_l1_epochs ({self.no_l1_epochs}) must be smaller than epochs ({self.epochs})"
            )
        dev = data.device
        opt = make_optimizer(model.parameters(), self.optimizer, self.lr, self.weight_decay, self.momentum)
        schedule = l1_schedule(self.alpha, self.epochs, self.no_l1_epochs)
        self.history_: list[tuple[float, float, float]] = []
        model.train()
        for epoch, gamma_t in enumerate(schedule):
            total, n = 0.0, 0
            for xb, yb in iterate(data.retain, self.batch_size, shuffle=True, generator=generator):
                ce = F.cross_entropy(model(xb.to(dev)), yb.to(dev))
                loss = ce + gamma_t * l1_norm(model) if gamma_t > 0 else ce  # CE + γ_t·‖θ‖₁
                check_finite(loss, "l1_sparse")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, n = total + ce.item(), n + 1
            with torch.no_grad():
                self.history_.append((gamma_t, total / max(n, 1), float(l1_norm(model))))
            if data.on_epoch:
                data.on_epoch(epoch + 1, self.epochs, total / max(n, 1))
        return model
