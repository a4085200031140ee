"""CF-k (catastrophic forgetting of the last k layers): fine-tune only the last k layers on D_r.

Goel, Prabhu, Sanyal, Lim, Torr, Kumaraguru, "Towards Adversarial Evaluations for Inexact Machine
Unlearning", arXiv 2201.06640 (2022), section "EU-k and CF-k". With ``f(x) = g_θ_b(h_θ_a(x))`` and ``g`` the
last ``k`` layers, CF-k keeps ``θ_a = θ_a^orig`` frozen and, *starting from the original* ``θ_b^orig``
(unlike EU-k, no re-initialisation), minimises ``Σ_{(x,y)∈D_r} CE(g_θ_b(h_θ_a(x)), y)``: forgetting of D_f
in the top layers comes from catastrophic forgetting only. The paper reports it as a strong, cheap baseline
(k = L is plain fine-tuning).

Layers as in :mod:`unlearnkit.methods.eu_k` (convolutions and ``nn.Linear``; the normalisation layers after
the first selected one go with them); the frozen part stays in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.methods._base import OPTIMIZER, POSITIVE, POSITIVE_INT, Method, UnlearnData, register_method
from unlearnkit.methods.eu_k import last_k_layers, train_top


@register_method("cf_k")
class CFk(Method):
    """Fine-tune the last ``k`` layers on D_r from the original weights (the rest frozen)."""

    paper = 'Goel et al., "Towards Adversarial Evaluations for Inexact Machine Unlearning", arXiv:2201.06640'
    needs = frozenset({"retain"})
    _parameter_constraints = {
        "k": [POSITIVE_INT],
        "epochs": [POSITIVE_INT],
        "lr": [POSITIVE],
        "batch_size": [POSITIVE_INT],
        "optimizer": [OPTIMIZER],
    }

    def __init__(
        self, *, k: int = 2, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, optimizer: str = "adam"
    ) -> None:
        self.k = k
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        top = last_k_layers(model, self.k)
        self.history_ = train_top(
            model, top, data, generator, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
            optimizer=self.optimizer, where="cf_k",
        )  # fmt: skip
        self.report_ = {"trainable_params": float(sum(p.numel() for m in top for p in m.parameters()))}
        return model
