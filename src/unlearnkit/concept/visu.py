"""ViSU quadruplets (Safe-CLIP's Visual Safe-Unsafe data set) from JSON/JSONL files and local images.

ViSU (Poppi et al., "Safe-CLIP", ECCV 2024, arXiv 2311.16254; spec §3.1) pairs each COCO caption with an
LLM-written unsafe version and an image generated from it. One row per quadruplet::

    {"safe": "...", "nsfw": "...", "tag": "violence", "coco_id": 139, "nsfw_im_path": "train/00139.png"}

* ``safe`` (s) and ``nsfw`` (u) are the captions, ``tag`` the unsafe category;
* the safe image v is the COCO image ``coco_id``: ``<coco_dir>/<coco_pattern>`` (default
  ``{coco_id:012d}.jpg``, COCO 2017 naming), or the row's own ``safe_im_path`` when present;
* the unsafe image g is ``nsfw_im_path``, absolute or relative to ``nsfw_dir`` (default: the folder of
  the JSON file). The images are not released with ViSU-Text: users generate or obtain them.

Files may be JSON Lines, a JSON list of rows, or a JSON object of columns (``{"safe": [...], ...}``).
A missing field, columns of different lengths or a missing image file is refused in one line before any
image is read. Nothing here downloads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnkit.concept._data import FileImages, Quadruplets
from unlearnkit.concept.world import CLIP_MEAN, CLIP_STD
from unlearnkit.errors import UnlearnkitError

VISU_FIELDS = ("safe", "nsfw", "tag", "coco_id", "nsfw_im_path")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ViSU file (JSONL, a JSON list of objects, or a JSON object of equal-length columns)."""
    p = Path(path)
    if not p.is_file():
        raise UnlearnkitError(f"ViSU file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UnlearnkitError(f"{p}: line {i} is not valid JSON ({e.msg})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UnlearnkitError(f"{p} is not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, dict):  # columns
            cols = {k: v for k, v in data.items() if isinstance(v, list)}
            if not cols:
                raise UnlearnkitError(f"{p}: expected a list of rows or an object of column lists")
            lengths = {k: len(v) for k, v in cols.items()}
            if len(set(lengths.values())) != 1:
                raise UnlearnkitError(
                    f"{p}: mismatched counts between columns: " + ", ".join(f"{k}={n}" for k, n in lengths.items())
                )
            n = next(iter(lengths.values()))
            rows = [{k: cols[k][i] for k in cols} for i in range(n)]
        elif isinstance(data, list):
            rows = data
        else:
            raise UnlearnkitError(f"{p}: expected a list of rows or an object of column lists")
    if not rows:
        raise UnlearnkitError(f"{p} has no quadruplets")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UnlearnkitError(f"{p}: row {i} is not an object")
        missing = [f for f in VISU_FIELDS if f not in row and not (f == "coco_id" and "safe_im_path" in row)]
        if missing:
            need = ", ".join(VISU_FIELDS)
            raise UnlearnkitError(f"{p}: row {i} is missing field {missing[0]!r} (ViSU rows need {need})")
        for f in ("safe", "nsfw"):
            if not isinstance(row[f], str) or not row[f].strip():
                raise UnlearnkitError(f"{p}: row {i} field {f!r} must be a non-empty caption")
    return rows


def clip_image_transform(
    image_size: int, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> Callable[[list[Path]], torch.Tensor]:
    """CLIP's preprocessing without tokenizer files: RGB, shorter side -> ``image_size`` (bicubic), centre crop,
    scale to [0, 1], normalise by CLIP's mean/std. Returns ``paths -> [B, 3, S, S]``."""
    from PIL import Image

    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)

    def load(paths: list[Path]) -> torch.Tensor:
        out = []
        for path in paths:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                scale = image_size / min(w, h)
                im = im.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))), Image.BICUBIC)
                w, h = im.size
                left, top = (w - image_size) // 2, (h - image_size) // 2
                im = im.crop((left, top, left + image_size, top + image_size))
                arr = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
            out.append((arr - m) / s)
        return torch.stack(out)

    return load


def processor_transform(processor: Any) -> Callable[[list[Path]], torch.Tensor]:
    """``paths -> pixel_values`` through a Hugging Face ``CLIPImageProcessor`` (the real CLIP's own)."""
    from PIL import Image

    def load(paths: list[Path]) -> torch.Tensor:
        images = []
        for path in paths:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        return processor(images=images, return_tensors="pt")["pixel_values"]

    return load


def load_visu(
    path: str | Path,
    *,
    coco_dir: str | Path | None,
    nsfw_dir: str | Path | None = None,
    coco_pattern: str = "{coco_id:012d}.jpg",
    transform: Callable[[list[Path]], torch.Tensor],
    limit: int | None = None,
) -> Quadruplets:
    """ViSU quadruplets from ``path``, with their images checked on disk (read lazily, batch by batch).

    Args:
        path: a ``.jsonl`` or ``.json`` file (see the module doc).
        coco_dir: folder of the COCO images (not needed when every row has ``safe_im_path``).
        nsfw_dir: folder ``nsfw_im_path`` is relative to (default: the file's folder).
        coco_pattern: file name of a COCO image, formatted with ``coco_id``.
        transform: ``paths -> [B, 3, H, W]`` preprocessing (see :func:`clip_image_transform`).
        limit: keep only the first ``limit`` rows.

    Raises:
        UnlearnkitError: a missing field, mismatched column counts, or an image file that does not exist.
    """
    p = Path(path)
    rows = read_rows(p)[:limit] if limit else read_rows(p)
    base_nsfw = Path(nsfw_dir) if nsfw_dir is not None else p.parent
    safe_paths, unsafe_paths = [], []
    for i, row in enumerate(rows):
        if "safe_im_path" in row:
            sp = Path(row["safe_im_path"])
            safe_paths.append(sp if sp.is_absolute() else p.parent / sp)
        else:
            if coco_dir is None:
                raise UnlearnkitError(f"{p}: row {i} needs its COCO image but no coco_dir was given")
            cid = row["coco_id"]
            try:
                name = coco_pattern.format(coco_id=int(cid))
            except (TypeError, ValueError):
                raise UnlearnkitError(f"{p}: row {i} has a coco_id that is not an integer: {cid!r}") from None
            safe_paths.append(Path(coco_dir) / name)
        up = Path(str(row["nsfw_im_path"]))
        unsafe_paths.append(up if up.is_absolute() else base_nsfw / up)
    missing = [q for q in safe_paths + unsafe_paths if not q.is_file()]
    if missing:
        raise UnlearnkitError(f"{p}: {len(missing)} image files not found (e.g. {missing[0]})")
    return Quadruplets(
        safe_text=[r["safe"] for r in rows], safe_image=FileImages(safe_paths, transform),
        unsafe_text=[r["nsfw"] for r in rows], unsafe_image=FileImages(unsafe_paths, transform),
        tag=[str(r["tag"]) for r in rows], label=None, ids=[str(r.get("coco_id", i)) for i, r in enumerate(rows)],
    )  # fmt: skip


class HFTokenizer:
    """A Hugging Face CLIP tokenizer as a :class:`~unlearnkit.concept._data.Tokenizer` (padded to 77)."""

    def __init__(self, tokenizer: Any, max_length: int = 77) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")  # fmt: skip
        return enc["input_ids"], enc["attention_mask"]
