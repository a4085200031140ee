"""UNDO (Unlearn-Noise-Distill-on-Outputs): distil a suppressed teacher into a noised copy of the model.

Lee, Foote, Infanger, Shor, Kamath, Goldman-Wetzler, Woodworth, Cloud, Turner, "Distillation Robustifies
Unlearning", NeurIPS 2025 (arXiv 2506.06278). The paper's finding: fine-tuning a model to *imitate* an unlearned
(or even an oracle) model changes its outputs but leaves the capability in the weights, to come back after a
few relearning steps; *distilling* the unlearned model's outputs into a student that starts (partly) from
random weights transfers the behaviour and leaves the latent capability behind. The three steps, as here:

1. **Unlearn** — a teacher ``f_T`` whose outputs no longer show the forget data. [CHOICE] For a class request
   the teacher is the original model with the forget classes' logits masked (``−∞`` before the softmax): its
   output distribution is the original's renormalised over the retain classes, the behaviour an exact
   unlearner should show, at no training cost (the paper also distils from an oracle-behaving teacher). For a
   sample-level (random) request there is no class to mask and the teacher is the original itself, read only
   on D_r.
2. **Noise** — the student starts from a shrink-and-perturb of the teacher's weights (paper Sec. 4,
   ``θ_S = (1 − α)·θ_T + α·β·N``): here ``θ_S = (1 − α)·θ_orig + α·θ_init`` with ``θ_init`` a fresh draw of the
   architecture's own initialiser (so ``β·N`` has the scale of an initialisation, β = 1), made by the scenario's
   model factory right after the method is seeded, i.e. the initial point retraining starts from. ``α = 1`` is the
   paper's "distil into a randomly initialised student", its most robust point; smaller ``α`` is cheaper to
   recover and keeps more of the original. Normalisation statistics are mixed the same way.
3. **Distil on outputs** — minimise ``T²·KL(softmax(f_T(x)/T) ‖ softmax(f_S(x)/T))`` over D_r (plus
   ``ce_weight · CE(f_S(x), y)``, 0 by default: the paper distils on outputs only), Adam with a cosine schedule
   over ``epochs`` passes of D_r. The student never sees D_f: what it knows of the forget classes comes from
   the masked teacher's outputs on retain images only (at α = 1 nothing of D_f is left in the weights for a
   relearning attack to bring back).

The teacher's logits on D_r are computed once, before the student trains (no data augmentation here).
``history_``: mean distillation loss per epoch.

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``alpha`` uniform [0.5, 1.0]; ``epochs`` integer 2–10; ``lr`` log-uniform [1e-3, 1e-2]. The ranges bracket the
defaults and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.engine import check_finite, iterate, make_optimizer
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import (
    NON_NEGATIVE,
    OPTIMIZER,
    POSITIVE,
    POSITIVE_INT,
    UNIT,
    IntRange,
    LogUniform,
    Method,
    Uniform,
    UnlearnData,
    register_method,
)


def masked_teacher_logits(logits: torch.Tensor, forget_classes: tuple[int, ...]) -> torch.Tensor:
    """``logits`` with the forget classes' columns set to ``−inf`` (softmax renormalised over the others)."""
    out = logits.clone()
    if forget_classes:
        out[:, list(forget_classes)] = float("-inf")
    return out


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, batch mean; ``−inf`` teacher columns carry no mass."""
    p_t = F.softmax(teacher / temperature, dim=1)
    log_p_t = torch.where(p_t > 0, torch.log(p_t.clamp_min(1e-30)), torch.zeros_like(p_t))
    log_p_s = F.log_softmax(student / temperature, dim=1)
    return (p_t * (log_p_t - log_p_s)).sum(1).mean() * temperature**2


@torch.no_grad()
def shrink_perturb(model: nn.Module, fresh: nn.Module, alpha: float) -> None:
    """In place: every floating-point parameter and buffer ``w ← (1 − α)·w + α·w_fresh`` (the noise step)."""
    own = dict(model.state_dict(keep_vars=True))
    new = fresh.state_dict()
    if set(own) != set(new):
        raise UnlearnkitError("undo: the model factory builds a different architecture from the model given")
    for name, w in own.items():
        if w.is_floating_point():
            w.mul_(1.0 - alpha).add_(new[name].to(w.device, w.dtype), alpha=alpha)


@register_method("undo")
class UNDO(Method):
    """Distil the original's outputs, forget classes masked, into a shrunk-and-perturbed copy, on D_r only.

    Defaults [CHOICE, digits/small_cnn]: ``α = 0.8``, 6 epochs at lr 3e-3 (about a fifth of the 30-epoch
    training recipe; 4 epochs lost 0.02 retain-test accuracy on class 3 seed 0), T = 2, no CE term and no weight
    decay (5e-4 or 5e-3 changed nothing measured). α was chosen on proxy classes 0/5/8 seed 3 (then evaluated on
    1/3/7 x seeds 0-2; both α = 1 and 0.8 were run there too). Forget-test accuracy after the relearning attack,
    retrain 0.78 / 0.50 / 0.02: α = 1 gave 0.00 / 0.00 / 0.00, α = 0.8 gave 0.19 / 0.41 / 0.00, α = 0.7 gave
    0.64 / 0.63 / 0.02 (above retrain on class 5); probe gap to retrain −0.03 / −0.05 / −0.09 (α = 1),
    −0.02 / +0.02 / +0.10 (α = 0.8), up to +0.15 (α = 0.7). α = 1 (the paper's most robust point) ends *below*
    retrain, as does EU-k with every layer re-initialised and trained 6 epochs: the 20-step attack stops on the
    steep part of the recovery curve, so its value follows the forget logit's margin, which a short high-lr
    training leaves larger than the 30-epoch recipe does. α = 0.8 is the value nearest retrain that stays at or
    below it on the proxies.
    """

    paper = 'Lee et al., "Distillation Robustifies Unlearning" (UNDO), NeurIPS 2025, arXiv:2506.06278'
    needs = frozenset({"retain", "train_recipe"})
    search_space = {"alpha": Uniform(0.5, 1.0), "epochs": IntRange(2, 10), "lr": LogUniform(1e-3, 1e-2)}
    _parameter_constraints = {
        "alpha": [UNIT],
        "epochs": [POSITIVE_INT],
        "lr": [POSITIVE],
        "temperature": [POSITIVE],
        "ce_weight": [NON_NEGATIVE],
        "weight_decay": [NON_NEGATIVE],
        "batch_size": [POSITIVE_INT],
        "optimizer": [OPTIMIZER],
    }

    def __init__(
        self, *, alpha: float = 0.8, epochs: int = 6, lr: float = 3e-3, temperature: float = 2.0,
        ce_weight: float = 0.0, weight_decay: float = 0.0, batch_size: int = 64, optimizer: str = "adam",
    ) -> None:  # fmt: skip
        self.alpha = alpha
        self.epochs = epochs
        self.lr = lr
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.optimizer = optimizer

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        assert data.make_model is not None  # needs train_recipe: checked by check_data
        dev = data.device
        # 1. Unlearn: the teacher's (masked) logits on D_r, once.
        model.eval()
        xs, ys, ts = [], [], []
        with torch.no_grad():
            for x, y in iterate(data.retain, 512):
                xs.append(x)
                ys.append(y)
                ts.append(model(x.to(dev)).float().cpu())
        x_r, y_r = torch.cat(xs), torch.cat(ys)
        t_r = masked_teacher_logits(torch.cat(ts), data.forget_classes if data.request.kind == "class" else ())
        # 2. Noise: θ_S = (1 − α)·θ_orig + α·θ_init (the global RNG is seeded by ``unlearn``).
        shrink_perturb(model, data.make_model(), self.alpha)
        # 3. Distil on outputs over D_r.
        model.to(dev).train()
        opt = make_optimizer(model.parameters(), self.optimizer, self.lr, self.weight_decay)
        steps = max(1, math.ceil(len(y_r) / self.batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs * steps)
        self.history_: list[float] = []
        for epoch in range(self.epochs):
            order = torch.randperm(len(y_r), generator=generator)
            total = 0.0
            for i in range(steps):
                j = order[i * self.batch_size : (i + 1) * self.batch_size]
                out = model(x_r[j].to(dev)).float()
                loss = distill_kl(out, t_r[j].to(dev), self.temperature)
                if self.ce_weight > 0:
                    loss = loss + self.ce_weight * F.cross_entropy(out, y_r[j].to(dev))
                check_finite(loss, self.name)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach())
            self.history_.append(total / steps)
            if data.on_epoch is not None:
                data.on_epoch(epoch + 1, self.epochs, self.history_[-1])
        return model
