"""Prune-and-reinit: prune almost every weight by magnitude, re-draw them, and re-fit on D_r matching entropies.

Fourth place of the NeurIPS-2023 machine-unlearning challenge's final leaderboard (Sebastian Oleszko's
"PRMQ": prune, re-initialise, re-train, quantise; Kaggle write-up), described in the organisers' report:
Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS unlearning
competition", arXiv 2406.09073 (2024), appendix on the top solutions; re-implemented as ``KGLTop4`` in
DeepUnlearn (Cadet et al., arXiv 2410.01276). Paraphrased from the report's description and checked
against that re-implementation; never copied.

1. **Global magnitude pruning**: over the weights *and* biases of every convolution and linear layer
   together, the fraction ``prune_amount`` of entries with the smallest |w| are set to 0.
2. **Re-initialisation**: the pruned weight entries (not biases) get fresh values U(−b, b) with
   b = 1/√fan_in (PyTorch's default bound for these layers); pruned biases stay 0. Nothing is masked
   afterwards: every entry trains.
3. **Re-training on D_r** for ``epochs`` (a float: that many epochs' worth of steps) with SGD (momentum
   0.9, weight decay 5e-4) on

       L = CE_w(f(x_r), y_r) + ( H(softmax f(x_r)) − H(softmax f_o(x_r)) )²   (batch means)

   where CE_w weighs class c by n_c^(−0.1) (n_c its retain count: a mild re-balancing) and H is the
   entropy of the prediction, f_o the original model (frozen): the unlearned model is asked to be as
   confident on each retain sample as the original was, not to copy its prediction.
4. **Quantisation**: the weights are rounded to float16 and back (the solution's last step).

CIFAR-10/ResNet-18 reference values (the solution's, kept by DeepUnlearn): prune_amount 0.99, 3.2 epochs,
SGD lr 5e-4, weight decay 5e-4, batches of 64.

**Budget.** The challenge allowed an unlearning run at most 20% of the time of retraining. Each step costs
one extra forward pass of f_o; against the digits benchmarks' retraining (30 epochs on D_r), 3.2 epochs is
~13% (measured 0.12 of retraining's wall time on digits random:0.1, an idle 2-core CPU), so the reference
is the default. With 99% of the weights re-drawn the network is nearly re-trained
from scratch in 3.2 epochs, which takes a learning rate matched to that: the digits models are trained with
Adam at lr 1e-3, and 3.2 epochs of ~18 SGD steps at lr 5e-4 left the small CNN near chance, so here the
default optimizer is Adam at lr 1e-2 [CHOICE, measured on digits/small_cnn, random:0.1, seed 0: the reference SGD
rate left the model at chance accuracy, 0.10]; the reference prune_amount 0.99 is kept (F 0.098 over N = 8
runs, against 0.094 with 0.9). ``optimizer='sgd', lr=5e-4`` gives the reference.

Serves any forget request (only D_r is read). ``history_``: mean loss per epoch (the last one partial);
``report_``: ``prune_reinit_fraction`` (re-drawn weight entries / all parameter entries).

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``prune_amount`` uniform [0.8, 0.99]; ``epochs`` uniform [1, 5]; ``lr`` log-uniform [1e-3, 3e-2]. The ranges bracket
the defaults and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.engine import check_finite, cycle, labels_of, make_optimizer
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import (
    BOOLEAN,
    NON_NEGATIVE,
    OPTIMIZER,
    POSITIVE,
    POSITIVE_INT,
    Interval,
    LogUniform,
    Method,
    Uniform,
    UnlearnData,
    register_method,
)

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
AMOUNT = Interval(float, 0.0, 1.0, "left")


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy of softmax(logits)."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


@torch.no_grad()
def prune_and_redraw(model: nn.Module, amount: float) -> int:
    """Zero the globally smallest-|w| ``amount`` of conv/linear weights and biases; re-draw pruned weights.

    Returns the number of weight entries re-drawn.
    """
    layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
    tensors = [t for m in layers for t in (m.weight, m.bias) if t is not None]
    flat = torch.cat([t.abs().flatten() for t in tensors])
    k = int(round(amount * flat.numel()))
    if k == 0:
        return 0
    pruned = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    pruned[torch.topk(flat, k, largest=False).indices] = True
    offset, redrawn = 0, 0
    for m in layers:
        for t, is_weight in ((m.weight, True), (m.bias, False)):
            if t is None:
                continue
            mask = pruned[offset : offset + t.numel()].view_as(t)
            offset += t.numel()
            if is_weight:
                fan_in = t[0].numel()  # in_features, or in_channels/groups x kernel
                bound = 1.0 / math.sqrt(max(fan_in, 1))
                fresh = torch.empty_like(t).uniform_(-bound, bound)
                t.copy_(torch.where(mask, fresh, t))
                redrawn += int(mask.sum())
            else:
                t.masked_fill_(mask, 0.0)
    return redrawn


@register_method("prune_reinit")
class PruneReinit(Method):
    """Global magnitude pruning + re-draw, entropy-matched class-weighted re-training on D_r, fp16 rounding."""

    paper = (
        'NeurIPS-2023 unlearning challenge, 4th place (S. Oleszko, "PRMQ"); Triantafillou et al., "Are we making '
        'progress in unlearning? Findings from the first NeurIPS unlearning competition", arXiv:2406.09073'
    )
    needs = frozenset({"retain"})
    search_space = {"prune_amount": Uniform(0.8, 0.99), "epochs": Uniform(1.0, 5.0), "lr": LogUniform(1e-3, 3e-2)}
    _parameter_constraints = {
        "prune_amount": [AMOUNT],
        "epochs": [POSITIVE],
        "lr": [POSITIVE],
        "optimizer": [OPTIMIZER],
        "weight_decay": [NON_NEGATIVE],
        "class_weight_power": [NON_NEGATIVE],
        "entropy_weight": [NON_NEGATIVE],
        "batch_size": [POSITIVE_INT],
        "quantize": [BOOLEAN],
    }

    def __init__(
        self, *, prune_amount: float = 0.99, epochs: float = 3.2, lr: float = 1e-2, optimizer: str = "adam",
        weight_decay: float = 5e-4, class_weight_power: float = 0.1, entropy_weight: float = 1.0,
        batch_size: int = 64, quantize: bool = True,
    ) -> None:  # fmt: skip
        self.prune_amount = prune_amount
        self.epochs = epochs
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.class_weight_power = class_weight_power
        self.entropy_weight = entropy_weight
        self.batch_size = batch_size
        self.quantize = quantize

    def check_model(self, model: nn.Module) -> None:
        """A model without convolution or linear layers is refused before any training."""
        if not any(isinstance(m, _LAYERS) for m in model.modules()):
            raise UnlearnkitError("method 'prune_reinit': the model has no convolution or linear layer to prune")

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        self.check_model(model)
        dev = data.device
        original = copy.deepcopy(model).eval()  # f_o, frozen
        for p in original.parameters():
            p.requires_grad_(False)
        redrawn = prune_and_redraw(model, self.prune_amount)  # 1. + 2.
        self.report_ = {"prune_reinit_fraction": redrawn / max(sum(p.numel() for p in model.parameters()), 1)}
        counts = torch.bincount(labels_of(data.retain), minlength=data.num_classes).float()
        weight = torch.where(counts > 0, counts.clamp(min=1) ** (-self.class_weight_power), 0.0).to(dev)
        opt = make_optimizer(model.parameters(), self.optimizer, self.lr, self.weight_decay)
        steps_per_epoch = max(1, -(-len(data.retain) // self.batch_size))
        total_steps = max(1, int(self.epochs * steps_per_epoch))
        batches = cycle(data.retain, self.batch_size, generator)
        self.history_: list[float] = []
        model.train()
        total, n = 0.0, 0
        for step in range(1, total_steps + 1):  # 3.
            xr, yr = next(batches)
            xr, yr = xr.to(dev), yr.to(dev)
            with torch.no_grad():
                h_o = entropy(original(xr))
            logits = model(xr)
            loss = F.cross_entropy(logits, yr, weight=weight) + self.entropy_weight * F.mse_loss(entropy(logits), h_o)
            check_finite(loss, "prune_reinit (re-training)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
            if step % steps_per_epoch == 0 or step == total_steps:
                self.history_.append(total / n)
                total, n = 0.0, 0
                if data.on_epoch:
                    data.on_epoch(len(self.history_), math.ceil(self.epochs), self.history_[-1])
        if self.quantize:  # 4. round the weights to float16 and back
            with torch.no_grad():
                for t in (*model.parameters(), *model.buffers()):
                    if t.is_floating_point():
                        t.copy_(t.half().float())
        return model
