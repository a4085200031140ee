"""The concept-method contract (setting 3) and the pieces Safe-CLIP and its baselines share.

Concept methods follow the same rules as :class:`unlearnkit.methods.Method` (scikit-learn's estimator
rules): keyword-only hyperparameters stored verbatim in ``__init__``, ``_parameter_constraints`` checked on
entry to :meth:`ConceptMethod.unlearn`, which deep-copies its input and never mutates it. They take a
:class:`transformers.CLIPModel` and the concept's quadruplets instead of a classifier and class splits, so
they are registered in the one method registry (:data:`unlearnkit.methods.METHODS`) with ``setting = 3``
and ``modality = "clip"``, by :func:`unlearnkit.methods.register_method`.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel

from unlearnkit.concept._data import Quadruplets, Tokenizer
from unlearnkit.concept.clip import image_features, text_features
from unlearnkit.engine import resolve_device, seed_everything
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import Hyperparameters


@dataclass(frozen=True)
class NameList:
    """Constraint: a non-empty list or tuple of non-empty strings (e.g. LoRA target module names)."""

    def check(self, v: Any) -> bool:
        return isinstance(v, list | tuple) and len(v) > 0 and all(isinstance(s, str) and s for s in v)

    def __str__(self) -> str:
        return "a non-empty list of names"


NAMES = NameList()


@dataclass
class ConceptUnlearnData:
    """What a concept method is given: the training quadruplets (and validation ones, for early stopping).

    Attributes:
        train: quadruplets (s, v, u, g) to unlearn from.
        tokenizer: captions -> token ids for the model being unlearned.
        val: validation quadruplets, or ``None`` (no early stopping).
        device: where to train.
        seed: seeds every random draw (batch order, LoRA init, dropout).
        on_epoch: progress callback ``(epoch, total, loss)``.
    """

    train: Quadruplets
    tokenizer: Tokenizer
    val: Quadruplets | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    on_epoch: Callable[[int, int, float], None] | None = None


class ConceptMethod(Hyperparameters):
    """Base class of concept (setting-3) methods. Subclasses implement :meth:`_unlearn`."""

    setting: ClassVar[int] = 3
    modality: ClassVar[str] = "clip"
    #: the concept's training quadruplets (safe/unsafe caption and image twins)
    needs: ClassVar[frozenset[str]] = frozenset({"quadruplets"})
    requests: ClassVar[frozenset[str]] = frozenset({"concept"})
    #: whether the method trains (False: training-free, e.g. a projection)
    trains: ClassVar[bool] = True
    #: the original it starts from: ``"euclidean"`` (a CLIPModel) or ``"lorentz"`` (a hyperbolic MERU
    #: :class:`~unlearnkit.concept.meru.LorentzCLIP`, whose original the runner pretrains beside CLIP's)
    geometry: ClassVar[str] = "euclidean"
    #: small overrides the contract tests use so a tiny run finishes in seconds (never used otherwise)
    quick_params: ClassVar[dict[str, Any]] = {}

    @classmethod
    def unsupported_reason(cls, request: Any) -> str | None:
        """Why this method cannot serve ``request``: a concept method serves no classifier forget request."""
        return f"method {cls.name!r} unlearns a concept in CLIP (setting 3); it does not serve {request}"

    def check_model(self, model: nn.Module) -> None:
        """Refuse, before any work, a model this method cannot unlearn (subclasses add checks)."""
        if not isinstance(model, CLIPModel):
            raise UnlearnkitError(f"method {self.name!r} expects a transformers CLIPModel, got {type(model).__name__}")

    def unlearn(self, model: CLIPModel, data: ConceptUnlearnData) -> CLIPModel:
        """Return an unlearned copy of ``model`` (``model`` itself is left untouched)."""
        self.validate_params()
        self.check_model(model)
        if len(data.train) == 0:
            raise UnlearnkitError(f"method {self.name!r} needs at least one training quadruplet")
        generator = seed_everything(data.seed)
        device = resolve_device(data.device)
        work = copy.deepcopy(model).to(device)
        t0 = time.perf_counter()
        out = self._unlearn(work, data, generator)
        self.elapsed_s_ = time.perf_counter() - t0
        return out.eval()

    def _unlearn(self, model: CLIPModel, data: ConceptUnlearnData, generator: torch.Generator) -> CLIPModel:
        raise NotImplementedError


# -- LoRA (peft) ----------------------------------------------------------------------------------------
LORA_LAYER_TYPES = (nn.Linear, nn.Conv2d, nn.Embedding)


def check_lora_targets(model: nn.Module, targets: list[str] | tuple[str, ...]) -> None:
    """Raise, in one line, if a LoRA target name matches no Linear/Conv2d/Embedding layer of ``model``.

    A name matches a module whose dotted name is the name or ends in ``.name`` (peft's rule).
    """
    names = [n for n, m in model.named_modules() if isinstance(m, LORA_LAYER_TYPES)]
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
            raise UnlearnkitError(
                f"LoRA target {t!r} matches no layer of the model; its layer names are: {', '.join(leaves)}"
            )


def add_lora(model: CLIPModel, *, r: int, alpha: float, dropout: float, targets: list[str] | tuple[str, ...]) -> Any:
    """Inject LoRA adapters into ``model`` in place (peft) and freeze everything else; returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    with warnings.catch_warnings():  # peft reads a deprecated transformers attribute (a FutureWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, cfg)


def merge_lora(peft_model: Any) -> CLIPModel:
    """Fold the adapters into the weights (W' = W0 + (α/r)·B·A) and return the plain CLIPModel."""
    merged = peft_model.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(True)
    return merged


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that require gradients."""
    return [p for p in model.parameters() if p.requires_grad]


# -- shared losses --------------------------------------------------------------------------------------
def cos_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d_cos(a, b) = 1 − cos(a, b), averaged over the batch."""
    return (1 - F.cosine_similarity(a, b, dim=-1)).mean()


def contrastive(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """ℓ_con(a, b) = ½ [CE(s·â b̂ᵀ, I) + CE(s·b̂ âᵀ, I)] on L2-normalised rows, fixed logit scale s."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = scale * a @ b.T
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@dataclass
class QuadBatch:
    """One batch of quadruplets, tokenised and on the device."""

    s: tuple[torch.Tensor, torch.Tensor]
    u: tuple[torch.Tensor, torch.Tensor]
    v: torch.Tensor
    g: torch.Tensor

    def text(self, model: nn.Module, which: str) -> torch.Tensor:
        """Projected features of captions ``s`` or ``u``."""
        ids, mask = self.s if which == "s" else self.u
        return text_features(model, ids, mask)

    def image(self, model: nn.Module, which: str) -> torch.Tensor:
        """Projected features of images ``v`` or ``g``."""
        return image_features(model, self.v if which == "v" else self.g)


def quad_batches(
    data: Quadruplets,
    tokenizer: Tokenizer,
    batch_size: int,
    device: torch.device,
    *,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[QuadBatch]:
    """Batches of quadruplets in a seeded order (the last one may be smaller, never of size 1)."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        j = order[i : i + batch_size].tolist()
        if len(j) < 2 and i > 0:  # a contrastive batch of one is meaningless; skip the straggler
            continue
        s, u = tokenizer([data.safe_text[k] for k in j]), tokenizer([data.unsafe_text[k] for k in j])
        yield QuadBatch(
            s=(s[0].to(device), s[1].to(device)), u=(u[0].to(device), u[1].to(device)),
            v=data.safe_image.batch(j).to(device), g=data.unsafe_image.batch(j).to(device),
        )  # fmt: skip


@dataclass
class ValidationKeeper:
    """Early stopping and weight restoring on two validation figures, as Safe-CLIP and HySAC train.

    An epoch improves when its validation loss drops or its validation recall sum rises; each best keeps a
    snapshot of the trainable weights. Training stops after ``patience`` epochs without improvement (``None``:
    never), and :meth:`restore` copies back the weights ``restore`` names (``"best_recall"``, ``"best_loss"``;
    ``"last"`` keeps the last epoch's).
    """

    model: nn.Module
    patience: int | None
    best_loss: float = float("inf")
    best_recall: float = float("-inf")
    stale: int = 0
    kept: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # "loss"/"recall" -> trainable weights

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def update(self, val_loss: float, val_recall_sum: float) -> None:
        """Record one epoch's validation figures."""
        improved = False
        if val_loss < self.best_loss:
            self.best_loss, self.kept["loss"], improved = val_loss, self._snapshot(), True
        if val_recall_sum > self.best_recall:
            self.best_recall, self.kept["recall"], improved = val_recall_sum, self._snapshot(), True
        self.stale = 0 if improved else self.stale + 1

    def should_stop(self) -> bool:
        return self.patience is not None and self.stale >= self.patience

    @torch.no_grad()
    def restore(self, restore: str) -> None:
        """Copy the kept weights that ``restore`` names back into the model (nothing for ``"last"``)."""
        choice = {"best_recall": "recall", "best_loss": "loss"}.get(restore)
        if choice in self.kept:
            named = dict(self.model.named_parameters())
            for n, t in self.kept[choice].items():
                named[n].copy_(t)
