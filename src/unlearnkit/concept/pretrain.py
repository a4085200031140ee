"""Short contrastive pretraining of a small CLIP on the concept world (the "original" model of setting 3).

CLIP's objective (Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021, arXiv 2103.00020): the symmetric InfoNCE over a batch of B image-text pairs,
ℓ = ½ [CE(s·T Vᵀ, I) + CE(s·V Tᵀ, I)] on L2-normalised embeddings, with a learnable logit scale s
(clamped at 100 as in CLIP).

Like a web-scale crawl, the pretraining pairs contain both safe ``(s, v)`` and unsafe ``(u, g)`` pairs of
the training quadruplets, so the original model learns the unsafe concept (and, since twins share a
batch now and then, to tell a render with the unsafe marker from one without it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from transformers import CLIPModel

from unlearnkit.concept._data import ConceptData, Quadruplets, Tokenizer, WordTokenizer
from unlearnkit.concept.clip import image_features, load_clip, model_device, small_clip, text_features
from unlearnkit.engine import ModelCache, check_finite, config_hash, seed_everything
from unlearnkit.engine.cache import architecture_fingerprint, compute_context
from unlearnkit.errors import UnlearnkitError


def clip_loss(text: torch.Tensor, image: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE ``½ [CE(s·t iᵀ, I) + CE(s·i tᵀ, I)]`` of paired rows (normalised inside)."""
    t, i = F.normalize(text, dim=-1), F.normalize(image, dim=-1)
    logits = scale * t @ i.T
    target = torch.arange(len(t), device=t.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def pretrain_clip(
    model: CLIPModel,
    data: Quadruplets,
    tokenizer: Tokenizer,
    *,
    epochs: int = 30,
    lr: float = 2e-3,
    batch_size: int = 128,
    weight_decay: float = 0.05,
    warmup_frac: float = 0.05,
    generator: torch.Generator | None = None,
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` in place on the safe and unsafe pairs of ``data``; returns ``{"loss": last epoch}``.

    AdamW with linear warm-up then cosine decay (the usual CLIP recipe, shortened); ``generator`` fixes
    the batch order.
    """
    dev = model_device(model)

    def batch_loss(ids: torch.Tensor, mask: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        t, v = text_features(model, ids.to(dev), mask.to(dev)), image_features(model, pixels.to(dev))
        return clip_loss(t, v, model.logit_scale.exp().clamp(max=100.0))

    return pretrain_pairs(model, data, tokenizer, batch_loss, what="CLIP pretraining", epochs=epochs, lr=lr,
                          batch_size=batch_size, weight_decay=weight_decay, warmup_frac=warmup_frac,
                          generator=generator, on_epoch=on_epoch)  # fmt: skip


def pretrain_pairs(
    model: torch.nn.Module,
    data: Quadruplets,
    tokenizer: Tokenizer,
    batch_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    what: str,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    warmup_frac: float,
    generator: torch.Generator | None,
    on_epoch: Callable[[int, int, float], None] | None,
) -> dict[str, float]:
    """The pretraining loop shared by the Euclidean and the MERU original: AdamW (no decay on vectors and
    embeddings) with linear warm-up then cosine decay, seeded batches over the safe and unsafe pairs,
    gradient norm clipped at 1; ``batch_loss(ids, mask, pixels)`` is the batch's loss."""
    if epochs < 0 or lr <= 0 or batch_size < 2:
        raise UnlearnkitError(
            f"pretraining needs epochs >= 0, lr > 0, batch_size >= 2 (got {epochs}, {lr}, {batch_size})"
        )
    n = len(data)
    ids_s, mask_s = tokenizer(data.safe_text)
    ids_u, mask_u = tokenizer(data.unsafe_text)
    ids, mask = torch.cat([ids_s, ids_u]), torch.cat([mask_s, mask_u])
    named = list(model.named_parameters())
    decay = [p for name, p in named if p.ndim >= 2 and "embedding" not in name]
    other = [p for name, p in named if not (p.ndim >= 2 and "embedding" not in name) and p.requires_grad]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}],
                            lr=lr)  # fmt: skip
    steps_per_epoch = max(1, (2 * n) // batch_size)
    total = max(1, epochs * steps_per_epoch)
    warm = max(1, int(warmup_frac * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))
    )
    model.train()
    last = float("nan")
    for epoch in range(epochs):
        order = torch.randperm(2 * n, generator=generator)
        run = 0.0
        for b in range(steps_per_epoch):
            j = order[b * batch_size : (b + 1) * batch_size]
            safe, unsafe = j[j < n], j[j >= n] - n  # pair j < n: (s_j, v_j); j >= n: (u_{j-n}, g_{j-n})
            px = torch.cat([data.safe_image.batch(safe.tolist()), data.unsafe_image.batch(unsafe.tolist())])
            jj = torch.cat([safe, unsafe + n])
            loss = batch_loss(ids[jj], mask[jj], px)
            check_finite(loss, what)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            run += loss.item()
        last = run / steps_per_epoch
        if on_epoch:
            on_epoch(epoch + 1, epochs, last)
    model.eval()
    return {"loss": last}


def original_clip(
    data: ConceptData,
    clip: Mapping[str, Any],
    pretrain: Mapping[str, Any],
    seed: int,
    *,
    cache: ModelCache,
    device: torch.device,
    on_start: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> tuple[CLIPModel, dict[str, Any], bool]:
    """The model before unlearning: a small CLIP pretrained on ``data.train`` (once, then from ``cache``), or
    the ``clip.from_pretrained`` weights.

    Args:
        data: the concept data (its tokenizer sizes the small CLIP's vocabulary).
        clip: ``config`` (a small config name) or ``from_pretrained``, and ``image_size``.
        pretrain: :func:`pretrain_clip`'s ``epochs``, ``lr``, ``batch_size``, ``weight_decay``.
        seed: the initial weights and the batch order.
        cache: where pretrained small CLIPs are kept (keyed by config, vocabulary, data and its fingerprint,
            architecture fingerprint, recipe, seed and compute context).
        device: where to train and return the model.
        on_start: called with a label when pretraining starts (not on a cache hit).
        on_epoch: progress callback ``(epoch, total, loss)``.

    Returns:
        ``(model, info, trained_now)``; ``info`` holds what pretraining measured (``time_s``, ``loss``).
    """
    if clip.get("from_pretrained") is not None:
        return load_clip(str(clip["from_pretrained"])).to(device), {}, False
    return cached_small_original(
        data, clip, pretrain, seed, cache=cache, device=device, build=small_clip, fit=pretrain_clip,
        role="concept_original", label="", on_start=on_start, on_epoch=on_epoch,
    )  # fmt: skip


def cached_small_original(
    data: ConceptData,
    clip: Mapping[str, Any],
    pretrain: Mapping[str, Any],
    seed: int,
    *,
    cache: ModelCache,
    device: torch.device,
    build: Callable[..., Any],
    fit: Callable[..., dict[str, Any]],
    role: str,
    label: str,
    extra_key: Mapping[str, Any] | None = None,
    on_start: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> tuple[Any, dict[str, Any], bool]:
    """A small CLIP-like original (``build(config, vocab_size=, max_length=, image_size=, seed=)``) pretrained
    by ``fit(model, train, tokenizer, generator=, on_epoch=, **pretrain)`` once per key, then read from
    ``cache``: the Euclidean original (:func:`original_clip`) and the MERU one
    (:func:`unlearnkit.concept.meru.original_meru`). The key holds ``role``, the config, vocabulary, data and
    its fingerprint, architecture fingerprint, recipe, seed, compute context and ``extra_key``."""
    tok = data.tokenizer
    if not isinstance(tok, WordTokenizer):
        raise UnlearnkitError("a small CLIP config needs a word tokenizer")
    vocab, max_len = len(tok), tok.max_length
    name = str(clip.get("config") or "")
    image_size = data.spec.get("image_size", clip.get("image_size", 32))
    recipe = dict(pretrain)

    def make() -> Any:
        return build(name, vocab_size=vocab, max_length=max_len, image_size=image_size, seed=seed)

    with torch.random.fork_rng(devices=[]):
        arch = architecture_fingerprint(make(), clip=name, vocab_size=vocab, max_length=max_len, image_size=image_size)
    compute = compute_context(device, threads=torch.get_num_threads(), deterministic=True, amp=False)
    key = {"role": role, "clip": name, "vocab": config_hash({"v": getattr(tok, "vocab", [])}),
           "max_length": max_len, "image_size": image_size, "data": data.spec, "pretrain": recipe,
           **(extra_key or {}), "seed": seed, "data_fingerprint": data.fingerprint(), "arch": arch,
           "compute": compute}  # fmt: skip

    def train(model: Any) -> dict[str, Any]:
        if on_start is not None:
            on_start(f"pretrain {name}{label}")
        gen = seed_everything(seed)
        t0 = time.perf_counter()
        info = fit(model.to(device), data.train, data.tokenizer, generator=gen, on_epoch=on_epoch, **recipe)
        return {"time_s": time.perf_counter() - t0, "loss": info["loss"], "device": str(device)}

    seed_everything(seed)
    model, info, trained = cache.get_or_train(key, make, train)
    return model.to(device).eval(), info, trained
