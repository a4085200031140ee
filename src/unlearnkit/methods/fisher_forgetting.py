"""Fisher forgetting: scrub information about D_f by Fisher-shaped Gaussian noise on the weights.

Golatkar, Achille, Soatto, "Eternal Sunshine of the Spotless Net: Selective Forgetting in Deep
Networks", CVPR 2020 (arXiv 1911.04933). The variant every later paper runs as the "Fisher" baseline is
the released notebook's (``AdityaGolatkar/SelectiveForgetting``, reused verbatim in ``meghdadk/SCRUB``
``small_scale_unlearning.ipynb`` and ``if-loops/selective-synaptic-dampening``); it is implemented here,
paraphrased, never copied.

1. Diagonal Fisher information of the original model on the **retain** set (eval mode), with the
   expectation over the model's own predictive distribution (the "true" Fisher, not the empirical one):

       F_i = (1/|D_r|) Σ_{x∈D_r} Σ_c p(c|x) · ( ∂/∂θ_i  −log p(c|x) )²

   computed with per-sample gradients (``torch.func.vmap``), one vectorised pass per class c.
2. Noise scale per entry (the paper's Eq. 9 uses S(θ) = θ + (λσ_h²)^{1/4} F^{-1/4} n; the code's form,
   used here, is a variance ∝ F^{-1} with clamps):

       v_i = α · min(1/(F_i + 1e-8), 1e3)   (the cap is 1e2 for classifier-head tensors)
       v   ← mean over dimension 1 for tensors with ≥ 2 dims (one variance per output unit × kernel position)
       v   ← 10·v for the classifier head and for 1-D tensors (biases, batch-norm affine)

   where "classifier head" means tensors whose first dimension equals the number of classes (the code's
   test). For a **class** request the head rows of the forgotten classes are set to mean 0 and variance
   1e-4 (before the ×10), as the code does when no sample count is given.
3. Sample θ' = μ + √v ⊙ n, n ~ N(0, I), with μ = θ (or 0 for the forgotten head rows above).

α (``alpha``) = 1e-6 as in the code. Cost: |C| per-sample backward passes over D_r, so the method refuses
models above ``max_params`` parameters (a clear error before any work) [CHOICE: 2 million].

``report_``: ``fisher_params`` (parameters of the model), ``fisher_mean_std`` (mean noise std).

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``alpha`` log-uniform [1e-9, 1e-4]. The ranges bracket the defaults and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import Dataset

from unlearnkit.engine import check_finite, iterate
from unlearnkit.errors import TrainingDivergedError, UnlearnkitError
from unlearnkit.methods._base import POSITIVE, POSITIVE_INT, LogUniform, Method, UnlearnData, register_method


def diagonal_fisher(
    model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """F_i = mean_x Σ_c p(c|x)·(∂ −log p(c|x)/∂θ_i)² at the current weights (model put in eval mode)."""
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def nll(p: dict[str, torch.Tensor], x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(out, c.unsqueeze(0))

    per_sample_grad = vmap(grad(nll), in_dims=(None, 0, 0))
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    n_seen = 0
    for xb, _ in iterate(dataset, batch_size):
        xb = xb.to(device)
        with torch.no_grad():
            logits = model(xb)
        check_finite(logits.sum(), "fisher_forgetting (logits)")
        prob = logits.softmax(1)  # p(c|x), [B, C]
        for c in range(prob.shape[1]):
            g = per_sample_grad(params, xb, torch.full((len(xb),), c, device=device, dtype=torch.long))
            w = prob[:, c]
            for n in fisher:
                fisher[n] += torch.einsum("b,b...->...", w, g[n] ** 2)
        n_seen += len(xb)
    for n, t in fisher.items():
        t /= max(n_seen, 1)
        if not torch.isfinite(t).all():
            raise TrainingDivergedError(f"non-finite Fisher information for {n!r}")
    return fisher


@register_method("fisher_forgetting")
class FisherForgetting(Method):
    """Add Gaussian noise with variance α·F⁻¹ (Fisher on D_r) to every weight; small models only."""

    paper = 'Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020, arXiv:1911.04933'
    search_space = {"alpha": LogUniform(1e-9, 1e-4)}
    needs = frozenset({"retain"})
    _parameter_constraints = {
        "alpha": [POSITIVE],
        "max_params": [POSITIVE_INT],
        "batch_size": [POSITIVE_INT],
    }

    def __init__(self, *, alpha: float = 1e-6, max_params: int = 2_000_000, batch_size: int = 64) -> None:
        self.alpha = alpha
        self.max_params = max_params
        self.batch_size = batch_size

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        n_params = sum(p.numel() for p in model.parameters())
        if n_params > self.max_params:
            raise UnlearnkitError(
                f"method 'fisher_forgetting' is for small models: this one has {n_params:,} parameters, above "
                f"max_params={self.max_params:,} (per-sample Fisher over D_r for every class would be too costly)"
            )
        fisher = diagonal_fisher(model, data.retain, self.batch_size, data.device)
        n_c = data.num_classes
        forget_rows = list(data.request.classes) if data.request.kind == "class" else []
        stds = []
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name not in fisher:
                    continue
                head = p.dim() >= 1 and p.shape[0] == n_c
                var = (1.0 / (fisher[name] + 1e-8)).clamp(max=1e2 if head else 1e3)
                var = self.alpha * var
                if p.dim() > 1:  # one variance per output unit (and kernel position), as the code averages dim 1
                    var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
                mu = p.detach().clone()
                if head and forget_rows:  # class request: the forgotten classes' head rows go to N(0, 1e-4)
                    mu[forget_rows] = 0.0
                    var[forget_rows] = 1e-4
                if head or p.dim() == 1:  # classifier head, biases and batch-norm affine: 10× the variance
                    var = var * 10
                noise = torch.randn(p.shape, generator=generator).to(p.device, p.dtype)
                p.copy_(mu + var.sqrt() * noise)  # θ' = μ + √v ⊙ n
                stds.append(var.sqrt().mean())
        self.report_ = {"fisher_params": n_params, "fisher_mean_std": float(torch.stack(stds).mean()) if stds else 0.0}
        return model
