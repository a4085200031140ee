"""Safe-CLIP: redirect an unsafe concept in both CLIP encoders to its safe counterpart.

S. Poppi, T. Poppi, F. Cocchi, M. Cornia, L. Baraldi, R. Cucchiara, "Safe-CLIP: Removing NSFW Concepts
from Vision-and-Language Models", ECCV 2024, arXiv 2311.16254 (code: aimagelab/safe-clip). Spec §3.3-3.4.

Both encoders T*, V* are fine-tuned (through LoRA by default) on quadruplets (s, v, u, g) against the
frozen original encoders T⁰, V⁰, with eight terms (the code's order; default λ from its argument parser):

====  ==============================  ================================  =====
 #    term                            paper group                       λ
====  ==============================  ================================  =====
 1    d_cos(T*(s), T⁰(s))             preservation 1 (text)             0.1
 2    d_cos(T*(u), T⁰(s))             redirection 2 (text)              0.1
 3    d_cos(V*(v), V⁰(v))             preservation 1 (vision)           0.1
 4    d_cos(V*(g), V⁰(v))             redirection 2 (vision)            0.2
 5    ℓ_con(T*(s), V⁰(v))             preservation 2                    0.25
 6    ℓ_con(T*(u), V⁰(v))             redirection 1 (u → safe image)    0.25
 7    ℓ_con(T⁰(s), V*(v))             preservation 2                    0.25
 8    ℓ_con(T⁰(s), V*(g))             redirection 1 (g → safe text)     0.5
====  ==============================  ================================  =====

d_cos = 1 − cos (batch mean); ℓ_con is the symmetric InfoNCE with a fixed logit scale of 100 (temperature
0.01). The total is L = Σ_k λ̂_k ℓ_k / 8 with λ̂ = λ / Σλ (the code's normalisation).

Optional extension (ours, not in the paper or its code; off by default): ``lambda_unsafe_negatives > 0``
adds a ninth term, the redirection contrastive terms with the batch's unsafe items as extra negatives:

    ℓ_9 = ½ [CE(s·T*(u) [V*(v); V*(g)]ᵀ, I) + CE(s·V*(g) [T*(s); T*(u)]ᵀ, I)]

An unsafe caption must retrieve its safe image ahead of every unsafe image of the batch (its own unsafe
twin g_i included), and an unsafe image its safe caption ahead of every unsafe caption: the ranking that
T*→V∪V* and V*→T∪T* and their unsafe rates measure (spec §3.5), on the same galleries (the current
encoders' safe embeddings, not the frozen ones: against V⁰(v) the model could satisfy the term by moving
every image, v with g, away from the unsafe captions, which leaves the ranking unchanged; the paper's
preservation terms keep V*(v), T*(s) near V⁰(v), T⁰(s)). The eight paper terms only pull T*(u) and V*(g)
onto the safe embeddings; when g shares its content with v, as in the concept world, a successful pull
leaves the top-1 between v_i and g_i near a coin flip. The motivation follows HySAC (T. Poppi, Kasarla,
Mettes, Baraldi, Cucchiara, "Hyperbolic Safety-Aware Vision-Language Models", CVPR 2025, arXiv
2503.12127), which keeps unsafe content apart from safe content instead of merging it. With the ninth
term the total is L = (Σ_{k≤8} λ_k ℓ_k + λ_9 ℓ_9) / (8 Σ_{k≤8} λ_k), so λ_9 = 0 is exactly the paper's
loss and λ_9 is on the scale of the other λ.

The released script injects LoRA into the very modules it uses as the "original" encoders, so its
reference embeddings are the current model's own outputs under ``no_grad`` (a stop-gradient target), not
the frozen CLIP. The paper's semantics (a separate frozen copy) is the default here;
``stop_gradient_self=True`` reproduces the released behaviour.

Optimisation (spec §3.4): Adam without weight decay on the LoRA parameters (r 16, α 1, dropout 0.1;
targets k_proj, v_proj, out_proj, fc1, fc2, patch_embedding: no q_proj), lr 1e-3, batch 128, up to 50
epochs with early stopping (patience 5) when validation quadruplets are given: an epoch improves if the
validation loss drops or the validation recall sum (R@1 of S→V, V→S, S→G, G→S, U→V, V→U) rises. The
adapters are merged on return (W' = W0 + (α/r)·B·A), so the result is a plain ``CLIPModel``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel

from unlearnkit.concept._method import (
    NAMES,
    ConceptMethod,
    ConceptUnlearnData,
    QuadBatch,
    ValidationKeeper,
    add_lora,
    check_lora_targets,
    contrastive,
    cos_distance,
    merge_lora,
    quad_batches,
    trainable,
)
from unlearnkit.concept.clip import encode_images, encode_texts
from unlearnkit.concept.retrieval import recall_at_k
from unlearnkit.engine import check_finite
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import (
    BOOLEAN,
    NON_NEGATIVE,
    NONE,
    POSITIVE,
    POSITIVE_INT,
    Interval,
    Options,
    register_method,
)

#: the spec's LoRA targets for both CLIP towers
SAFE_CLIP_LORA_TARGETS = ("k_proj", "v_proj", "out_proj", "fc1", "fc2", "patch_embedding")
#: the eight λ hyperparameter names, in the code's order (see the module table)
LAMBDAS = (
    "lambda_pres_text_cos", "lambda_redir_text_cos", "lambda_pres_image_cos", "lambda_redir_image_cos",
    "lambda_pres_text_con", "lambda_redir_text_con", "lambda_pres_image_con", "lambda_redir_image_con",
)  # fmt: skip


def unsafe_negative_term(
    ts: torch.Tensor, vv: torch.Tensor, tu: torch.Tensor, vg: torch.Tensor, scale: float
) -> torch.Tensor:
    """ℓ_9 (our extension, see the module doc): unsafe queries against safe targets and unsafe negatives.

    Args:
        ts: T*(s) ``[B, D]``; vv: V*(v); tu: T*(u); vg: V*(g) (any norm: rows are L2-normalised here).
        scale: the fixed logit scale.
    """
    ts, vv, tu, vg = (F.normalize(x, dim=-1) for x in (ts, vv, tu, vg))
    target = torch.arange(len(tu), device=tu.device)  # item i of the safe half
    text_query = F.cross_entropy(scale * tu @ torch.cat([vv, vg]).T, target)  # u_i -> [V*(v); V*(g)]
    image_query = F.cross_entropy(scale * vg @ torch.cat([ts, tu]).T, target)  # g_i -> [T*(s); T*(u)]
    return 0.5 * (text_query + image_query)


def safe_clip_terms(
    model: nn.Module, frozen: nn.Module | None, b: QuadBatch, scale: float, *, unsafe_negatives: bool = False
) -> torch.Tensor:
    """The eight loss terms ``[8]`` of one batch, in the code's order (``[9]`` with ``unsafe_negatives``).

    ``frozen`` is the original CLIP (T⁰, V⁰); ``None`` takes the reference from ``model`` itself under
    ``no_grad`` (the released code's behaviour). ``unsafe_negatives`` appends our ℓ_9
    (:func:`unsafe_negative_term`).
    """
    ts, tu = b.text(model, "s"), b.text(model, "u")  # T*(s), T*(u)
    vv, vg = b.image(model, "v"), b.image(model, "g")  # V*(v), V*(g)
    with torch.no_grad():
        ref = model if frozen is None else frozen
        t0s, v0v = b.text(ref, "s"), b.image(ref, "v")  # T⁰(s), V⁰(v)
    terms = [
        cos_distance(ts, t0s),  # 1 preservation 1, text
        cos_distance(tu, t0s),  # 2 redirection 2, text: unsafe caption -> frozen safe caption
        cos_distance(vv, v0v),  # 3 preservation 1, vision
        cos_distance(vg, v0v),  # 4 redirection 2, vision: unsafe image -> frozen safe image
        contrastive(ts, v0v, scale),  # 5 preservation 2
        contrastive(tu, v0v, scale),  # 6 redirection 1: unsafe caption retrieves the safe image
        contrastive(t0s, vv, scale),  # 7 preservation 2
        contrastive(t0s, vg, scale),  # 8 redirection 1: unsafe image retrieves the safe caption
    ]  # fmt: skip
    if unsafe_negatives:
        terms.append(unsafe_negative_term(ts, vv, tu, vg, scale))  # 9 (ours): unsafe items as negatives
    return torch.stack(terms)


@torch.no_grad()
def validation_recall_sum(model: nn.Module, data: ConceptUnlearnData) -> float:
    """R@1 of S→V, V→S, S→G, G→S, U→V and V→U on the validation quadruplets, summed (U→G is ignored)."""
    q = data.val
    if q is None:
        raise UnlearnkitError("validation recall needs validation quadruplets")
    s, u = encode_texts(model, data.tokenizer, q.safe_text), encode_texts(model, data.tokenizer, q.unsafe_text)
    v, g = encode_images(model, q.safe_image), encode_images(model, q.unsafe_image)
    idx = torch.arange(len(q))
    pairs = [(s, v), (v, s), (s, g), (g, s), (u, v), (v, u)]
    return sum(recall_at_k(a @ b.T, idx, (1,))[1] for a, b in pairs)


@register_method("safe_clip")
class SafeCLIP(ConceptMethod):
    """Safe-CLIP's eight-term redirection/preservation fine-tuning of both encoders (see the module doc).

    Args:
        epochs: maximum number of passes over the training quadruplets (50 in the paper's code).
        lr: Adam learning rate (1e-3).
        batch_size: quadruplets per step (128 in the code; its sbatch uses 16).
        logit_scale: fixed scale of the contrastive terms (100 = temperature 0.01).
        lambda_*: the eight loss weights, named after the paper's groups (see the module table).
        lora: train LoRA adapters (True) or every weight (False).
        lora_r, lora_alpha, lora_dropout, lora_targets: the adapters (16, 1, 0.1, the six spec targets).
        patience: early-stopping patience in epochs, used when validation quadruplets are given
            (``None``: always run ``epochs``).
        restore: which weights to return: ``"best_recall"`` (highest validation recall sum),
            ``"best_loss"`` (lowest validation loss) or ``"last"``; without validation data, the last.
            [CHOICE] the code keeps both best checkpoints and does not say which one is released.
        stop_gradient_self: take the reference embeddings from the model itself under ``no_grad`` (the
            released code's behaviour) instead of from a frozen copy of the original (the paper's).
        lambda_unsafe_negatives: weight λ_9 of our optional ninth term (unsafe items as extra negatives of
            the redirection contrastive terms; see the module doc). 0 (default): the paper's eight terms.
    """

    paper = 'Poppi et al., "Safe-CLIP", ECCV 2024, arXiv:2311.16254'
    quick_params = {"epochs": 2, "batch_size": 16}
    _parameter_constraints = {
        "epochs": [POSITIVE_INT], "lr": [POSITIVE], "batch_size": [Interval(int, 2, None, "left")],
        "logit_scale": [POSITIVE], **{name: [NON_NEGATIVE] for name in LAMBDAS}, "lora": [BOOLEAN],
        "lora_r": [POSITIVE_INT], "lora_alpha": [POSITIVE], "lora_dropout": [Interval(float, 0.0, 1.0, "left")],
        "lora_targets": [NAMES], "patience": [POSITIVE_INT, NONE],
        "restore": [Options(frozenset({"best_recall", "best_loss", "last"}))], "stop_gradient_self": [BOOLEAN],
        "lambda_unsafe_negatives": [NON_NEGATIVE],
    }  # fmt: skip

    def __init__(
        self, *, epochs: int = 50, lr: float = 1e-3, batch_size: int = 128, logit_scale: float = 100.0,
        lambda_pres_text_cos: float = 0.1, lambda_redir_text_cos: float = 0.1, lambda_pres_image_cos: float = 0.1,
        lambda_redir_image_cos: float = 0.2, lambda_pres_text_con: float = 0.25, lambda_redir_text_con: float = 0.25,
        lambda_pres_image_con: float = 0.25, lambda_redir_image_con: float = 0.5, lora: bool = True,
        lora_r: int = 16, lora_alpha: float = 1.0, lora_dropout: float = 0.1,
        lora_targets: tuple[str, ...] = SAFE_CLIP_LORA_TARGETS, patience: int | None = 5,
        restore: str = "best_recall", stop_gradient_self: bool = False, lambda_unsafe_negatives: float = 0.0,
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.logit_scale = logit_scale
        self.lambda_pres_text_cos = lambda_pres_text_cos
        self.lambda_redir_text_cos = lambda_redir_text_cos
        self.lambda_pres_image_cos = lambda_pres_image_cos
        self.lambda_redir_image_cos = lambda_redir_image_cos
        self.lambda_pres_text_con = lambda_pres_text_con
        self.lambda_redir_text_con = lambda_redir_text_con
        self.lambda_pres_image_con = lambda_pres_image_con
        self.lambda_redir_image_con = lambda_redir_image_con
        self.lora = lora
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets
        self.patience = patience
        self.restore = restore
        self.stop_gradient_self = stop_gradient_self
        self.lambda_unsafe_negatives = lambda_unsafe_negatives

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        weights = [getattr(self, n) for n in LAMBDAS]
        if sum(weights) <= 0:
            raise UnlearnkitError(f"method {self.name!r}: at least one λ must be positive, got all zeros")
        if self.lora:
            check_lora_targets(model, self.lora_targets)

    def _weights(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """λ̂ = λ / Σ_{k≤8} λ_k for the eight terms, and λ_9 / Σ_{k≤8} λ_k appended when our ninth term is on."""
        lam = [float(getattr(self, n)) for n in LAMBDAS]
        if self.lambda_unsafe_negatives > 0:  # our ninth term, on the scale of the paper's λ
            lam.append(float(self.lambda_unsafe_negatives))
        return torch.tensor(lam, device=device) / sum(lam[: len(LAMBDAS)])

    def _loss(self, model: nn.Module, frozen: nn.Module | None, b: QuadBatch, weights: torch.Tensor) -> torch.Tensor:
        """L = λ̂ · ℓ / 8 with λ̂ = λ / Σ_{k≤8} λ_k; with our ℓ_9, ``weights`` has its ninth entry λ_9 / Σ_{k≤8} λ_k."""
        terms = safe_clip_terms(model, frozen, b, self.logit_scale, unsafe_negatives=self.lambda_unsafe_negatives > 0)
        return (weights * terms).sum() / len(LAMBDAS)

    def _unlearn(self, model: CLIPModel, data: ConceptUnlearnData, generator: torch.Generator) -> CLIPModel:
        dev = next(model.parameters()).device
        weights = self._weights(dev)
        frozen = None
        if not self.stop_gradient_self:  # T⁰, V⁰: a frozen copy of the original (the paper's semantics)
            frozen = copy.deepcopy(model).eval().requires_grad_(False)
        peft_model = None
        if self.lora:  # the adapters are injected into `model` in place; everything else is frozen
            peft_model = add_lora(
                model, r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout, targets=self.lora_targets
            )
        params = trainable(model)
        self.report_ = {"trainable_params": float(sum(p.numel() for p in params))}
        opt = torch.optim.Adam(params, lr=self.lr)  # no weight decay (spec §3.4)
        use_val = data.val is not None and len(data.val) >= 2
        keeper = ValidationKeeper(model, self.patience)
        self.history_: list[dict[str, float]] = []
        for epoch in range(self.epochs):
            model.train()
            total, steps = 0.0, 0
            for b in quad_batches(data.train, data.tokenizer, self.batch_size, dev, generator=generator):
                loss = self._loss(model, frozen, b, weights)
                check_finite(loss, "safe_clip")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, steps = total + loss.item(), steps + 1
            row = {"train_loss": total / max(steps, 1)}
            if use_val:
                model.eval()
                with torch.no_grad():
                    vb = list(quad_batches(data.val, data.tokenizer, self.batch_size, dev, shuffle=False))
                    row["val_loss"] = sum(self._loss(model, frozen, b, weights).item() for b in vb) / len(vb)
                row["val_recall_sum"] = validation_recall_sum(model, data)
                keeper.update(row["val_loss"], row["val_recall_sum"])
            self.history_.append(row)
            if data.on_epoch:
                data.on_epoch(epoch + 1, self.epochs, row["train_loss"])
            if use_val and keeper.should_stop():
                break
        self.report_["epochs_run"] = float(len(self.history_))
        if use_val:
            keeper.restore(self.restore)
        return merge_lora(peft_model) if peft_model is not None else model
