"""SalUn: random-label unlearning restricted to the weights salient for the forget set.

Fan, Liu, Zhang, Wei, Wong, Liu, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency in Both Image Classification and Generation", ICLR 2024 (arXiv 2310.12508). Public code:
``OPTML-Group/Unlearn-Saliency`` (``Classification/generate_mask.py``, ``Classification/unlearn/RL.py``).
Paraphrased, never copied.

1. **Weight saliency** (paper Eq. 5): at the original weights θ_o,

       g = ∇_θ ℓ_f(θ; D_f) |_{θ=θ_o},      m_S = 1( |g| ≥ γ )

   with ℓ_f the forget loss (cross-entropy on D_f with true labels; the code accumulates the gradient
   of −CE over forget batches, whose magnitude is the same) and γ the hard threshold that keeps the
   top ``saliency_fraction`` of all entries by |g|, ranked globally over every parameter tensor (the
   paper's default keeps 50%). Note: the released ``generate_mask.py`` we read ranks |g| in *ascending*
   order before thresholding, which marks the smallest gradients; we follow the paper's Eq. 5 (largest).
   The code computes the gradient while stepping an optimizer; here it is taken at θ_o, as the equation says.
2. **Random-label unlearning on the salient weights** (paper Eq. 6, the code's ``RL`` with a mask): each
   epoch, one pass over D_f with labels redrawn uniformly from all classes, then one pass over D_r with
   true labels (the code's CIFAR-10/SVHN branch), minimising CE with the gradient multiplied by m_S before
   each step, so θ = m_S ⊙ θ_u + (1 − m_S) ⊙ θ_o: non-salient entries keep their exact original bits
   (the optimizer has no weight decay, and zero gradients give zero Adam/SGD-momentum updates).

The code uses SGD (lr 0.013-0.1, 10 epochs) on CIFAR ResNet-18; for the small offline models the
defaults are Adam, lr 3e-3, 3 epochs, batches of 64 on D_r and 16 on D_f (with lr 1e-3 or forget batches
of 64 the retain passes undid the forgetting on digits) [CHOICE, measured on digits/small_cnn].

``report_``: ``salun_masked_fraction`` (fraction of parameter entries that may change).

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-4, 1e-2]; ``epochs`` integer 1, 5; ``saliency_fraction`` uniform [0.1, 1.0]. The ranges
bracket the defaults and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from unlearnkit.engine import check_finite, iterate, make_optimizer
from unlearnkit.methods._base import (
    OPTIMIZER,
    POSITIVE,
    POSITIVE_INT,
    Interval,
    IntRange,
    LogUniform,
    Method,
    Uniform,
    UnlearnData,
    register_method,
)

FRACTION = Interval(float, 0.0, 1.0, "right")


def saliency_mask(
    model: nn.Module, forget: Dataset, fraction: float, batch_size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Boolean mask per parameter: the top ``fraction`` of entries by |∇ CE(D_f)| (summed over batches)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grad = {n: torch.zeros_like(p) for n, p in params.items()}
    was = model.training
    model.eval()  # the code takes the saliency gradient in eval mode
    for xb, yb in iterate(forget, batch_size):
        loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
        check_finite(loss, "salun (saliency)")
        for (n, _), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()), allow_unused=True),
                             strict=True):  # fmt: skip
            if g is not None:
                grad[n] += g
    model.train(was)
    flat = torch.cat([g.abs().flatten() for g in grad.values()])
    k = int(fraction * flat.numel())  # number of salient entries (the code: int(len · fraction))
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        keep[torch.topk(flat, k, sorted=False).indices] = True  # ties at the threshold: topk picks k of them
    out, i = {}, 0
    for n, g in grad.items():
        out[n] = keep[i : i + g.numel()].view_as(g)
        i += g.numel()
    return out


@register_method("salun")
class SalUn(Method):
    """Random labels on D_f, then D_r, updating only the weights salient for D_f."""

    paper = 'Fan et al., "SalUn", ICLR 2024, arXiv:2310.12508'
    search_space = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 5), "saliency_fraction": Uniform(0.1, 1.0)}
    needs = frozenset({"forget", "retain"})
    _parameter_constraints = {
        "saliency_fraction": [FRACTION],
        "epochs": [POSITIVE_INT],
        "lr": [POSITIVE],
        "batch_size": [POSITIVE_INT],
        "forget_batch_size": [POSITIVE_INT],
        "optimizer": [OPTIMIZER],
    }

    def __init__(
        self, *, saliency_fraction: float = 0.5, epochs: int = 3, lr: float = 3e-3, batch_size: int = 64,
        forget_batch_size: int = 16, optimizer: str = "adam",
    ) -> None:  # fmt: skip
        self.saliency_fraction = saliency_fraction
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.forget_batch_size = forget_batch_size
        self.optimizer = optimizer

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        dev, n_c = data.device, data.num_classes
        mask = saliency_mask(model, data.forget, self.saliency_fraction, self.batch_size, dev)
        self.mask_ = mask
        total_entries = sum(p.numel() for p in model.parameters())
        self.report_ = {"salun_masked_fraction": sum(int(m.sum()) for m in mask.values()) / max(total_entries, 1)}
        params = dict(model.named_parameters())
        opt = make_optimizer([params[n] for n in mask], self.optimizer, self.lr)  # no weight decay
        self.history_: list[float] = []
        model.train()

        def step(x: torch.Tensor, y: torch.Tensor) -> float:
            loss = F.cross_entropy(model(x.to(dev)), y.to(dev))
            check_finite(loss, "salun")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for n, m in mask.items():  # ∇ ← m_S ⊙ ∇: only salient entries move
                if params[n].grad is not None:
                    params[n].grad.mul_(m)
            opt.step()
            return loss.item()

        for epoch in range(self.epochs):
            total, n = 0.0, 0
            for xf, yf in iterate(data.forget, self.forget_batch_size, shuffle=True, generator=generator):
                total, n = total + step(xf, torch.randint(0, n_c, yf.shape, generator=generator)), n + 1
            for xr, yr in iterate(data.retain, self.batch_size, shuffle=True, generator=generator):
                total, n = total + step(xr, yr), n + 1
            self.history_.append(total / max(n, 1))
            if data.on_epoch:
                data.on_epoch(epoch + 1, self.epochs, self.history_[-1])
        return model
