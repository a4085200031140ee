"""Negative-contrastive fine-tuning: push unsafe text-image pairs apart, keep safe ones (no redirection).

A baseline for Safe-CLIP (Poppi et al., ECCV 2024, arXiv 2311.16254) in the spirit of the "unlearning by
fine-tuning" slide of the talk: the unsafe association is broken, but nothing says where the unsafe
inputs should go. On quadruplets (s, v, u, g), with T, V the trainable encoders and T⁰, V⁰ the frozen
original ones:

    L = w_f · mean_i max(0, cos(T(u_i), V(g_i)) − m)                 forget: unsafe caption ↛ unsafe image
      + w_p · ℓ_con(T(s), V(v))                                      preserve the safe pairs' alignment
      + w_a · [d_cos(T(s), T⁰(s)) + d_cos(V(v), V⁰(v))]             anchor safe embeddings to the original

ℓ_con is the symmetric InfoNCE with a fixed logit scale (100, as in Safe-CLIP) and d_cos = 1 − cos.
[CHOICE] the forget term, margin m, weights and the anchor are this project's; no paper fixes them.
Trained through LoRA on Safe-CLIP's targets by default (r 16, [CHOICE] α 16, i.e. scale α/r = 1; merged on
return), or fully.
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
    add_lora,
    check_lora_targets,
    contrastive,
    cos_distance,
    merge_lora,
    quad_batches,
    register_concept_method,
    trainable,
)
from unlearnkit.concept.safe_clip import SAFE_CLIP_LORA_TARGETS
from unlearnkit.engine import check_finite
from unlearnkit.methods._base import BOOLEAN, NON_NEGATIVE, POSITIVE, POSITIVE_INT, Interval


@register_concept_method("neg_contrastive")
class NegContrastive(ConceptMethod):
    """Minimise the similarity of unsafe pairs (u, g) while preserving and anchoring safe pairs (s, v).

    Args:
        epochs: passes over the training quadruplets.
        lr: Adam learning rate.
        batch_size: quadruplets per step.
        margin: cosine below which an unsafe pair is no longer pushed (m).
        forget_weight, preserve_weight, anchor_weight: w_f, w_p, w_a.
        logit_scale: fixed scale of the preservation contrastive term.
        lora, lora_r, lora_alpha, lora_dropout, lora_targets: as in ``safe_clip``.
    """

    paper = "baseline for Safe-CLIP (Poppi et al., ECCV 2024, arXiv:2311.16254); the loss is this project's"
    quick_params = {"epochs": 2, "batch_size": 16}
    _parameter_constraints = {
        "epochs": [POSITIVE_INT], "lr": [POSITIVE], "batch_size": [Interval(int, 2, None, "left")],
        "margin": [Interval(float, -1.0, 1.0, "both")], "forget_weight": [NON_NEGATIVE],
        "preserve_weight": [NON_NEGATIVE], "anchor_weight": [NON_NEGATIVE], "logit_scale": [POSITIVE],
        "lora": [BOOLEAN], "lora_r": [POSITIVE_INT], "lora_alpha": [POSITIVE],
        "lora_dropout": [Interval(float, 0.0, 1.0, "left")], "lora_targets": [NAMES],
    }  # fmt: skip

    def __init__(
        self, *, epochs: int = 10, lr: float = 1e-3, batch_size: int = 128, margin: float = 0.0,
        forget_weight: float = 1.0, preserve_weight: float = 1.0, anchor_weight: float = 1.0,
        logit_scale: float = 100.0, lora: bool = True, lora_r: int = 16, lora_alpha: float = 16.0,
        lora_dropout: float = 0.1, lora_targets: tuple[str, ...] = SAFE_CLIP_LORA_TARGETS,
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.margin = margin
        self.forget_weight = forget_weight
        self.preserve_weight = preserve_weight
        self.anchor_weight = anchor_weight
        self.logit_scale = logit_scale
        self.lora = lora
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        if self.lora:
            check_lora_targets(model, self.lora_targets)

    def _unlearn(self, model: CLIPModel, data: ConceptUnlearnData, generator: torch.Generator) -> CLIPModel:
        dev = next(model.parameters()).device
        frozen = copy.deepcopy(model).eval().requires_grad_(False)  # T⁰, V⁰
        peft_model = None
        if self.lora:
            peft_model = add_lora(model, r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                                  targets=self.lora_targets)  # fmt: skip
        params = trainable(model)
        self.report_ = {"trainable_params": float(sum(p.numel() for p in params))}
        opt = torch.optim.Adam(params, lr=self.lr)
        self.history_: list[float] = []
        model.train()
        for epoch in range(self.epochs):
            total, steps = 0.0, 0
            for b in quad_batches(data.train, data.tokenizer, self.batch_size, dev, generator=generator):
                ts, tu = b.text(model, "s"), b.text(model, "u")
                vv, vg = b.image(model, "v"), b.image(model, "g")
                with torch.no_grad():
                    t0s, v0v = b.text(frozen, "s"), b.image(frozen, "v")
                forget = F.relu(F.cosine_similarity(tu, vg, dim=-1) - self.margin).mean()  # push (u, g) apart
                preserve = contrastive(ts, vv, self.logit_scale)  # keep (s, v) aligned
                anchor = cos_distance(ts, t0s) + cos_distance(vv, v0v)  # stay near the original on safe data
                loss = self.forget_weight * forget + self.preserve_weight * preserve + self.anchor_weight * anchor
                check_finite(loss, "neg_contrastive")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, steps = total + loss.item(), steps + 1
            self.history_.append(total / max(steps, 1))
            if data.on_epoch:
                data.on_epoch(epoch + 1, self.epochs, self.history_[-1])
        return merge_lora(peft_model) if peft_model is not None else model
