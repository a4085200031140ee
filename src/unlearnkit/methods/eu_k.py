"""EU-k (exact unlearning of the last k layers): re-initialise the last k layers and train them on D_r.

Goel, Prabhu, Sanyal, Lim, Torr, Kumaraguru, "Towards Adversarial Evaluations for Inexact Machine
Unlearning", arXiv 2201.06640 (2022), section "EU-k and CF-k". Write the network as
``f(x) = g_θ_b(h_θ_a(x))`` where ``g`` is the last ``k`` layers. EU-k keeps the first ``L - k`` layers of the
original model, ``θ_a = θ_a^orig`` (frozen), re-initialises the others, ``θ_b ~ init``, and retrains them
from scratch on the retain set: ``θ_b* = argmin_θ_b Σ_{(x,y)∈D_r} CE(g_θ_b(h_θ_a(x)), y)``. It is *exact*
unlearning of the top ``k`` layers (they never saw D_f) and is as cheap as training ``k`` layers; what
D_f left in the frozen ``h`` is what the paper's interclass-confusion test and a relearning attack probe.

Here a layer is a convolution or ``nn.Linear`` (in module order); the normalisation layers placed after the
first of the last ``k`` of them go with them. The frozen part stays in eval mode (its BatchNorm statistics
are not updated), as freezing it implies.

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-4, 1e-2]; ``epochs`` integer [1, 10]; ``k`` integer 1, 3. The ranges bracket the defaults
and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from unlearnkit.engine import check_finite, cycle, make_optimizer
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import (
    OPTIMIZER,
    POSITIVE,
    POSITIVE_INT,
    IntRange,
    LogUniform,
    Method,
    UnlearnData,
    register_method,
)

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def last_k_layers(model: nn.Module, k: int) -> list[nn.Module]:
    """The leaf modules with parameters from the ``k``-th last weight layer (conv / linear) on, in module order.

    Raises:
        UnlearnkitError: the model has fewer than ``k`` weight layers.
    """
    leaves = [m for m in model.modules() if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    weights = [i for i, m in enumerate(leaves) if isinstance(m, _WEIGHT_LAYERS)]
    if len(weights) < k:
        raise UnlearnkitError(f"k = {k} but the model has {len(weights)} convolution/linear layers")
    return leaves[weights[-k] :]


def train_top(
    model: nn.Module, top: list[nn.Module], data: UnlearnData, generator: torch.Generator, *, epochs: int, lr: float,
    batch_size: int, optimizer: str, where: str,
) -> list[float]:  # fmt: skip
    """Train only the parameters of ``top`` on D_r with CE (the rest frozen, in eval mode); mean loss per epoch."""
    top_params = {id(p) for m in top for p in m.parameters()}
    params = [p for p in model.parameters() if id(p) in top_params]
    for p in model.parameters():
        p.requires_grad_(id(p) in top_params)
    opt = make_optimizer(params, optimizer, lr)
    steps = max(1, -(-len(data.retain) // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    batches = cycle(data.retain, batch_size, generator)
    history = []
    for epoch in range(epochs):
        model.eval()
        for m in top:
            m.train()
        total = 0.0
        for _ in range(steps):
            x, y = next(batches)
            loss = nn.functional.cross_entropy(model(x.to(data.device)).float(), y.to(data.device))
            check_finite(loss, where)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        history.append(total / steps)
        if data.on_epoch is not None:
            data.on_epoch(epoch + 1, epochs, history[-1])
    for p in model.parameters():
        p.requires_grad_(True)
    return history


@register_method("eu_k")
class EUk(Method):
    """Re-initialise the last ``k`` layers and train them from scratch on D_r (the rest frozen)."""

    paper = 'Goel et al., "Towards Adversarial Evaluations for Inexact Machine Unlearning", arXiv:2201.06640'
    search_space = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 10), "k": IntRange(1, 3)}
    needs = frozenset({"retain"})
    #: re-initialise the last k layers before training them (EU-k); CF-k (:mod:`.cf_k`) starts from the original
    reinit: ClassVar[bool] = True
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

    def check_model(self, model: nn.Module) -> None:
        """A model with fewer than ``k`` convolution/linear layers is refused before any training."""
        last_k_layers(model, self.k)

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        top = last_k_layers(model, self.k)
        for m in top if self.reinit else ():  # θ_b ~ init (the global RNG is seeded by ``unlearn``)
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
        self.history_ = train_top(
            model, top, data, generator, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
            optimizer=self.optimizer, where=self.name,
        )  # fmt: skip
        self.report_ = {"trainable_params": float(sum(p.numel() for m in top for p in m.parameters()))}
        return model
