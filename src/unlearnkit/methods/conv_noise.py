"""Conv-noise fine-tuning: perturb the first convolution(s) with Gaussian noise, then fine-tune on D_r.

Third place of the NeurIPS-2023 machine-unlearning challenge's final leaderboard, described in the
organisers' report: Triantafillou et al., "Are we making progress in unlearning? Findings from the first
NeurIPS unlearning competition", arXiv 2406.09073 (2024), appendix on the top solutions (noise injection
into the weights followed by class-weighted fine-tuning); re-implemented as ``KGLTop3`` in DeepUnlearn
(Cadet et al., arXiv 2410.01276). Paraphrased from the report's description and checked against that
re-implementation; never copied.

1. **Confuse** (the solution's "vision confuser"): every weight entry of the selected convolutions gets
   independent Gaussian noise, W ← W + N(0, σ_start²). The solution perturbs the convolutions that are
   direct children of the network, which on torchvision's ResNet-18 is the stem convolution only; here
   ``noise_layers`` counts the convolutions perturbed, from the input side (reference: 1).
2. **Class-weighted fine-tuning**: E epochs (``epochs``) of cross-entropy on D_r with per-class weights,
   SGD (momentum 0.9, weight decay 5e-4), lr cosine-annealed per epoch from ``lr`` toward 0. The
   solution's weights were hand-set for the challenge's age classes; DeepUnlearn replaces them by the
   "balanced" weights n / (K·n_c) of the retain labels (K classes present in D_r, n_c samples of class c),
   which is what this file does (the weighted CE is normalised by the batch's summed weights, PyTorch's
   ``weight=`` convention). ``class_weighted=False`` gives plain CE.
3. **Second, small perturbation**: after the next-to-last epoch the same layers get noise N(0, σ_final²)
   before the last epoch ("robustness" before the final pass, in the solution's words as DeepUnlearn keeps them).

CIFAR-10/ResNet-18 reference values (the solution's, kept by DeepUnlearn): σ_start 0.6, σ_final 0.005,
E = 4, SGD lr 7e-4, momentum 0.9, weight decay 5e-4, batches of 64.

**Budget.** The challenge allowed an unlearning run at most 20% of the time of retraining. The cost is the
E epochs on D_r (nothing touches D_f): against the digits benchmarks' retraining (30 epochs on D_r), E = 4
is ~13% (measured 0.12 of retraining's wall time on digits random:0.1, an idle 2-core CPU), so the
reference E is the default. The reference lr was set for a ResNet-18 trained with SGD;
the digits models are trained with Adam at lr 1e-3, and 4 epochs of ~18 SGD steps at lr 7e-4 did not
recover the perturbed small CNN's accuracy, so the default lr here is 2e-2 [CHOICE, measured on
digits/small_cnn, random:0.1]; ``lr=7e-4`` gives the reference.

The forget set is never read: the method forgets by damaging and re-fitting on D_r only, so it serves any
forget request (``needs`` = retain). ``history_``: mean CE per epoch.

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``noise_std`` uniform [0.1, 1.0]; ``epochs`` integer 2–6; ``lr`` log-uniform [5e-3, 5e-2]. The ranges bracket the
defaults and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.engine import check_finite, iterate, labels_of, make_optimizer
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import (
    BOOLEAN,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    IntRange,
    LogUniform,
    Method,
    Uniform,
    UnlearnData,
    register_method,
)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def first_convs(model: nn.Module, k: int) -> list[nn.Module]:
    """The first ``k`` convolutions in module order (raises if the model has fewer)."""
    convs = [m for m in model.modules() if isinstance(m, _CONV)]
    if len(convs) < k:
        raise UnlearnkitError(f"method 'conv_noise': noise_layers = {k} but the model has {len(convs)} convolutions")
    return convs[:k]


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n / (K·n_c) for each class c present (K of them); 0 for classes absent from ``labels``."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    k = int(present.sum())
    w = torch.zeros(num_classes, dtype=torch.float64)
    w[present] = counts.sum() / (k * counts[present])
    return w.float()


@torch.no_grad()
def add_noise(layers: list[nn.Module], std: float, generator: torch.Generator) -> None:
    """W ← W + N(0, std²) entrywise for each layer's weight."""
    for m in layers:
        noise = torch.randn(m.weight.shape, generator=generator, dtype=m.weight.dtype) * std
        m.weight.add_(noise.to(m.weight.device))


@register_method("conv_noise")
class ConvNoise(Method):
    """Gaussian noise on the first convolution(s), class-weighted CE fine-tuning on D_r, a last small noise."""

    paper = (
        'NeurIPS-2023 unlearning challenge, 3rd place; Triantafillou et al., "Are we making progress in '
        'unlearning? Findings from the first NeurIPS unlearning competition", arXiv:2406.09073'
    )
    needs = frozenset({"retain"})
    example_model = "small_cnn"  # the noise goes on convolutions
    search_space = {"noise_std": Uniform(0.1, 1.0), "epochs": IntRange(2, 6), "lr": LogUniform(5e-3, 5e-2)}
    _parameter_constraints = {
        "noise_std": [NON_NEGATIVE],
        "final_noise_std": [NON_NEGATIVE],
        "noise_layers": [POSITIVE_INT],
        "epochs": [POSITIVE_INT],
        "lr": [POSITIVE],
        "weight_decay": [NON_NEGATIVE],
        "momentum": [NON_NEGATIVE],
        "batch_size": [POSITIVE_INT],
        "class_weighted": [BOOLEAN],
    }

    def __init__(
        self, *, noise_std: float = 0.6, final_noise_std: float = 0.005, noise_layers: int = 1, epochs: int = 4,
        lr: float = 2e-2, weight_decay: float = 5e-4, momentum: float = 0.9, batch_size: int = 64,
        class_weighted: bool = True,
    ) -> None:  # fmt: skip
        self.noise_std = noise_std
        self.final_noise_std = final_noise_std
        self.noise_layers = noise_layers
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.batch_size = batch_size
        self.class_weighted = class_weighted

    def check_model(self, model: nn.Module) -> None:
        """A model with fewer than ``noise_layers`` convolutions is refused before any training."""
        first_convs(model, self.noise_layers)

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        dev = data.device
        layers = first_convs(model, self.noise_layers)
        add_noise(layers, self.noise_std, generator)  # 1.
        weight = None
        if self.class_weighted:
            weight = balanced_class_weights(labels_of(data.retain), data.num_classes).to(dev)
        opt = make_optimizer(model.parameters(), "sgd", self.lr, self.weight_decay, self.momentum)
        self.history_: list[float] = []
        model.train()
        for epoch in range(self.epochs):  # 2.
            for group in opt.param_groups:  # per-epoch cosine from lr toward 0 (T_max = E)
                group["lr"] = self.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))
            total, n = 0.0, 0
            for xr, yr in iterate(data.retain, self.batch_size, shuffle=True, generator=generator):
                loss = F.cross_entropy(model(xr.to(dev)), yr.to(dev), weight=weight)
                check_finite(loss, "conv_noise (fine-tuning)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, n = total + loss.item(), n + 1
            self.history_.append(total / max(n, 1))
            if epoch == self.epochs - 2:  # 3. a small perturbation before the last epoch
                add_noise(layers, self.final_noise_std, generator)
            if data.on_epoch:
                data.on_epoch(epoch + 1, self.epochs, self.history_[-1])
        return model
