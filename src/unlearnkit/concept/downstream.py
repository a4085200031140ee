"""The offline analogue of the unlearned CLIP inside generation: a text-to-image generator, a captioner and a
judge, all built on the concept world around the *original* CLIP's frozen embedding space.

The talk's point about Safe-CLIP (Poppi et al., ECCV 2024, arXiv 2311.16254, §5) is downstream: as the text
encoder of a text-to-image model the unlearned CLIP stops the unsafe concept from being drawn, and as the vision
encoder of a multimodal LLM it stops the concept from being described. Stable Diffusion and LLaVA cannot run
here, so three small models stand in for them, trained once per seed with the original encoders frozen and
then used with the *unlearned* encoders swapped in, with no further training (as a user drops Safe-CLIP's text
tower into a diffusion pipeline):

* **generator** G: a deterministic conditional decoder (an MLP then three transposed convolutions, the
  DCGAN generator's upsampling stack, Radford et al. 2016, arXiv 1511.06434) from the L2-normalised projected
  text embedding t = f_T(c) / ‖f_T(c)‖ of a caption to an image, trained with the squared error
  ‖G(t) − x̄(c)‖² against the caption's *canonical render* x̄(c) (:func:`canonical_images`: the world's own
  renderer with the jitter at its centre and, for an unsafe caption, the category marker in the quadrant
  diagonally opposite the object). A deterministic decoder regresses the mean image of its condition; the world
  draws the marker's quadrant and the jitter at random, and their mean would smear the marker into grey, so the
  decoder learns the canonical render, one image per caption;
* **captioner** C: the projected image embedding v = f_V(x) / ‖f_V(x)‖, frozen, initialises a one-layer GRU
  (Cho et al. 2014, arXiv 1406.1078) that decodes a caption over the world's word vocabulary (teacher forcing
  with cross-entropy on the training captions, greedy decoding at test time: "show and tell", Vinyals et al.
  2015, arXiv 1411.4555, with the CLIP embedding in place of the CNN feature);
* **detector** D: a small CNN trained on the world's training images (safe and unsafe renders) with five heads:
  the unsafe marker (binary) and the content (shape, colour, size, position). It judges generated images.

Each is cached per seed like the original CLIP (:class:`~unlearnkit.engine.ModelCache`, safetensors, keyed by
the data and its fingerprint, the frozen encoder's weights, the recipe, the architecture and the compute
context). The metrics reading them are in :mod:`unlearnkit.concept.downstream_metrics`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.concept._data import ConceptData, Quadruplets, WordTokenizer, words_of
from unlearnkit.concept.clip import encode_images, encode_texts
from unlearnkit.concept.world import (
    CLIP_MEAN,
    CLIP_STD,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    UNSAFE,
    _marker,
    _shape_mask,
)
from unlearnkit.engine import ModelCache, check_finite, config_hash, seed_everything
from unlearnkit.engine.cache import architecture_fingerprint, compute_context
from unlearnkit.errors import UnlearnkitError

#: the content attributes the detector and the caption parser recognise, with their values
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": tuple(SIZES),
    "position": tuple(f"{v} {h}" for v, h in POSITIONS),
}
#: every word of the unsafe concept (a caption containing one names the concept)
UNSAFE_WORDS = frozenset(w for ws in UNSAFE.values() for w in ws)


@dataclass(frozen=True)
class DownstreamRecipe:
    """How the generator, captioner and detector are trained (validated on entry).

    Attributes:
        generator_epochs, captioner_epochs, detector_epochs: passes over the training pairs (safe and unsafe).
        lr: Adam's learning rate for all three.
        batch_size: pairs per step.
    """

    generator_epochs: int = 60
    captioner_epochs: int = 40
    detector_epochs: int = 10
    lr: float = 2e-3
    batch_size: int = 128

    def __post_init__(self) -> None:
        for name in ("generator_epochs", "captioner_epochs", "detector_epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise UnlearnkitError(f"generation.{name} must be an integer >= 1, got {v!r}")
        if not self.lr > 0:
            raise UnlearnkitError(f"generation.lr must be > 0, got {self.lr!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise UnlearnkitError(f"generation.batch_size must be an integer >= 2, got {self.batch_size!r}")

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> DownstreamRecipe:
        """The recipe of a ``generation`` config section (``enabled`` is dropped; unknown keys raise)."""
        known = set(cls.__dataclass_fields__)
        given = {k: v for k, v in settings.items() if k != "enabled"}
        unknown = sorted(set(given) - known)
        if unknown:
            raise UnlearnkitError(f"unknown generation settings {unknown}; known: {sorted(known)}")
        return cls(**given)


# -- the world's content and canonical renders -----------------------------------------------------------
def contents_of(q: Quadruplets) -> list[tuple[str, str, str, int]]:
    """``(shape, colour, size, position index)`` of each quadruplet, from its concept-world id."""
    if q.ids is None:
        raise UnlearnkitError("the generation analogue needs concept-world quadruplets (their ids name the content)")
    out = []
    for i in q.ids:
        parts = i.split("-")
        if (len(parts) != 4 or parts[0] not in SHAPES or parts[1] not in COLOURS or parts[2] not in SIZES
                or not parts[3].isdigit() or int(parts[3]) >= len(POSITIONS)):  # fmt: skip
            raise UnlearnkitError(f"the generation analogue needs concept-world quadruplets; id {i!r} is not one")
        out.append((parts[0], parts[1], parts[2], int(parts[3])))
    return out


def content_labels(contents: Sequence[tuple[str, str, str, int]]) -> dict[str, torch.Tensor]:
    """Class index of each content attribute (:data:`ATTRIBUTES` order), ``{attribute: [N]}``."""
    return {
        "shape": torch.tensor([SHAPES.index(c[0]) for c in contents]),
        "colour": torch.tensor([list(COLOURS).index(c[1]) for c in contents]),
        "size": torch.tensor([list(SIZES).index(c[2]) for c in contents]),
        "position": torch.tensor([c[3] for c in contents]),
    }


def canonical_images(contents: Sequence[tuple[str, str, str, int]], tags: Sequence[str | None],
                     image_size: int) -> torch.Tensor:  # fmt: skip
    """The world's render of each content with every random draw at its centre, CLIP-normalised ``[N, 3, H, W]``.

    No background noise, the object at its quadrant's centre with its nominal radius and colour; ``tag`` not
    ``None`` adds that category's marker, unjittered, in the quadrant diagonally opposite the object.
    """
    hw, n = image_size, len(contents)
    half, scale = hw // 2, hw / 32.0
    msize = max(hw // 4, 6)
    yy, xx = np.mgrid[0:hw, 0:hw].astype(np.float32)
    out = np.full((n, 3, hw, hw), 0.12, dtype=np.float32)
    for i, ((shape, colour, size, pos), tag) in enumerate(zip(contents, tags, strict=True)):
        qy, qx = divmod(pos, 2)
        mask = _shape_mask(shape, yy - (qy * half + half / 2), xx - (qx * half + half / 2), SIZES[size] * scale)
        out[i][:, mask] = np.asarray(COLOURS[colour], dtype=np.float32)[:, None]
        if tag is not None:
            my, mx = divmod(3 - pos, 2)
            y0, x0 = my * half + (half - msize) // 2, mx * half + (half - msize) // 2
            out[i][:, y0 : y0 + msize, x0 : x0 + msize] = _marker(tag, msize)[None]
    mean = np.asarray(CLIP_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(CLIP_STD, dtype=np.float32)[:, None, None]
    return torch.from_numpy((out - mean) / std)


# -- the three models -------------------------------------------------------------------------------------
class Generator(nn.Module):
    """G: normalised text embedding ``[B, D]`` -> image ``[B, 3, S, S]`` (S = 8 · base)."""

    def __init__(self, embed_dim: int, image_size: int, width: int = 128) -> None:
        super().__init__()
        if image_size % 8:
            raise UnlearnkitError(f"the generator needs an image size divisible by 8, got {image_size}")
        self.base, self.width = image_size // 8, width
        self.fc = nn.Sequential(nn.Linear(embed_dim, 256), nn.GELU(), nn.Linear(256, width * self.base**2), nn.GELU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(width, 64, 4, 2, 1), nn.GELU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.GELU(),
            nn.ConvTranspose2d(32, 3, 4, 2, 1),
        )  # fmt: skip

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(t).view(-1, self.width, self.base, self.base))


class Captioner(nn.Module):
    """C: normalised image embedding ``[B, D]`` -> next-word logits over the vocabulary (GRU decoder)."""

    def __init__(self, embed_dim: int, vocab_size: int, hidden: int = 128, word_dim: int = 64) -> None:
        super().__init__()
        self.init = nn.Linear(embed_dim, hidden)
        self.words = nn.Embedding(vocab_size, word_dim)
        self.gru = nn.GRU(word_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, v: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, L, V]`` of the word after each of ``ids`` ``[B, L]`` (teacher forcing)."""
        h, _ = self.gru(self.words(ids), torch.tanh(self.init(v))[None])
        return self.out(h)

    @torch.no_grad()
    def greedy(self, v: torch.Tensor, bos: int, eos: int, max_length: int) -> torch.Tensor:
        """Greedy decoding: token ids ``[B, max_length - 1]`` after ``<bos>`` (``eos`` then repeats)."""
        h = torch.tanh(self.init(v))[None]
        tok = torch.full((len(v),), bos, dtype=torch.long, device=v.device)
        done = torch.zeros(len(v), dtype=torch.bool, device=v.device)
        out = []
        for _ in range(max_length - 1):
            y, h = self.gru(self.words(tok)[:, None], h)
            tok = self.out(y[:, 0]).argmax(-1)
            tok = torch.where(done, torch.full_like(tok, eos), tok)
            done |= tok == eos
            out.append(tok)
        return torch.stack(out, dim=1)


class Detector(nn.Module):
    """D: image -> ``{"marker": [B] logit, attribute: [B, n_values] logits}`` (a small CNN with five heads)."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.GELU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (image_size // 8) ** 2, 128), nn.GELU(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({"marker": nn.Linear(128, 1),
                                    **{a: nn.Linear(128, len(v)) for a, v in ATTRIBUTES.items()}})  # fmt: skip

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        out = {a: head(h) for a, head in self.heads.items()}
        out["marker"] = out["marker"][:, 0]
        return out


@dataclass
class DetectorJudgement:
    """What the detector says about N images: marker present, and the predicted content attributes."""

    marker: torch.Tensor  # bool [N]
    content: dict[str, torch.Tensor]  # attribute -> class index [N]


@torch.no_grad()
def judge(detector: Detector, images: torch.Tensor, *, batch_size: int = 256) -> DetectorJudgement:
    """The detector's verdicts on ``images`` (CLIP-normalised, on CPU)."""
    detector.eval()
    dev = next(detector.parameters()).device
    marker, content = [], {a: [] for a in ATTRIBUTES}
    for i in range(0, len(images), batch_size):
        out = detector(images[i : i + batch_size].to(dev))
        marker.append((out["marker"] > 0).cpu())
        for a in ATTRIBUTES:
            content[a].append(out[a].argmax(-1).cpu())
    return DetectorJudgement(torch.cat(marker), {a: torch.cat(v) for a, v in content.items()})


@torch.no_grad()
def generate(generator: Generator, text_embeddings: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Images ``[N, 3, S, S]`` (on CPU) that ``generator`` draws for normalised text embeddings ``[N, D]``."""
    generator.eval()
    dev = next(generator.parameters()).device
    return torch.cat([generator(text_embeddings[i : i + batch_size].to(dev)).cpu()
                      for i in range(0, len(text_embeddings), batch_size)])  # fmt: skip


def decode_captions(ids: torch.Tensor, tokenizer: WordTokenizer) -> list[str]:
    """Token ids (after ``<bos>``) -> caption strings, up to the first ``<eos>``; specials dropped."""
    out = []
    for row in ids.tolist():
        words = []
        for t in row:
            if t == tokenizer.eos_id:
                break
            if t >= 4:  # not a special token
                words.append(tokenizer.vocab[t])
        out.append(" ".join(words))
    return out


@torch.no_grad()
def caption(captioner: Captioner, image_embeddings: torch.Tensor, tokenizer: WordTokenizer,
            *, batch_size: int = 256) -> list[str]:  # fmt: skip
    """Greedy captions of normalised image embeddings ``[N, D]``."""
    captioner.eval()
    dev = next(captioner.parameters()).device
    out: list[str] = []
    for i in range(0, len(image_embeddings), batch_size):
        ids = captioner.greedy(image_embeddings[i : i + batch_size].to(dev), tokenizer.bos_id, tokenizer.eos_id,
                               tokenizer.max_length)  # fmt: skip
        out += decode_captions(ids.cpu(), tokenizer)
    return out


# -- training ----------------------------------------------------------------------------------------------
def _adam(model: nn.Module, lr: float, total: int) -> tuple[torch.optim.Optimizer, Any]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total))


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _fit(module: nn.Module, n: int, epochs: int, recipe: DownstreamRecipe, gen: torch.Generator,
         loss_of: Callable[[torch.Tensor], torch.Tensor], what: str,
         clip_norm: float | None = None) -> dict[str, float]:  # fmt: skip
    """Adam with a cosine schedule over ``epochs`` passes of seeded batches of ``n`` items; ``loss_of(batch
    indices)`` is the batch's loss. Returns the last epoch's mean loss."""
    opt, sched = _adam(module, recipe.lr, epochs * -(-n // recipe.batch_size))
    module.train()
    last = float("nan")
    for _ in range(epochs):
        run, k = 0.0, 0
        for j in _batches(n, recipe.batch_size, gen):
            loss = loss_of(j)
            check_finite(loss, what)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip_norm)
            opt.step()
            sched.step()
            run, k = run + loss.item(), k + 1
        last = run / k
    module.eval()
    return {"loss": last}


def train_generator(generator: Generator, text_embeddings: torch.Tensor, targets: torch.Tensor,
                    recipe: DownstreamRecipe, gen: torch.Generator) -> dict[str, float]:  # fmt: skip
    """Fit G to map each normalised text embedding to its canonical render (squared error); returns the last loss."""
    dev = next(generator.parameters()).device

    def loss_of(j: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(generator(text_embeddings[j].to(dev)), targets[j].to(dev))

    return _fit(generator, len(targets), recipe.generator_epochs, recipe, gen, loss_of, "generator training")


def train_captioner(captioner: Captioner, image_embeddings: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                    recipe: DownstreamRecipe, gen: torch.Generator) -> dict[str, float]:  # fmt: skip
    """Fit C with teacher forcing: cross-entropy of each next word (padding after ``<eos>`` ignored)."""
    dev = next(captioner.parameters()).device
    target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)

    def loss_of(j: torch.Tensor) -> torch.Tensor:
        logits = captioner(image_embeddings[j].to(dev), ids[j, :-1].to(dev))
        return F.cross_entropy(logits.flatten(0, 1), target[j].to(dev).flatten(), ignore_index=-100)

    return _fit(captioner, len(ids), recipe.captioner_epochs, recipe, gen, loss_of, "captioner training", 1.0)


def detector_targets(q: Quadruplets) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The detector's training set of ``q``: images [v; g], marker labels [0…; 1…], content labels (twice)."""
    labels = content_labels(contents_of(q))
    n = len(q)
    images = torch.cat([q.safe_image.batch(range(n)), q.unsafe_image.batch(range(n))])
    marker = torch.cat([torch.zeros(n), torch.ones(n)])
    return images, marker, {a: torch.cat([v, v]) for a, v in labels.items()}


def train_detector(detector: Detector, q: Quadruplets, recipe: DownstreamRecipe,
                   gen: torch.Generator) -> dict[str, float]:  # fmt: skip
    """Fit D on the safe and unsafe images of ``q``: binary cross-entropy for the marker, cross-entropy per
    content attribute, summed."""
    images, marker, content = detector_targets(q)
    dev = next(detector.parameters()).device

    def loss_of(j: torch.Tensor) -> torch.Tensor:
        out = detector(images[j].to(dev))
        loss = F.binary_cross_entropy_with_logits(out["marker"], marker[j].to(dev))
        return loss + sum(F.cross_entropy(out[a], content[a][j].to(dev)) for a in ATTRIBUTES)

    return _fit(detector, len(images), recipe.detector_epochs, recipe, gen, loss_of, "detector training")


# -- cached construction -------------------------------------------------------------------------------------
def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 (32 hex digits) of a module's parameters and buffers, by name: the frozen encoder's identity."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()[:32]


def _projection_dim(clip: nn.Module) -> int:
    dim = getattr(getattr(clip, "config", None), "projection_dim", None)
    if not isinstance(dim, int):
        raise UnlearnkitError("the generation analogue needs a transformers CLIPModel as the original encoder")
    return dim


def _key(role: str, data: ConceptData, recipe: DownstreamRecipe, seed: int, model: nn.Module,
         device: torch.device, **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"role": role, "data": data.spec, "data_fingerprint": data.fingerprint(), "recipe": asdict(recipe),
            "seed": seed, "arch": architecture_fingerprint(model, role=role),
            "compute": compute_context(device, threads=torch.get_num_threads(), deterministic=True, amp=False),
            **extra}  # fmt: skip


def _world_tokenizer(data: ConceptData) -> WordTokenizer:
    if not isinstance(data.tokenizer, WordTokenizer):
        raise UnlearnkitError("the generation analogue needs the concept world's word tokenizer")
    return data.tokenizer


def _image_size(data: ConceptData) -> int:
    return int(data.spec.get("image_size", data.train.safe_image.batch([0]).shape[-1]))


def build_detector(data: ConceptData, recipe: DownstreamRecipe, seed: int, *, cache: ModelCache,
                   device: torch.device) -> tuple[Detector, dict[str, Any], bool]:  # fmt: skip
    """The unsafe-marker and content detector of ``data`` (trained on its training images once, then cached).

    ``info`` holds its held-out accuracies on the test images (``marker_acc``, ``content_acc``).
    """
    contents_of(data.train)  # refuse other data in one line, before any work
    size = _image_size(data)

    def make() -> Detector:
        return Detector(size)

    with torch.random.fork_rng(devices=[]):
        key = _key("concept_detector", data, recipe, seed, make(), device)

    def train(model: Detector) -> dict[str, Any]:
        gen = seed_everything(seed + 7001)
        t0 = time.perf_counter()
        info = train_detector(model.to(device), data.train, recipe, gen)
        images, marker, content = detector_targets(data.test)
        verdict = judge(model, images)
        right = torch.stack([verdict.content[a] == content[a] for a in ATTRIBUTES]).all(0)
        return {**info, "time_s": time.perf_counter() - t0, "marker_acc": float((verdict.marker == marker.bool())
                .float().mean()), "content_acc": float(right.float().mean())}  # fmt: skip

    seed_everything(seed + 7001)
    model, info, trained = cache.get_or_train(key, make, train)
    return model.to(device).eval(), info, trained


def build_generator(data: ConceptData, original: nn.Module, recipe: DownstreamRecipe, seed: int, *,
                    cache: ModelCache, device: torch.device) -> tuple[Generator, dict[str, Any], bool]:  # fmt: skip
    """G trained on the training captions (safe and unsafe), ``original``'s text tower frozen (once, then cached)."""
    q = data.train
    contents = contents_of(q)
    tok = _world_tokenizer(data)
    dim, size = _projection_dim(original), _image_size(data)

    def make() -> Generator:
        return Generator(dim, size)

    with torch.random.fork_rng(devices=[]):
        key = _key("concept_generator", data, recipe, seed, make(), device, encoder=weights_fingerprint(original))

    def train(model: Generator) -> dict[str, Any]:
        gen = seed_everything(seed + 7002)
        t0 = time.perf_counter()
        emb = torch.cat([encode_texts(original, tok, q.safe_text), encode_texts(original, tok, q.unsafe_text)])
        targets = canonical_images(contents + contents, [None] * len(q) + list(q.tag), size)
        info = train_generator(model.to(device), emb, targets, recipe, gen)
        return {**info, "time_s": time.perf_counter() - t0}

    seed_everything(seed + 7002)
    model, info, trained = cache.get_or_train(key, make, train)
    return model.to(device).eval(), info, trained


def build_captioner(data: ConceptData, original: nn.Module, recipe: DownstreamRecipe, seed: int, *,
                    cache: ModelCache, device: torch.device) -> tuple[Captioner, dict[str, Any], bool]:  # fmt: skip
    """C trained on the training images (safe and unsafe) and their captions with ``original``'s vision tower frozen."""
    q = data.train
    contents_of(q)
    tok = _world_tokenizer(data)
    dim = _projection_dim(original)

    def make() -> Captioner:
        return Captioner(dim, len(tok))

    with torch.random.fork_rng(devices=[]):
        key = _key("concept_captioner", data, recipe, seed, make(), device, encoder=weights_fingerprint(original),
                   vocab=config_hash({"v": tok.vocab}), max_length=tok.max_length)  # fmt: skip

    def train(model: Captioner) -> dict[str, Any]:
        gen = seed_everything(seed + 7003)
        t0 = time.perf_counter()
        emb = torch.cat([encode_images(original, q.safe_image), encode_images(original, q.unsafe_image)])
        ids, mask = tok(q.safe_text + q.unsafe_text)
        info = train_captioner(model.to(device), emb, ids, mask, recipe, gen)
        return {**info, "time_s": time.perf_counter() - t0}

    seed_everything(seed + 7003)
    model, info, trained = cache.get_or_train(key, make, train)
    return model.to(device).eval(), info, trained


def parse_caption(text: str) -> dict[str, str | None]:
    """The content a caption names: ``{attribute: value or None}`` (the first word of each attribute; the
    position from its vertical and horizontal words)."""
    words = words_of(text)
    found: dict[str, str | None] = {}
    for a in ("shape", "colour", "size"):
        found[a] = next((w for w in words if w in ATTRIBUTES[a]), None)
    v = next((w for w in words if w in ("top", "bottom")), None)
    h = next((w for w in words if w in ("left", "right")), None)
    found["position"] = f"{v} {h}" if v and h else None
    return found
