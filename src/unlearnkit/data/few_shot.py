"""External forget images for the no-retain setting: a folder of a user's own pictures of the class to forget.

The talk's few-shot unlearning uses "random images, downloaded from the web of the class", not training
samples. :func:`load_external_images` reads such a folder (its top level only; files with an image
extension, see :data:`IMAGE_EXTENSIONS`; other files are ignored), converts each image to the model's
input: greyscale (PIL mode ``L``) for one channel or ``RGB`` for three, resized (bilinear) to the input's
height and width, values in [0, 1], channels first. Every image gets the label of the forgotten class.
Files are read in sorted name order, so the same folder always gives the same dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unlearnkit.data._base import ArrayDataset
from unlearnkit.errors import UnlearnkitError

#: file extensions read as images (case-insensitive)
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def image_files(folder: Path) -> list[Path]:
    """Image files at the top level of ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )  # fmt: skip


def load_external_images(folder: str | Path, in_shape: tuple[int, ...], label: int) -> ArrayDataset:
    """Read a folder of images as forget data for a model taking inputs of ``in_shape``.

    Args:
        folder: the folder holding the images (png, jpg, ...; its sub-folders are not read).
        in_shape: the model's input shape ``(C, H, W)`` with ``C`` 1 (greyscale) or 3 (RGB).
        label: the class every image is labelled with (the class to forget).

    Returns:
        An :class:`~unlearnkit.data.ArrayDataset` of float images ``[n, C, H, W]`` in [0, 1], all labelled ``label``.

    Raises:
        UnlearnkitError: ``folder`` is not a folder or holds no images, a file cannot be decoded, or the model's
            input is not a 1- or 3-channel image (e.g. a 1-D signal), so no picture can match it.
    """
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        raise UnlearnkitError(
            f"external forget images need a model taking (1 or 3, H, W) images; this one takes in_shape={shape}"
        )
    c, h, w = shape
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UnlearnkitError(f"few-shot folder {root} is not a folder")
    files = image_files(root)
    if not files:
        exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise UnlearnkitError(f"few-shot folder {root} holds no images ({exts})")

    from PIL import Image, UnidentifiedImageError

    mode = "L" if c == 1 else "RGB"
    out = np.empty((len(files), h, w, c), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as im:
                im = im.convert(mode)  # palette/alpha/CMYK/greyscale -> the model's channels (alpha dropped)
                if (im.height, im.width) != (h, w):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im, dtype=np.uint8).reshape(h, w, c)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise UnlearnkitError(f"few-shot folder: cannot read image {path}: {' '.join(str(e).split())}") from None
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)  # [n, C, H, W] in [0, 1]
    return ArrayDataset(x.contiguous(), np.full(len(files), int(label), dtype=np.int64))
