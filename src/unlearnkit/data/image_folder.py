"""Your own images in class folders: ``ROOT/train/<class>/*.png`` and ``ROOT/test/<class>/*``.

Files are discovered with ``torchvision.datasets.ImageFolder`` (its image extensions; class names are the
folder names of ``train/``, sorted). ``test/`` may lack some classes but may not add new ones. All images
are decoded once into memory as ``uint8`` (a :class:`~unlearnkit.data.torchvision_sets.UInt8ImageDataset`)
and served as float tensors in [0, 1], channels first.

Colour: if *every* image is greyscale (PIL mode ``L`` or ``1``) the inputs have one channel, otherwise
every image is converted to RGB (three channels; palette and alpha images included, alpha dropped).

Size: with ``image_size`` every image is resized (bilinear) to it; without, all images must already share
one size.

Attributes (for ``group:NAME=VALUE`` requests): ``ROOT/attributes.csv``, if present (or the file given as
``attributes``), has the columns ``split,path,<attr1>,<attr2>,...``; ``split`` is ``train`` or ``test`` and
``path`` is the image's path relative to ``ROOT`` (``train/cat/001.png``; a path relative to the split folder
is accepted too). Every image of a split that has rows must have exactly one row. Values are kept as
strings.
"""

from __future__ import annotations

import csv
import posixpath
from pathlib import Path

import numpy as np
import torch

from unlearnkit.data._base import DatasetBundle, register_dataset
from unlearnkit.data.torchvision_sets import UInt8ImageDataset
from unlearnkit.errors import UnlearnkitError

SPLIT_DIRS: tuple[str, str] = ("train", "test")
ATTRIBUTES_FILE = "attributes.csv"
_GREY_MODES = frozenset({"L", "1"})


def _discover(root: Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes and ``(path, class_index)`` samples of ``root/split`` via torchvision's ImageFolder."""
    from torchvision.datasets import ImageFolder

    d = root / split
    if not d.is_dir():
        raise UnlearnkitError(f"image_folder: {d} is not a folder (expected {root}/{split}/<class>/<image files>)")
    try:
        ds = ImageFolder(str(d))
    except (FileNotFoundError, ValueError) as e:
        raise UnlearnkitError(f"image_folder: {d}: {' '.join(str(e).split())}") from e
    return list(ds.classes), list(ds.samples)


def _parse_size(image_size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        hw = (image_size, image_size)
    elif isinstance(image_size, tuple | list) and len(image_size) == 2 and all(isinstance(s, int) for s in image_size):
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise UnlearnkitError(f"image_size must be an int or (height, width), got {image_size!r}")
    if min(hw) < 1:
        raise UnlearnkitError(f"image_size must be positive, got {image_size!r}")
    return hw


def _load_images(paths: list[str], root: Path, size: tuple[int, int] | None) -> tuple[torch.Tensor, str]:
    """Decode ``paths`` into one ``uint8`` tensor ``[n, C, H, W]``; returns it and the PIL mode used."""
    from PIL import Image, UnidentifiedImageError

    headers: list[tuple[str, tuple[int, int]]] = []
    for p in paths:
        try:
            with Image.open(p) as im:
                headers.append((im.mode, (im.height, im.width)))
        except (UnidentifiedImageError, OSError) as e:
            raise UnlearnkitError(f"image_folder: cannot read image {p}: {' '.join(str(e).split())}") from e
    mode = "L" if all(m in _GREY_MODES for m, _ in headers) else "RGB"
    if size is None:
        first = headers[0][1]
        for p, (_, hw) in zip(paths, headers, strict=True):
            if hw != first:
                rel0, rel = Path(paths[0]).relative_to(root), Path(p).relative_to(root)
                raise UnlearnkitError(
                    f"image_folder: images differ in size ({rel0} is {first[0]}x{first[1]}, {rel} is "
                    f"{hw[0]}x{hw[1]}); pass image_size to resize them"
                )
        size = first
    h, w = size
    channels = 1 if mode == "L" else 3
    out = np.empty((len(paths), h, w, channels), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im = im.convert(mode)
                if (im.height, im.width) != (h, w):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im, dtype=np.uint8).reshape(h, w, channels)
        except (UnidentifiedImageError, OSError) as e:
            raise UnlearnkitError(f"image_folder: cannot read image {p}: {' '.join(str(e).split())}") from e
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), mode


def _norm_rel(path: str) -> str:
    p = posixpath.normpath(path.strip().replace("\\", "/"))
    return p[2:] if p.startswith("./") else p


def _read_attributes(
    csv_path: Path, root: Path, samples: dict[str, list[str]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-split attribute arrays (aligned with ``samples``) from an attributes CSV."""
    index = {
        split: {Path(p).relative_to(root).as_posix(): i for i, p in enumerate(paths)}
        for split, paths in samples.items()
    }
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UnlearnkitError(f"image_folder: cannot read {csv_path}: {' '.join(str(e).split())}") from e
    if "split" not in columns or "path" not in columns:
        raise UnlearnkitError(f"{csv_path}: needs the columns split,path,<attribute>... (found: {', '.join(columns)})")
    names = [c for c in columns if c not in ("split", "path")]
    if not names or any(not n for n in names):
        raise UnlearnkitError(f"{csv_path}: needs at least one named attribute column after split,path")
    if len(set(columns)) != len(columns):
        raise UnlearnkitError(f"{csv_path}: a column name appears twice")
    values: dict[str, dict[str, list[str | None]]] = {
        s: {n: [None] * len(samples[s]) for n in names} for s in SPLIT_DIRS
    }
    seen: dict[str, set[int]] = {s: set() for s in SPLIT_DIRS}
    for line, row in enumerate(rows, start=2):
        split, rel = row["split"], _norm_rel(row["path"])
        if split not in SPLIT_DIRS:
            raise UnlearnkitError(f"{csv_path} line {line}: split must be 'train' or 'test', got {split!r}")
        i = index[split].get(rel, index[split].get(posixpath.join(split, rel)))
        if i is None:
            raise UnlearnkitError(f"{csv_path} line {line}: no {split} image {row['path']!r} under {root}")
        if i in seen[split]:
            raise UnlearnkitError(f"{csv_path} line {line}: image {row['path']!r} is listed twice")
        seen[split].add(i)
        for n in names:
            values[split][n][i] = row[n]
    out: list[dict[str, np.ndarray]] = []
    for split in SPLIT_DIRS:
        if not seen[split]:
            out.append({})  # no rows for this split: it has no attributes
            continue
        missing = [i for i in range(len(samples[split])) if i not in seen[split]]
        if missing:
            example = Path(samples[split][missing[0]]).relative_to(root).as_posix()
            raise UnlearnkitError(
                f"{csv_path}: {len(missing)} {split} image(s) have no row (e.g. {example}); list every image of a split"
            )
        out.append({n: np.asarray(values[split][n], dtype=str) for n in names})
    return out[0], out[1]


@register_dataset("image_folder")
def image_folder(
    root: str | None = None,
    download: bool = False,
    image_size: int | tuple[int, int] | None = None,
    attributes: str | None = None,
) -> DatasetBundle:
    """Load ``root/train/<class>/*`` and ``root/test/<class>/*`` into memory as a :class:`DatasetBundle`.

    Args:
        root: the folder holding ``train/`` and ``test/`` (and optionally ``attributes.csv``).
        download: accepted for a uniform loader signature and ignored (nothing to download).
        image_size: resize every image to this (an int for square, or ``(height, width)``); if None, all
            images must share one size.
        attributes: path to an attributes CSV (absolute, or relative to ``root``); default
            ``root/attributes.csv`` when it exists.

    Returns:
        A bundle named ``image_folder`` with ``class_names`` the train folder names, and
        ``train_attributes``/``test_attributes`` filled from the CSV when there is one.

    Raises:
        UnlearnkitError: on a missing root or split folder, an empty folder, an unreadable image, images of
            different sizes without ``image_size``, a test class unknown to train, or a malformed CSV.
    """
    if root is None or str(root) == "":
        raise UnlearnkitError(
            "dataset 'image_folder' needs --data-root DIR (a folder holding train/<class>/ and test/<class>/)"
        )
    r = Path(root).expanduser().resolve()
    if not r.is_dir():
        raise UnlearnkitError(f"image_folder: data root {r} is not a folder")
    size = _parse_size(image_size)

    classes, train_samples = _discover(r, "train")
    test_classes, test_samples = _discover(r, "test")
    extra = sorted(set(test_classes) - set(classes))
    if extra:
        raise UnlearnkitError(f"image_folder: test classes {', '.join(extra)} have no train folder in {r / 'train'}")
    remap = np.asarray([classes.index(c) for c in test_classes], dtype=np.int64)

    paths = {"train": [p for p, _ in train_samples], "test": [p for p, _ in test_samples]}
    x, mode = _load_images(paths["train"] + paths["test"], r, size)
    n_train = len(train_samples)
    ytr = np.asarray([c for _, c in train_samples], dtype=np.int64)
    yte = remap[np.asarray([c for _, c in test_samples], dtype=np.int64)]

    csv_path: Path | None = None
    if attributes is not None:
        csv_path = Path(attributes).expanduser()
        if not csv_path.is_absolute() and not csv_path.is_file():
            csv_path = r / csv_path
        if not csv_path.is_file():
            raise UnlearnkitError(f"image_folder: attributes file {attributes} not found")
    elif (r / ATTRIBUTES_FILE).is_file():
        csv_path = r / ATTRIBUTES_FILE
    train_attrs, test_attrs = _read_attributes(csv_path, r, paths) if csv_path is not None else ({}, {})

    return DatasetBundle(
        name="image_folder",
        train=UInt8ImageDataset(x[:n_train], ytr),
        test=UInt8ImageDataset(x[n_train:], yte),
        train_targets=ytr,
        test_targets=yte,
        num_classes=len(classes),
        in_shape=tuple(int(s) for s in x.shape[1:]),
        class_names=classes,
        train_attributes=train_attrs,
        test_attributes=test_attrs,
        meta={
            "source": "torchvision.datasets.ImageFolder",
            "root": str(r),
            "mode": mode,
            "image_size": list(x.shape[2:]),
            "attributes": None if csv_path is None else str(csv_path),
        },
    )
