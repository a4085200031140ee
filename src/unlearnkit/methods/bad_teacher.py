"""Bad Teacher: distil from a competent teacher on retained data and an incompetent one on forget data.

Chundawat, Tarun, Mandal, Kankanhalli, "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks
Using an Incompetent Teacher", AAAI 2023 (arXiv 2205.08096). Public code:
``vikram2000b/bad-teaching-unlearning`` (``unlearn.py``: ``UnlearnerLoss``, ``blindspot_unlearner``; the
CIFAR-20 notebook for the defaults). Spec: ``methods.md`` §7.2. Paraphrased, never copied.

* Competent teacher T_s: the original model (frozen, eval mode).
* Incompetent teacher T_d: a randomly initialised copy of the same architecture (frozen, eval mode),
  built by re-initialising a deep copy with every submodule's ``reset_parameters()`` (drawn from a seed
  of the method's generator), so no model factory is needed. A model with parameters no
  ``reset_parameters`` covers (e.g. a bare ``nn.Parameter`` such as a ViT position embedding) is refused.
* Data: D_f with label l = 1 and a random subset of D_r (``retain_fraction``, 30% in the code) with l = 0,
  shuffled together (the code's ``UnLearningData``).
* Loss per sample (paper Eq. 4-5): the student S matches the teacher picked by l,

      t(x) = l · softmax(T_d(x)/τ) + (1 − l) · softmax(T_s(x)/τ)
      L = KL( t(x) ‖ softmax(S(x)/τ) )

  averaged over the batch ("batchmean"; the code's ``F.kl_div`` default averages over batch × classes,
  which only rescales the loss by 1/C).

Defaults: the spec's (code's) τ = 1 and one epoch over D_f + 30% of D_r with Adam; the code's lr 1e-4 and
batches of 256 take only two steps on the small offline sets (nothing is forgotten), so lr 1e-3 and
batches of 64 are the defaults here, still for one epoch [CHOICE, measured on digits/small_cnn].

``report_``: ``bad_teacher_retain_used`` (retain samples in the mix).

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-4, 1e-2]; ``epochs`` integer 1, 5; ``temperature`` log-uniform [0.5, 4.0];
``retain_fraction`` uniform [0.1, 1.0]. The ranges bracket the defaults and stay inside
``_parameter_constraints``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Subset

from unlearnkit.data import ArrayDataset
from unlearnkit.engine import check_finite, iterate, make_optimizer
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import (
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


def random_copy(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``model`` with every parameter re-drawn by its module's ``reset_parameters()``.

    Raises:
        UnlearnkitError: some parameter belongs to no module with ``reset_parameters`` (it would stay trained).
    """
    out = copy.deepcopy(model)
    covered: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in out.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                covered.update(id(p) for p in module.parameters(recurse=False))
    left = [n for n, p in out.named_parameters() if id(p) not in covered]
    if left:
        raise UnlearnkitError(
            f"bad_teacher cannot build a random teacher: parameters {left[:3]} belong to no module with "
            "reset_parameters()"
        )
    return out


@register_method("bad_teacher")
class BadTeacher(Method):
    """KL distillation: original teacher on a D_r subset (l=0), random teacher on D_f (l=1)."""

    paper = 'Chundawat et al., "Can Bad Teaching Induce Forgetting?", AAAI 2023, arXiv:2205.08096'
    search_space = {
        "lr": LogUniform(1e-4, 1e-2),
        "epochs": IntRange(1, 5),
        "temperature": LogUniform(0.5, 4.0),
        "retain_fraction": Uniform(0.1, 1.0),
    }
    needs = frozenset({"forget", "retain"})
    _parameter_constraints = {
        "epochs": [POSITIVE_INT],
        "lr": [POSITIVE],
        "temperature": [POSITIVE],
        "retain_fraction": [UNIT],
        "batch_size": [POSITIVE_INT],
        "optimizer": [OPTIMIZER],
    }

    def __init__(
        self, *, epochs: int = 1, lr: float = 1e-3, temperature: float = 1.0, retain_fraction: float = 0.3,
        batch_size: int = 64, optimizer: str = "adam",
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.lr = lr
        self.temperature = temperature
        self.retain_fraction = retain_fraction
        self.batch_size = batch_size
        self.optimizer = optimizer

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        dev, tau = data.device, float(self.temperature)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        bad = random_copy(model, seed).eval()  # T_d: incompetent
        good = copy.deepcopy(model).eval()  # T_s: competent (the original)
        for p in (*bad.parameters(), *good.parameters()):
            p.requires_grad_(False)

        # the mixed set: D_f labelled 1, a random retain_fraction of D_r labelled 0
        n_r = len(data.retain)
        k = round(self.retain_fraction * n_r)
        rng = np.random.default_rng(seed)
        retain_sub = Subset(data.retain, sorted(rng.choice(n_r, size=k, replace=False).tolist()))
        x_f = torch.cat([xb for xb, _ in iterate(data.forget, 512)])
        x_r = [xb for xb, _ in iterate(retain_sub, 512)]
        x_r = torch.cat(x_r) if x_r else x_f[:0]
        mixed = ConcatDataset([
            ArrayDataset(x_f, torch.ones(len(x_f), dtype=torch.long)),
            ArrayDataset(x_r, torch.zeros(len(x_r), dtype=torch.long)),
        ])  # fmt: skip
        self.report_ = {"bad_teacher_retain_used": k}

        opt = make_optimizer(model.parameters(), self.optimizer, self.lr)
        self.history_: list[float] = []
        model.train()
        for epoch in range(self.epochs):
            total, n = 0.0, 0
            for xb, lb in iterate(mixed, self.batch_size, shuffle=True, generator=generator):
                xb, lb = xb.to(dev), lb.to(dev).float().unsqueeze(1)
                with torch.no_grad():
                    # t(x) = l·softmax(T_d/τ) + (1−l)·softmax(T_s/τ)
                    target = lb * F.softmax(bad(xb) / tau, 1) + (1 - lb) * F.softmax(good(xb) / tau, 1)
                # KL(t ‖ softmax(S/τ)), batch mean
                loss = F.kl_div(F.log_softmax(model(xb) / tau, 1), target, reduction="batchmean")
                check_finite(loss, "bad_teacher")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, n = total + loss.item(), n + 1
            self.history_.append(total / max(n, 1))
            if data.on_epoch:
                data.on_epoch(epoch + 1, self.epochs, self.history_[-1])
        return model
