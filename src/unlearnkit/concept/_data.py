"""Containers shared by the concept setting: quadruplets, image columns, tokenizers.

A concept data set is a list of N quadruplets ``(s, v, u, g)`` (Safe-CLIP's notation, spec §3.1): a safe
caption ``s``, its safe image ``v``, an unsafe caption ``u`` with the same content, and its unsafe image
``g``. Images are held either as one in-memory tensor (the generated concept world) or as file paths read
on demand (ViSU); texts go through a tokenizer that turns strings into CLIP ``input_ids`` and an
``attention_mask``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from unlearnkit.errors import UnlearnkitError

#: ids of the special tokens of :class:`WordTokenizer` (``eos`` is not 2: HF CLIP treats 2 as legacy)
PAD, BOS, UNK, EOS = "<pad>", "<bos>", "<unk>", "<eos>"
SPECIALS = (PAD, BOS, UNK, EOS)


class ImageColumn(Protocol):
    """N images, returned as preprocessed float tensors ``[B, 3, H, W]`` by index."""

    def __len__(self) -> int: ...
    def batch(self, indices: Sequence[int]) -> torch.Tensor: ...


@dataclass
class TensorImages:
    """Images already in memory, as one float tensor ``[N, 3, H, W]`` (preprocessed)."""

    pixels: torch.Tensor

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        return self.pixels[torch.as_tensor(list(indices), dtype=torch.long)]

    def subset(self, indices: Sequence[int]) -> TensorImages:
        return TensorImages(self.batch(indices))


@dataclass
class FileImages:
    """Images on disk, read and preprocessed on demand by ``transform(paths) -> [B, 3, H, W]``."""

    paths: list[Path]
    transform: Callable[[list[Path]], torch.Tensor]

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        return self.transform([self.paths[i] for i in indices])

    def subset(self, indices: Sequence[int]) -> FileImages:
        return FileImages([self.paths[i] for i in indices], self.transform)


class Tokenizer(Protocol):
    """Turns captions into ``(input_ids, attention_mask)`` long tensors ``[B, L]``."""

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


def words_of(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text`` (the word tokenizer's split)."""
    return re.findall(r"[a-z0-9']+|[^\sa-z0-9']", text.lower())


@dataclass
class WordTokenizer:
    """A word-level tokenizer over a fixed vocabulary (no tokenizer files needed).

    ``<bos> w1 ... wk <eos> <pad> ...``, truncated to ``max_length`` (the ``<eos>`` is kept, since CLIP's
    text encoder pools at it). Unknown words raise unless ``unknown="unk"``.

    Attributes:
        vocab: the tokens; the first four are ``<pad>``, ``<bos>``, ``<unk>``, ``<eos>``.
        max_length: padded length, ``<bos>`` and ``<eos>`` included.
        unknown: ``"error"`` or ``"unk"`` (map unknown words to ``<unk>``).
    """

    vocab: list[str]
    max_length: int
    unknown: str = "error"
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if tuple(self.vocab[:4]) != SPECIALS:
            raise UnlearnkitError(f"a WordTokenizer vocabulary must start with {', '.join(SPECIALS)}")
        if self.max_length < 3:
            raise UnlearnkitError(f"max_length must be at least 3 (<bos> word <eos>), got {self.max_length}")
        self._index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def fit(cls, texts: Sequence[str], max_length: int | None = None) -> WordTokenizer:
        """A tokenizer whose vocabulary is every word of ``texts`` (sorted); unknown words later -> ``<unk>``."""
        split = [words_of(t) for t in texts]
        vocab = list(SPECIALS) + sorted({w for ws in split for w in ws} - set(SPECIALS))
        longest = max((len(ws) for ws in split), default=1) + 2
        return cls(vocab, max_length or longest, unknown="unk")

    #: the file :meth:`save` writes beside an exported small CLIP
    FILE = "word_tokenizer.json"

    def save(self, folder: str | Path) -> Path:
        """Write the vocabulary and settings to ``folder/word_tokenizer.json`` (plain JSON)."""
        path = Path(folder) / self.FILE
        path.write_text(json.dumps({"vocab": self.vocab, "max_length": self.max_length, "unknown": self.unknown}))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> WordTokenizer:
        """The tokenizer :meth:`save` wrote in ``folder``; a missing or malformed file raises in one line."""
        path = Path(folder) / cls.FILE
        try:
            d = json.loads(path.read_text())
            return cls(list(d["vocab"]), int(d["max_length"]), str(d.get("unknown", "error")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UnlearnkitError(f"cannot read a word tokenizer from {path}: {type(e).__name__}: {e}") from None

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = np.zeros((len(texts), self.max_length), dtype=np.int64)
        mask = np.zeros((len(texts), self.max_length), dtype=np.int64)
        for r, text in enumerate(texts):
            toks = []
            for w in words_of(text):
                if w in self._index:
                    toks.append(self._index[w])
                elif self.unknown == "unk":
                    toks.append(self._index[UNK])
                else:
                    raise UnlearnkitError(f"word {w!r} (in {text!r}) is not in the tokenizer's vocabulary")
            row = [self.bos_id, *toks[: self.max_length - 2], self.eos_id]
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)


@dataclass
class Quadruplets:
    """N quadruplets ``(s, v, u, g)``: safe caption, safe image, unsafe caption, unsafe image.

    Attributes:
        safe_text: s_i.
        safe_image: v_i.
        unsafe_text: u_i (same content as s_i, plus the unsafe concept).
        unsafe_image: g_i.
        tag: the unsafe category of each quadruplet.
        label: object class of each quadruplet for zero-shot classification (``None``: not known).
        ids: an identifier per quadruplet (ViSU: ``coco_id``).
    """

    safe_text: list[str]
    safe_image: ImageColumn
    unsafe_text: list[str]
    unsafe_image: ImageColumn
    tag: list[str]
    label: np.ndarray | None = None
    ids: list[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.safe_text)
        counts = {
            "safe texts": n, "unsafe texts": len(self.unsafe_text), "safe images": len(self.safe_image),
            "unsafe images": len(self.unsafe_image), "tags": len(self.tag),
        }  # fmt: skip
        if self.label is not None:
            counts["labels"] = len(self.label)
        if self.ids is not None:
            counts["ids"] = len(self.ids)
        if len(set(counts.values())) != 1:
            raise UnlearnkitError(
                "quadruplets have mismatched counts: " + ", ".join(f"{v} {k}" for k, v in counts.items())
            )

    def __len__(self) -> int:
        return len(self.safe_text)

    def subset(self, indices: Sequence[int]) -> Quadruplets:
        """The quadruplets at ``indices``, in that order."""
        idx = list(indices)
        return Quadruplets(
            safe_text=[self.safe_text[i] for i in idx],
            safe_image=self.safe_image.subset(idx),  # type: ignore[attr-defined]
            unsafe_text=[self.unsafe_text[i] for i in idx],
            unsafe_image=self.unsafe_image.subset(idx),  # type: ignore[attr-defined]
            tag=[self.tag[i] for i in idx],
            label=None if self.label is None else self.label[idx],
            ids=None if self.ids is None else [self.ids[i] for i in idx],
        )


@dataclass
class ConceptData:
    """A concept data set: train/val/test quadruplets, a tokenizer, and zero-shot class prompts.

    Attributes:
        name: ``"concept_world"`` or ``"visu"``.
        train: the quadruplets a method may train on.
        val: validation quadruplets (early stopping), or ``None``.
        test: the quadruplets every metric is computed on.
        tokenizer: captions -> token ids.
        class_prompts: per object class, the prompts whose mean text embedding is that class's zero-shot
            classifier (empty when the data has no classes; zero-shot accuracy is then not computed).
        spec: what identifies the data (goes into every run's config hash).
        image_processor: the Hugging Face image processor the images went through (``from_pretrained``
            checkpoints), saved beside exported models; ``None`` for the built-in preprocessing.
    """

    name: str
    train: Quadruplets
    val: Quadruplets | None
    test: Quadruplets
    tokenizer: Tokenizer
    class_prompts: list[list[str]] = field(default_factory=list)
    spec: dict = field(default_factory=dict)
    image_processor: Any = None
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def fingerprint(self) -> str:
        """Content hash of the training quadruplets (32 hex digits), part of the pretraining cache key.

        Texts, tags and labels are hashed; in-memory images by their pixels (the concept world), images on
        disk (ViSU) by their paths, sizes and modification times. Computed once per object.
        """
        if self._fingerprint is None:
            h = hashlib.sha256(self.name.encode())
            q = self.train
            h.update(json.dumps([q.safe_text, q.unsafe_text, q.tag, q.ids]).encode())
            if q.label is not None:
                h.update(np.ascontiguousarray(q.label).tobytes())
            for col in (q.safe_image, q.unsafe_image):
                _hash_images(h, col)
            self._fingerprint = h.hexdigest()[:32]
        return self._fingerprint


def _hash_images(h: Any, col: ImageColumn) -> None:
    """Feed an image column into hash ``h``: pixels in memory, or each file's path, size and mtime."""
    if isinstance(col, TensorImages):
        t = col.pixels.detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.numpy().reshape(-1).view(np.uint8)))
    elif isinstance(col, FileImages):
        for p in col.paths:
            try:
                st = p.stat()
                h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p}|missing\n".encode())
    else:  # another column type: its preprocessed images
        for i in range(0, len(col), 256):
            b = col.batch(range(i, min(i + 256, len(col)))).detach().cpu().contiguous().float()
            h.update(memoryview(b.numpy().reshape(-1).view(np.uint8)))
