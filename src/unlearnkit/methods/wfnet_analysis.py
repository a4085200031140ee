"""WF-Net's explainability by deletion and insertion of filters (spec ``methods.md`` §1.5).

Poppi et al., "Multi-Class Unlearning for Image Classification via Weight Filtering" (arXiv 2304.02049),
adapting the RISE deletion/insertion metrics (Petsiuk et al., BMVC 2018) from pixels to filters
[UNVERIFIED / talk]:

* **importance** of unit ``k`` of layer ``l`` for the class set ``S``: ``s_l[k] = 1 − ∏_{c∈S} α_l[c, k]``
  (the filters WF-Net switches off to forget S are the ones S relies on); units of every filtered layer
  are ranked together (globally), most important first, ties in random (seeded) order;
* **deletion**: starting from the original model, zero the top-ranked fraction of units, for fractions
  0 … 1, and record the accuracy on images of S (``forget``) and on the other images (``retain``);
  a ranking specific to S makes the forget curve fall fast and the retain curve slowly;
* **insertion**: start with every unit zeroed and restore them in ranked order;
* **baselines** [CHOICE]: a random ranking, and weight magnitude (each unit's L1 norm divided by the
  mean over its layer, so layers of different fan-in compare);
* **AUC**: trapezoidal area under each curve over fractions in [0, 1] (deletion AUC on S: lower is
  better; insertion AUC on S: higher is better).

The entry point :func:`deletion_insertion` works on held-out data given by the caller (the registered
metrics in :mod:`unlearnkit.metrics.wfnet` pass the scenario's test images); it never trains anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from unlearnkit.engine import iterate
from unlearnkit.errors import UnlearnkitError

if TYPE_CHECKING:  # the model module calls this analysis (WFNetModel.filter_analysis): no runtime import back
    from unlearnkit.methods._wfnet_model import WFNetModel

#: rankings of the analysis: WF-Net's α, and the two baselines
RANKINGS = ("alpha", "random", "magnitude")
#: the curves of each ranking: (mode, subset)
CURVES = (("deletion", "forget"), ("deletion", "retain"), ("insertion", "forget"), ("insertion", "retain"))
#: default fractions of units removed/restored: 0, 0.1, …, 1
DEFAULT_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(11))


def curve_auc(fractions: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoidal area under ``values`` over ``fractions`` (increasing, in [0, 1]).

    Example:
        >>> curve_auc([0.0, 0.5, 1.0], [1.0, 0.5, 0.0])
        0.5
    """
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise UnlearnkitError(f"curve_auc needs two 1-D sequences of the same length >= 2, got {x.shape}, {y.shape}")
    if np.any(np.diff(x) <= 0):
        raise UnlearnkitError("curve_auc: fractions must be strictly increasing")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def unit_ranking(model: WFNetModel, classes: Sequence[int], how: str, seed: int = 0) -> list[tuple[str, int]]:
    """Every filtered unit ``(layer, index)``, most important first, under ranking ``how``.

    Args:
        model: a WF-Net model.
        classes: the class set S whose importance ranks the units (``alpha`` ranking).
        how: ``alpha`` (1 − ∏α[S]), ``random`` or ``magnitude`` (layer-normalised L1 norm of the weights).
        seed: seeds the random ranking and the random order among ties.
    """
    if how not in RANKINGS:
        raise UnlearnkitError(f"unknown ranking {how!r}; expected one of {', '.join(RANKINGS)}")
    units = [(n, k) for n, size in model.units().items() for k in range(size)]
    rng = np.random.default_rng(seed)
    shuffle = rng.permutation(len(units))  # random order first, so a stable sort breaks ties randomly
    if how == "random":
        return [units[i] for i in shuffle]
    if how == "alpha":
        score = torch.cat([s.flatten().cpu() for s in model.importance(classes).values()]).double().numpy()
    else:
        modules = dict(model.model.named_modules())
        parts = []
        for n in model.layer_names:
            w = modules[n].weight.detach().cpu().double()
            norms = w.abs().reshape(w.shape[0], -1).sum(dim=1)  # L1 norm of each filter / output row
            parts.append(norms / norms.mean().clamp_min(1e-12))
        score = torch.cat(parts).numpy()
    order = shuffle[np.argsort(-score[shuffle], kind="stable")]
    return [units[i] for i in order]


def _gates(model: WFNetModel, ranked: list[tuple[str, int]], n: int, mode: str) -> dict[str, torch.Tensor]:
    """0/1 unit masks: deletion zeroes the first ``n`` ranked units, insertion keeps only them."""
    dev = model.switched_off.device
    fill, first = (1.0, 0.0) if mode == "deletion" else (0.0, 1.0)
    gates = {name: torch.full((size,), fill, device=dev) for name, size in model.units().items()}
    for name, k in ranked[:n]:
        gates[name][k] = first
    return gates


@dataclass(frozen=True)
class DeletionInsertion:
    """Curves and AUCs of the deletion/insertion analysis.

    Attributes:
        fractions: fractions of units removed (deletion) or restored (insertion).
        classes: the class set S.
        curves: ``curves[ranking][mode][subset]``: accuracy per fraction; ``mode`` is ``deletion`` or
            ``insertion``, ``subset`` is ``forget`` (images of S) or ``retain`` (the others).
        n_forget, n_retain: images used.
        n_units: filtered units ranked.
    """

    fractions: tuple[float, ...]
    classes: tuple[int, ...]
    curves: dict[str, dict[str, dict[str, list[float]]]]
    n_forget: int
    n_retain: int
    n_units: int

    def auc(self, ranking: str, mode: str, subset: str) -> float:
        """Area under one curve."""
        return curve_auc(self.fractions, self.curves[ranking][mode][subset])

    def aucs(self) -> dict[str, dict[str, float]]:
        """``{ranking: {"deletion_forget": .., "deletion_retain": .., "insertion_forget": .., ...}}``."""
        return {r: {f"{m}_{s}": self.auc(r, m, s) for m, s in CURVES} for r in self.curves}

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (what the report section reads from a run's metrics)."""
        return {
            "fractions": list(self.fractions), "classes": list(self.classes), "curves": self.curves,
            "auc": self.aucs(), "n_forget": self.n_forget, "n_retain": self.n_retain, "n_units": self.n_units,
        }  # fmt: skip


def _load(ds: Dataset, max_samples: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*iterate(ds, 1024), strict=True) if len(ds) else ((), ())  # type: ignore[arg-type]
    if not xs:
        raise UnlearnkitError("deletion/insertion analysis: an evaluation set is empty")
    x, y = torch.cat(xs), torch.cat(ys)
    if len(y) > max_samples:
        keep = torch.as_tensor(np.sort(rng.choice(len(y), max_samples, replace=False)))
        x, y = x[keep], y[keep]
    return x, y


@torch.no_grad()
def _accuracy(model: WFNetModel, gates: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
              device: torch.device, batch_size: int) -> float:  # fmt: skip
    correct = 0
    for i in range(0, len(y), batch_size):
        logits = model.forward_with_gates(x[i : i + batch_size].to(device), gates)
        correct += int((logits.argmax(1).cpu() == y[i : i + batch_size]).sum())
    return correct / len(y)


def deletion_insertion(
    model: WFNetModel,
    forget: Dataset,
    retain: Dataset,
    classes: Sequence[int],
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    rankings: Sequence[str] = RANKINGS,
    seed: int = 0,
    max_samples: int = 1000,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
) -> DeletionInsertion:
    """Deletion and insertion curves of ``model``'s filters for the class set ``classes``.

    Args:
        model: a trained WF-Net model (its stored request is ignored: gates are set explicitly).
        forget: held-out images of ``classes``.
        retain: held-out images of the other classes.
        classes: the class set S.
        fractions: increasing fractions in [0, 1] of units removed / restored.
        rankings: any of ``alpha``, ``random``, ``magnitude``.
        seed: seeds the random ranking, tie-breaking and the subsampling.
        max_samples: at most this many images of each of ``forget`` and ``retain`` (seeded subsample).
        device: where to run the forward passes.
        batch_size: forward batch size.
    """
    if type(model).__name__ != "WFNetModel" or not callable(getattr(model, "importance", None)):
        raise UnlearnkitError(f"deletion/insertion analysis needs a WF-Net model, got {type(model).__name__}")
    fr = tuple(float(f) for f in fractions)
    if len(fr) < 2 or any(not 0.0 <= f <= 1.0 for f in fr) or any(b <= a for a, b in itertools.pairwise(fr)):
        raise UnlearnkitError(f"fractions must be at least two increasing values in [0, 1], got {list(fractions)}")
    if not classes:
        raise UnlearnkitError("deletion/insertion analysis needs at least one class")
    for r in rankings:
        if r not in RANKINGS:
            raise UnlearnkitError(f"unknown ranking {r!r}; expected one of {', '.join(RANKINGS)}")
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    x_f, y_f = _load(forget, max_samples, rng)
    x_r, y_r = _load(retain, max_samples, rng)
    was_training = model.training
    model.eval()
    n_units = sum(model.units().values())
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    # every unit on / every unit off do not depend on the ranking: measure them once
    shared: dict[bool, tuple[float, float]] = {}
    try:
        for how in rankings:
            ranked = unit_ranking(model, classes, how, seed)
            curves[how] = {}
            for mode in ("deletion", "insertion"):
                fc, rc = [], []
                for f in fr:
                    n = int(round(f * n_units))
                    all_on = (n == 0) == (mode == "deletion")
                    if n in (0, n_units) and all_on in shared:
                        acc_f, acc_r = shared[all_on]
                    else:
                        gates = _gates(model, ranked, n, mode)
                        acc_f = _accuracy(model, gates, x_f, y_f, device, batch_size)
                        acc_r = _accuracy(model, gates, x_r, y_r, device, batch_size)
                        if n in (0, n_units):
                            shared[all_on] = (acc_f, acc_r)
                    fc.append(acc_f)
                    rc.append(acc_r)
                curves[how][mode] = {"forget": fc, "retain": rc}
    finally:
        model.train(was_training)
    return DeletionInsertion(fr, tuple(int(c) for c in classes), curves, len(y_f), len(y_r), n_units)
