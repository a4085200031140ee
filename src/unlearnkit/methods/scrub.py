"""SCRUB: a student that moves away from its teacher on the forget set and stays with it elsewhere.

Kurmanji, Triantafillou, Hayes, Triantafillou, "Towards Unbounded Machine Unlearning", NeurIPS 2023
(arXiv 2302.09880). Public code: ``meghdadk/SCRUB`` (``small_scale_unlearning.ipynb``, ``helper/loops.py``
``train_distill``). Paraphrased, never copied.

The teacher f_o is the original model (frozen, eval mode); the student f_s starts as a copy of it. With the
temperature-T distillation divergence

    d(x) = T² · KL( softmax(f_o(x)/T) ‖ softmax(f_s(x)/T) )      (batch mean; RepDistiller's ``DistillKL``)

each epoch e = 1..E alternates (paper Alg. 1, "SCRUB"):

* **max-step** (only while e ≤ msteps): one pass over D_f minimising −d(x_f), i.e. *maximising* the
  student's divergence from the teacher on the forget set (Eq. 4's first term);
* **min-step**: one pass over D_r minimising γ·CE(f_s(x_r), y_r) + α·d(x_r), staying close to the teacher
  and correct on the retain set (Eq. 4's second term and the task loss).

Both steps share one optimizer (Adam in the small-scale notebook). The notebook's defaults are lr 5e-4,
weight decay 0.1, T = 2, α (KL weight) = 0.5, γ (CE weight) = 1, msteps = 3, 10 epochs with the lr
divided by 10 after epochs 5, 8 and 9, and batches of 32 (retain) / 64 (forget). For the small offline
models the defaults here are scaled [CHOICE, measured on digits/small_cnn]: 5 epochs, msteps 3, lr 1e-3,
weight decay 5e-4, the lr divided by 10 once, after ``lr_decay_epoch`` epochs (the notebook's first
decay; its later ones fall beyond 5 epochs), and forget batches of 16: with the notebook's 64, a forget
set of ~130 samples gives two max-steps per epoch against ~35 min-steps, and the forget class was not
forgotten (acc on it 0.24 vs 0.00 for retrain on digits class 1). The notebook's label smoothing (0.5)
and the SWA "rewinding" extension are not implemented.

``history_``: per epoch ``(max-step mean loss or nan, min-step mean loss)``.

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-4, 1e-2]; ``msteps`` integer 1, 5; ``alpha`` uniform [0.1, 1.0]. The ranges bracket the
defaults and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.engine import check_finite, iterate, make_optimizer
from unlearnkit.methods._base import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    OPTIMIZER,
    POSITIVE,
    POSITIVE_INT,
    IntRange,
    LogUniform,
    Method,
    Uniform,
    UnlearnData,
    register_method,
)


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


@register_method("scrub")
class Scrub(Method):
    """Alternate max-steps (diverge from the teacher on D_f) and min-steps (match it + CE on D_r)."""

    paper = 'Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023, arXiv:2302.09880'
    search_space = {"lr": LogUniform(1e-4, 1e-2), "msteps": IntRange(1, 5), "alpha": Uniform(0.1, 1.0)}
    needs = frozenset({"forget", "retain"})
    _parameter_constraints = {
        "epochs": [POSITIVE_INT],
        "msteps": [NON_NEGATIVE_INT],
        "lr": [POSITIVE],
        "lr_decay_epoch": [NON_NEGATIVE_INT],
        "lr_decay_rate": [POSITIVE],
        "temperature": [POSITIVE],
        "alpha": [NON_NEGATIVE],
        "gamma": [NON_NEGATIVE],
        "batch_size": [POSITIVE_INT],
        "forget_batch_size": [POSITIVE_INT],
        "optimizer": [OPTIMIZER],
        "weight_decay": [NON_NEGATIVE],
    }

    def __init__(
        self, *, epochs: int = 5, msteps: int = 3, lr: float = 1e-3, lr_decay_epoch: int = 5,
        lr_decay_rate: float = 0.1, temperature: float = 2.0, alpha: float = 0.5, gamma: float = 1.0,
        batch_size: int = 32, forget_batch_size: int = 16, optimizer: str = "adam", weight_decay: float = 5e-4,
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.msteps = msteps
        self.lr = lr
        self.lr_decay_epoch = lr_decay_epoch
        self.lr_decay_rate = lr_decay_rate
        self.temperature = temperature
        self.alpha = alpha
        self.gamma = gamma
        self.batch_size = batch_size
        self.forget_batch_size = forget_batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        dev, temp = data.device, float(self.temperature)
        teacher = copy.deepcopy(model).eval()  # f_o: the original, frozen
        for p in teacher.parameters():
            p.requires_grad_(False)
        student = model  # f_s: starts at the original weights
        opt = make_optimizer(student.parameters(), self.optimizer, self.lr, self.weight_decay)
        self.history_: list[tuple[float, float]] = []
        for epoch in range(1, self.epochs + 1):
            if epoch == self.lr_decay_epoch + 1:  # step decay, as the notebook's first milestone
                for group in opt.param_groups:
                    group["lr"] = self.lr * self.lr_decay_rate
            student.train()
            max_loss = math.nan
            if epoch <= self.msteps:  # max-step: minimise −d on D_f
                total, n = 0.0, 0
                for xf, _ in iterate(data.forget, self.forget_batch_size, shuffle=True, generator=generator):
                    xf = xf.to(dev)
                    with torch.no_grad():
                        t_logits = teacher(xf)
                    loss = -distill_kl(student(xf), t_logits, temp)
                    check_finite(loss, "scrub (max-step)")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total, n = total + loss.item(), n + 1
                max_loss = total / max(n, 1)
            total, n = 0.0, 0  # min-step: γ·CE + α·d on D_r
            for xr, yr in iterate(data.retain, self.batch_size, shuffle=True, generator=generator):
                xr, yr = xr.to(dev), yr.to(dev)
                with torch.no_grad():
                    t_logits = teacher(xr)
                s_logits = student(xr)
                loss = self.gamma * F.cross_entropy(s_logits, yr) + self.alpha * distill_kl(s_logits, t_logits, temp)
                check_finite(loss, "scrub (min-step)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, n = total + loss.item(), n + 1
            self.history_.append((max_loss, total / max(n, 1)))
            if data.on_epoch:
                data.on_epoch(epoch, self.epochs, self.history_[-1][1])
        return student
