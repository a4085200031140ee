"""HySAC: safety-aware fine-tuning of a hyperbolic CLIP (unsafe content deeper in an entailment hierarchy).

T. Poppi, T. Kasarla, P. Mettes, L. Baraldi, R. Cucchiara, "Hyperbolic Safety-Aware Vision-Language
Models", CVPR 2025, arXiv 2503.12127, §3 (code: aimagelab/HySAC, no licence: read to check formulas, not
copied). Built on MERU (:mod:`unlearnkit.concept.meru`), geometry in :mod:`unlearnkit.concept.lorentz`.

Both towers of a MERU model (:class:`~unlearnkit.concept.meru.LorentzCLIP`) are fine-tuned through LoRA,
with the curvature, the two feature scalings and the logit scale, on quadruplets (s, v, u, g) (safe
caption, safe image, unsafe caption, unsafe image), with seven terms (the code's order; λ = 1 each, total
L = Σ λ_k ℓ_k / 7 as in the code):

====  =====================================  ===========================================================
 #    term                                   paper / code
====  =====================================  ===========================================================
 1    ℓ_con(s, v)                            hyperbolic contrastive, safe pairs (§3.2)
 2    ℓ_con(u, g)                            hyperbolic contrastive, unsafe pairs (§3.2): keeps the
                                             unsafe text → unsafe image link ("awareness")
 3    ℓ_con(s, g)                            contrastive across safety: the code's
 4    ℓ_con(u, v)                            ``safe_unsafe_contrastive_loss_a`` / ``_b`` (§3.2)
 5    ℓ_ent(s ⊒ v)                           MERU entailment, safe text entails safe image (§3.2)
 6    ℓ_ent(u ⊒ g)                           MERU entailment, unsafe text entails unsafe image (§3.2)
 7    safety entailment (safe ⊒ unsafe)      ``cross_entailment="paper"`` (default): ½[ℓ_ent(s ⊒ u) +
                                             ℓ_ent(v ⊒ g)], each unsafe item inside the cone of its safe
                                             counterpart of the same modality (§3.2, as we read it);
                                             ``"code"``: ℓ_ent(v ⊒ u), the released script's single
                                             term (``entailmentLoss_D(safe image, unsafe text)``)
====  =====================================  ===========================================================

ℓ_con(a, b) = ½ [CE(−s·D, I) + CE(−s·Dᵀ, I)], D_ij = d(a_i, b_j) the geodesic distance;
ℓ_ent(x ⊒ y) = mean max(0, ext(x, y) − σ·aper(x)) with the aperture scale σ (1 in the code).

[OURS, not in the paper or the code] an eighth, *retention* term keeps the safe embeddings where the
original put them (Safe-CLIP has four terms for that, HySAC none, and on the concept world safe T→V
retrieval drifts without one):

    ``retention="geodesic"``:  ℓ_ret = ½ [mean_i d(s_i, s⁰_i) + mean_i d(v_i, v⁰_i)]
    ``retention="direction"``: ℓ_ret = ½ [mean_i (1 − cos(s_i, s⁰_i)) + mean_i (1 − cos(v_i, v⁰_i))]
    L = Σ_k λ_k ℓ_k / 7 + λ_ret ℓ_ret

s⁰, v⁰ the embeddings of a frozen copy of the original (towers and scalars). "geodesic" reads both as
points of the current hyperboloid (curvature c of the model being trained), d the geodesic distance (its
arccosh is clamped at 1 + 1e-7, so the pull fades within ~1e-3 of the reference): it holds depth and
direction. "direction" holds only the direction of the tangent vector at the root, log0(x) ∝ x (the cosine
of the space components): the depth d(O, x), which HySAC's hierarchy moves, stays free. ``lambda_retain
= 0`` (no term, no frozen copy) is the paper's method.

Entailment puts the entailed (unsafe) item beyond the entailing (safe) one, farther from the root: unsafe
content can then be told apart by its distance to the root, and redirected at inference by moving it
back toward the root (:mod:`unlearnkit.concept.traversal`, a metric variant of the same run).

Optimisation (the code): AdamW (β = (0.9, 0.98), weight decay 0.2 on the LoRA matrices, none on the
scalars), the scalars clamped before each step as in MERU; LoRA r 16, α 1, dropout 0.1 on k_proj, v_proj,
out_proj, fc1, fc2, patch_embedding of both towers (Safe-CLIP's targets); early stopping on the validation
loss or recall sum (R@1 of S→V, V→S, U→G, G→U), patience 5. The adapters are merged on return, so the
result is a plain :class:`~unlearnkit.concept.meru.LorentzCLIP` around a plain ``CLIPModel``.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.concept import lorentz as L
from unlearnkit.concept._method import (
    NAMES,
    ConceptMethod,
    ConceptUnlearnData,
    ValidationKeeper,
    add_lora,
    check_lora_targets,
    merge_lora,
    quad_batches,
    trainable,
)
from unlearnkit.concept.meru import LorentzCLIP, lorentz_contrastive, lorentz_images, lorentz_texts
from unlearnkit.concept.retrieval import recall_at_k
from unlearnkit.concept.safe_clip import SAFE_CLIP_LORA_TARGETS
from unlearnkit.engine import check_finite
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import (
    NON_NEGATIVE,
    NONE,
    POSITIVE,
    POSITIVE_INT,
    Interval,
    Options,
    register_method,
)

#: the seven λ names, in the module table's order
HYSAC_LAMBDAS = (
    "lambda_safe_con", "lambda_unsafe_con", "lambda_safe_text_unsafe_image_con", "lambda_unsafe_text_safe_image_con",
    "lambda_safe_entail", "lambda_unsafe_entail", "lambda_safety_entail",
)  # fmt: skip


def hysac_embeddings(model: LorentzCLIP, b: Any) -> tuple[torch.Tensor, ...]:
    """(s, u, v, g): the batch's safe and unsafe caption and image embeddings (differentiable)."""
    return model.embed_text(*b.s), model.embed_text(*b.u), model.embed_image(b.v), model.embed_image(b.g)


def hysac_terms(
    model: LorentzCLIP,
    b: Any,
    *,
    cross_entailment: str = "paper",
    aperture_scale: float = 1.0,
    embeddings: tuple[torch.Tensor, ...] | None = None,
) -> torch.Tensor:
    """The seven loss terms ``[7]`` of one batch of quadruplets (see the module table); ``embeddings``:
    :func:`hysac_embeddings` of the batch if already computed."""
    c, scale = model.curvature(), model.logit_scale_value()
    s, u, v, g = embeddings if embeddings is not None else hysac_embeddings(model, b)

    def ent(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return L.entailment_loss(x, y, c, aperture_scale)

    cross = 0.5 * (ent(s, u) + ent(v, g)) if cross_entailment == "paper" else ent(v, u)
    return torch.stack([
        lorentz_contrastive(s, v, c, scale),  # 1 safe pairs
        lorentz_contrastive(u, g, c, scale),  # 2 unsafe pairs
        lorentz_contrastive(s, g, c, scale),  # 3 safe text / unsafe image
        lorentz_contrastive(u, v, c, scale),  # 4 unsafe text / safe image
        ent(s, v),  # 5 safe text entails safe image
        ent(u, g),  # 6 unsafe text entails unsafe image
        cross,  # 7 safety entailment: unsafe under safe
    ])  # fmt: skip


def retention_term(
    model: LorentzCLIP, frozen: LorentzCLIP, b: Any, s: torch.Tensor, v: torch.Tensor, kind: str = "geodesic"
) -> torch.Tensor:
    """Our retention term ℓ_ret (module doc) of the safe caption and image embeddings ``s``, ``v`` of batch
    ``b`` against the frozen original's: mean geodesic distance on the current hyperboloid (``"geodesic"``)
    or mean 1 − cosine of the tangent directions at the root (``"direction"``)."""
    with torch.no_grad():
        s0, v0 = frozen.embed_text(*b.s), frozen.embed_image(b.v)
    if kind == "direction":
        return 0.5 * ((1 - F.cosine_similarity(s, s0, dim=-1)).mean() + (1 - F.cosine_similarity(v, v0, dim=-1)).mean())
    c = model.curvature()
    return 0.5 * (L.dist(s, s0, c).mean() + L.dist(v, v0, c).mean())


@torch.no_grad()
def hysac_validation_recall_sum(model: LorentzCLIP, data: ConceptUnlearnData) -> float:
    """R@1 of S→V, V→S, U→G and G→U on the validation quadruplets (−distance), summed."""
    q = data.val
    if q is None:
        raise UnlearnkitError("validation recall needs validation quadruplets")
    s, u = lorentz_texts(model, data.tokenizer, q.safe_text), lorentz_texts(model, data.tokenizer, q.unsafe_text)
    v, g = lorentz_images(model, q.safe_image), lorentz_images(model, q.unsafe_image)
    c = float(model.curvature().detach())
    idx = torch.arange(len(q))
    return sum(recall_at_k(-L.pairwise_dist(a, b, c), idx, (1,))[1] for a, b in [(s, v), (v, s), (u, g), (g, u)])


@register_method("hysac")
class HySAC(ConceptMethod):
    """HySAC's safety-aware hyperbolic fine-tuning (see the module doc). Needs the hyperbolic (MERU) original.

    Args:
        epochs: maximum passes over the training quadruplets (10 in the code).
        lr: AdamW learning rate (1e-5 in the code, for ViT-L/14).
        batch_size: quadruplets per step.
        weight_decay: AdamW weight decay of the LoRA matrices (0.2; none on biases and scalars).
        lambda_*: the seven term weights (module table; 1 each in the code).
        lambda_retain: weight of our retention term (module doc; 0, the paper's method, switches it off).
        retention: ``"geodesic"`` or ``"direction"``, what the retention term holds (module doc).
        cross_entailment: ``"paper"`` (s ⊒ u and v ⊒ g) or ``"code"`` (v ⊒ u), term 7.
        aperture_scale: σ, multiplies every cone's half-aperture (1 in the code).
        lora_r, lora_alpha, lora_dropout, lora_targets: the adapters (16, 1, 0.1, Safe-CLIP's six targets).
        patience: early-stopping patience in epochs with validation quadruplets (``None``: run ``epochs``).
        restore: ``"best_recall"``, ``"best_loss"`` or ``"last"`` (as for ``safe_clip``).
    """

    paper = 'Poppi et al., "Hyperbolic Safety-Aware Vision-Language Models", CVPR 2025, arXiv:2503.12127'
    #: the original this method starts from: the hyperbolic MERU model, not the Euclidean CLIP
    geometry: ClassVar[str] = "lorentz"
    quick_params = {"epochs": 2, "batch_size": 16}
    _parameter_constraints = {
        "epochs": [POSITIVE_INT], "lr": [POSITIVE], "batch_size": [Interval(int, 2, None, "left")],
        "weight_decay": [NON_NEGATIVE], **{name: [NON_NEGATIVE] for name in HYSAC_LAMBDAS},
        "lambda_retain": [NON_NEGATIVE], "retention": [Options(frozenset({"geodesic", "direction"}))],
        "cross_entailment": [Options(frozenset({"paper", "code"}))], "aperture_scale": [POSITIVE],
        "lora_r": [POSITIVE_INT], "lora_alpha": [POSITIVE], "lora_dropout": [Interval(float, 0.0, 1.0, "left")],
        "lora_targets": [NAMES], "patience": [POSITIVE_INT, NONE],
        "restore": [Options(frozenset({"best_recall", "best_loss", "last"}))],
    }  # fmt: skip

    def __init__(
        self, *, epochs: int = 10, lr: float = 1e-5, batch_size: int = 128, weight_decay: float = 0.2,
        lambda_safe_con: float = 1.0, lambda_unsafe_con: float = 1.0, lambda_safe_text_unsafe_image_con: float = 1.0,
        lambda_unsafe_text_safe_image_con: float = 1.0, lambda_safe_entail: float = 1.0,
        lambda_unsafe_entail: float = 1.0, lambda_safety_entail: float = 1.0, lambda_retain: float = 0.0,
        retention: str = "geodesic", cross_entailment: str = "paper",
        aperture_scale: float = 1.0, lora_r: int = 16, lora_alpha: float = 1.0, lora_dropout: float = 0.1,
        lora_targets: tuple[str, ...] = SAFE_CLIP_LORA_TARGETS, patience: int | None = 5,
        restore: str = "best_recall",
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.lambda_safe_con = lambda_safe_con
        self.lambda_unsafe_con = lambda_unsafe_con
        self.lambda_safe_text_unsafe_image_con = lambda_safe_text_unsafe_image_con
        self.lambda_unsafe_text_safe_image_con = lambda_unsafe_text_safe_image_con
        self.lambda_safe_entail = lambda_safe_entail
        self.lambda_unsafe_entail = lambda_unsafe_entail
        self.lambda_safety_entail = lambda_safety_entail
        self.lambda_retain = lambda_retain
        self.retention = retention
        self.cross_entailment = cross_entailment
        self.aperture_scale = aperture_scale
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets
        self.patience = patience
        self.restore = restore

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, LorentzCLIP):
            raise UnlearnkitError(
                f"method {self.name!r} expects a hyperbolic CLIP (MERU LorentzCLIP), got {type(model).__name__}"
            )
        if sum(getattr(self, n) for n in HYSAC_LAMBDAS) <= 0:
            raise UnlearnkitError(f"method {self.name!r}: at least one λ must be positive, got all zeros")
        check_lora_targets(model.clip, self.lora_targets)

    def _loss(self, model: LorentzCLIP, frozen: LorentzCLIP | None, b: Any, weights: torch.Tensor) -> torch.Tensor:
        """L = Σ λ_k ℓ_k / 7 (+ λ_ret ℓ_ret with a frozen original)."""
        emb = hysac_embeddings(model, b)
        terms = hysac_terms(
            model, b, cross_entailment=self.cross_entailment, aperture_scale=self.aperture_scale, embeddings=emb
        )
        loss = (weights * terms).sum() / len(HYSAC_LAMBDAS)
        if frozen is not None:
            loss = loss + self.lambda_retain * retention_term(model, frozen, b, emb[0], emb[2], self.retention)
        return loss

    def _unlearn(self, model: LorentzCLIP, data: ConceptUnlearnData, generator: torch.Generator) -> LorentzCLIP:
        dev = next(model.parameters()).device
        weights = torch.tensor([float(getattr(self, n)) for n in HYSAC_LAMBDAS], device=dev)
        frozen = copy.deepcopy(model).eval().requires_grad_(False) if self.lambda_retain > 0 else None
        peft_model = add_lora(
            model.clip, r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout, targets=self.lora_targets
        )
        scalars = [model.log_curv, model.log_alpha_text, model.log_alpha_image, model.log_scale]
        scalars = [p for p in scalars if p.requires_grad]
        lora = [p for p in trainable(model.clip)]
        decay = [p for p in lora if p.ndim >= 2]
        rest = [p for p in lora if p.ndim < 2] + scalars
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=self.lr, betas=(0.9, 0.98))  # fmt: skip
        self.report_ = {"trainable_params": float(sum(p.numel() for p in lora + scalars))}
        use_val = data.val is not None and len(data.val) >= 2
        keeper = ValidationKeeper(model, self.patience)
        self.history_: list[dict[str, float]] = []
        for epoch in range(self.epochs):
            model.train()
            total, steps = 0.0, 0
            for b in quad_batches(data.train, data.tokenizer, self.batch_size, dev, generator=generator):
                model.clamp_scalars_()
                loss = self._loss(model, frozen, b, weights)
                check_finite(loss, "hysac")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, steps = total + loss.item(), steps + 1
            model.clamp_scalars_()
            row = {"train_loss": total / max(steps, 1)}
            if use_val:
                model.eval()
                with torch.no_grad():
                    vb = list(quad_batches(data.val, data.tokenizer, self.batch_size, dev, shuffle=False))
                    row["val_loss"] = sum(self._loss(model, frozen, b, weights).item() for b in vb) / len(vb)
                row["val_recall_sum"] = hysac_validation_recall_sum(model, data)
                keeper.update(row["val_loss"], row["val_recall_sum"])
            self.history_.append(row)
            if data.on_epoch:
                data.on_epoch(epoch + 1, self.epochs, row["train_loss"])
            if use_val and keeper.should_stop():
                break
        self.report_["epochs_run"] = float(len(self.history_))
        if use_val:
            keeper.restore(self.restore)
        model.clip = merge_lora(peft_model)
        self.report_["curvature"] = float(model.curvature().detach())
        return model
