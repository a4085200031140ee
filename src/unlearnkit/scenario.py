"""Forget requests and scenarios: dataset + request + seed -> index splits.

A :class:`ForgetRequest` says *what* to forget, as a spec string or in Python:

========================  ==============================================================
``random:0.1``            a random 10% of the training set (a float in (0, 1) is a fraction)
``random:300``            300 random training samples (an integer is a count)
``class:3`` / ``class:3,7``  every training sample of class 3 (or of classes 3 and 7)
``subclass:baby``         a fine class within its coarse label (CIFAR-20 style)
``indices:PATH``          training indices listed in a file (text, one or more per line, or ``.npy``)
``group:NAME=VALUE``      training samples whose attribute ``NAME`` equals ``VALUE``
========================  ==============================================================

A :class:`Scenario` applies a request to a dataset with a seed and holds the splits: ``forget``,
``retain`` (the rest of the training set), ``val`` (held out from training), ``test``, and, for class,
subclass and group requests, ``forget_test`` / ``retain_test`` (test samples of the forgotten vs the
kept part). The exact indices are stored with every run (see :meth:`Scenario.splits_dict`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset, Subset

from unlearnkit.data import DatasetBundle, load_dataset
from unlearnkit.errors import UnlearnkitError

Kind = Literal["random", "class", "subclass", "indices", "group"]
KINDS: tuple[str, ...] = ("random", "class", "subclass", "indices", "group")


@dataclass(frozen=True)
class ForgetRequest:
    """What to forget. Build with :meth:`parse` or directly, e.g. ``ForgetRequest("class", classes=(3,))``."""

    kind: Kind
    fraction: float | None = None
    count: int | None = None
    classes: tuple[int, ...] = ()
    subclass: str | None = None
    path: str | None = None
    group: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UnlearnkitError(f"unknown forget kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind == "random":
            if (self.fraction is None) == (self.count is None):
                raise UnlearnkitError("a random request needs exactly one of fraction or count")
            if self.fraction is not None and not 0.0 < self.fraction < 1.0:
                raise UnlearnkitError(f"forget fraction must be in (0, 1), got {self.fraction}")
            if self.count is not None and self.count < 1:
                raise UnlearnkitError(f"forget count must be >= 1, got {self.count}")
        if self.kind == "class":
            if not self.classes:
                raise UnlearnkitError("a class request needs at least one class, e.g. class:3")
            if len(set(self.classes)) != len(self.classes):
                raise UnlearnkitError(f"a class is listed twice in class:{','.join(map(str, self.classes))}")
        if self.kind == "subclass" and not self.subclass:
            raise UnlearnkitError("a subclass request needs a fine class name, e.g. subclass:baby")
        if self.kind == "indices" and not self.path:
            raise UnlearnkitError("an indices request needs a file path, e.g. indices:forget.txt")
        if self.kind == "group" and (not self.group or not self.group[0]):
            raise UnlearnkitError("a group request needs NAME=VALUE, e.g. group:gender=female")

    @classmethod
    def parse(cls, spec: str | ForgetRequest) -> ForgetRequest:
        """Parse a spec string such as ``"class:3,7"`` or ``"random:0.1"``."""
        if isinstance(spec, ForgetRequest):
            return spec
        if not isinstance(spec, str) or ":" not in spec:
            raise UnlearnkitError(
                f"malformed forget spec {spec!r}; expected KIND:VALUE with KIND one of {', '.join(KINDS)}"
            )
        kind, _, value = spec.partition(":")
        kind, value = kind.strip(), value.strip()
        if kind not in KINDS:
            from unlearnkit.errors import suggest

            raise UnlearnkitError(
                f"unknown forget kind {kind!r}{suggest(kind, KINDS)} in {spec!r}; the kinds: {', '.join(KINDS)}"
            )
        if not value:
            raise UnlearnkitError(f"forget spec {spec!r} has no value after ':'")
        if kind == "random":
            try:
                num = float(value)
            except ValueError:
                num = float("nan")
            if not math.isfinite(num):
                raise UnlearnkitError(f"random:{value}: expected a fraction in (0, 1) or a count")
            is_count = "." not in value and "e" not in value.lower()
            if is_count:
                return cls("random", count=int(num))
            if num >= 1.0 and float(num).is_integer():
                raise UnlearnkitError(f"forget fraction must be in (0, 1), got {value} (write a count as an integer)")
            return cls("random", fraction=num)
        if kind == "class":
            try:
                classes = tuple(int(c) for c in value.split(","))
            except ValueError:
                raise UnlearnkitError(f"class:{value}: classes must be integers, e.g. class:3,7") from None
            return cls("class", classes=classes)
        if kind == "subclass":
            return cls("subclass", subclass=value)
        if kind == "indices":
            return cls("indices", path=value)
        name, eq, val = value.partition("=")
        if not eq:
            raise UnlearnkitError(f"group:{value}: expected NAME=VALUE")
        return cls("group", group=(name.strip(), val.strip()))

    def __str__(self) -> str:
        if self.kind == "random":
            return f"random:{self.fraction}" if self.fraction is not None else f"random:{self.count}"
        if self.kind == "class":
            return "class:" + ",".join(map(str, self.classes))
        if self.kind == "subclass":
            return f"subclass:{self.subclass}"
        if self.kind == "indices":
            return f"indices:{self.path}"
        assert self.group is not None  # guaranteed by __post_init__
        return f"group:{self.group[0]}={self.group[1]}"

    @property
    def is_class_level(self) -> bool:
        """True when the request removes a whole class, fine class or group (forget-test exists)."""
        return self.kind in ("class", "subclass", "group")


def read_indices_file(path: str | Path) -> np.ndarray:
    """Read integer indices from a text file (whitespace/comma separated) or a ``.npy`` file."""
    p = Path(path)
    if not p.is_file():
        raise UnlearnkitError(f"indices file not found: {p}")
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise UnlearnkitError(f"indices file {p} is not a plain .npy array: {e}") from None
        if not np.issubdtype(arr.dtype, np.integer):
            raise UnlearnkitError(f"indices in {p} must be integers, got dtype {arr.dtype}")
        return arr.astype(np.int64).ravel()
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise UnlearnkitError(f"indices file {p} is not a text file of integers (nor a .npy array)") from None
    tokens = text.replace(",", " ").split()
    out = []
    for t in tokens:
        try:
            out.append(int(t))
        except ValueError:
            raise UnlearnkitError(f"indices file {p}: {t!r} is not an integer") from None
    return np.asarray(out, dtype=np.int64)


def _class_ids(req: ForgetRequest, bundle: DatasetBundle) -> tuple[int, ...]:
    for c in req.classes:
        if not 0 <= c < bundle.num_classes:
            raise UnlearnkitError(
                f"forget class {c} is not in dataset {bundle.name!r} (classes 0..{bundle.num_classes - 1})"
            )
    return tuple(sorted(req.classes))


class Scenario:
    """A dataset, a forget request and a seed, resolved into index splits.

    Args:
        dataset: a registered dataset name or a :class:`~unlearnkit.data.DatasetBundle`.
        forget: a spec string or a :class:`ForgetRequest`.
        seed: seeds the validation hold-out and random forget sets.
        val_fraction: fraction of the training set held out for validation.
        root: the data folder, passed to the dataset loader (torchvision datasets).
        download: let the loader fetch a torchvision dataset into ``root``.

    Example:
        >>> s = Scenario(dataset="digits", forget="class:3", seed=0)
        >>> int((s.bundle.train_targets[s.forget_idx] == 3).all())
        1
    """

    def __init__(
        self,
        dataset: str | DatasetBundle = "digits",
        forget: str | ForgetRequest = "class:0",
        seed: int = 0,
        *,
        val_fraction: float = 0.1,
        root: str | None = None,
        download: bool = False,
    ) -> None:
        if not 0.0 <= val_fraction < 0.5:
            raise UnlearnkitError(f"val_fraction must be in [0, 0.5), got {val_fraction}")
        self.bundle = dataset if isinstance(dataset, DatasetBundle) else load_dataset(dataset, root, download)
        self.request = ForgetRequest.parse(forget)
        self.seed = int(seed)
        self.val_fraction = float(val_fraction)
        self._split()

    # -- splits -------------------------------------------------------------------------------------
    def _split(self) -> None:
        b, req = self.bundle, self.request
        n_train = len(b.train_targets)
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(n_train)
        n_val = int(round(self.val_fraction * n_train))
        self.val_idx = np.sort(perm[:n_val])
        self.train_idx = np.sort(perm[n_val:])  # D = D_r ∪ D_f
        self.test_idx = np.arange(len(b.test_targets))
        self.forget_classes: tuple[int, ...] = ()
        test_mask: np.ndarray | None = None

        if req.kind == "random":
            k = req.count if req.count is not None else int(round(req.fraction * len(self.train_idx)))
            if k >= len(self.train_idx):
                raise UnlearnkitError(
                    f"forget count {k} must be smaller than the training set ({len(self.train_idx)} samples)"
                )
            forget_mask = np.zeros(n_train, bool)
            forget_mask[rng.choice(self.train_idx, size=max(k, 0), replace=False)] = True
        elif req.kind == "class":
            self.forget_classes = _class_ids(req, b)
            forget_mask = np.isin(b.train_targets, self.forget_classes)
            test_mask = np.isin(b.test_targets, self.forget_classes)
        elif req.kind == "subclass":
            if b.fine_names is None or b.train_fine is None or b.test_fine is None:
                raise UnlearnkitError(f"dataset {b.name!r} has no fine classes; subclass requests need e.g. cifar20")
            if req.subclass not in b.fine_names:
                from unlearnkit.errors import suggest

                raise UnlearnkitError(
                    f"subclass {req.subclass!r} is not in dataset {b.name!r}{suggest(req.subclass, b.fine_names)}"
                )
            fid = b.fine_names.index(req.subclass)
            forget_mask, test_mask = b.train_fine == fid, b.test_fine == fid
        elif req.kind == "group":
            name, value = req.group  # type: ignore[misc]
            if name not in b.train_attributes:
                known = ", ".join(sorted(b.train_attributes)) or "none"
                raise UnlearnkitError(f"dataset {b.name!r} has no attribute {name!r} (attributes: {known})")
            forget_mask = np.asarray([str(v) == value for v in b.train_attributes[name]])
            if name in b.test_attributes:
                test_mask = np.asarray([str(v) == value for v in b.test_attributes[name]])
        else:  # indices, relative to the full training set of the dataset
            idx = read_indices_file(req.path)  # type: ignore[arg-type]
            if idx.size == 0:
                raise UnlearnkitError(f"indices file {req.path} lists no indices: the forget set is empty")
            if idx.min() < 0 or idx.max() >= n_train:
                raise UnlearnkitError(
                    f"indices in {req.path} must be in [0, {n_train}); found {idx.min()}..{idx.max()}"
                )
            if len(np.unique(idx)) != len(idx):
                raise UnlearnkitError(f"indices file {req.path} lists an index more than once")
            if np.isin(idx, self.val_idx).any():
                # requested samples are part of the training set by definition: keep them out of val
                self.val_idx = np.setdiff1d(self.val_idx, idx)
                self.train_idx = np.union1d(self.train_idx, idx)
            forget_mask = np.zeros(n_train, bool)
            forget_mask[idx] = True

        in_train = np.zeros(n_train, bool)
        in_train[self.train_idx] = True
        self.forget_idx = np.flatnonzero(forget_mask & in_train)
        self.retain_idx = np.flatnonzero(~forget_mask & in_train)
        if len(self.forget_idx) == 0:
            raise UnlearnkitError(f"forget request {req} selects no training samples: the forget set is empty")
        if len(self.retain_idx) == 0:
            raise UnlearnkitError(f"forget request {req} selects every training sample: nothing would be retained")
        if test_mask is not None:
            self.forget_test_idx: np.ndarray | None = np.flatnonzero(test_mask)
            self.retain_test_idx: np.ndarray | None = np.flatnonzero(~test_mask)
        else:
            self.forget_test_idx = self.retain_test_idx = None

    # -- datasets -----------------------------------------------------------------------------------
    def _train_subset(self, idx: np.ndarray) -> Dataset:
        return Subset(self.bundle.train, idx.tolist())

    @property
    def forget(self) -> Dataset:
        """D_f: the training samples to forget."""
        return self._train_subset(self.forget_idx)

    @property
    def retain(self) -> Dataset:
        """D_r: the training samples to keep."""
        return self._train_subset(self.retain_idx)

    @property
    def train(self) -> Dataset:
        """D = D_r ∪ D_f: what the original model was trained on."""
        return self._train_subset(self.train_idx)

    @property
    def val(self) -> Dataset:
        """Validation samples held out from training."""
        return self._train_subset(self.val_idx)

    @property
    def test(self) -> Dataset:
        """The dataset's test split."""
        return self.bundle.test

    @property
    def forget_test(self) -> Dataset | None:
        """Test samples of the forgotten class/subclass/group (None for sample-level requests)."""
        return None if self.forget_test_idx is None else Subset(self.bundle.test, self.forget_test_idx.tolist())

    @property
    def retain_test(self) -> Dataset | None:
        """Test samples of the kept classes (None for sample-level requests)."""
        return None if self.retain_test_idx is None else Subset(self.bundle.test, self.retain_test_idx.tolist())

    def split(self, name: str) -> Dataset | None:
        """A split by name: forget, retain, train, val, test, forget_test, retain_test."""
        if name not in SPLITS:
            raise UnlearnkitError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def targets(self, name: str) -> np.ndarray | None:
        """Integer labels of a split, without touching the data."""
        idx = self.split_indices(name)
        if idx is None:
            return None
        src = self.bundle.test_targets if name in ("test", "forget_test", "retain_test") else self.bundle.train_targets
        return src[idx]

    def split_indices(self, name: str) -> np.ndarray | None:
        """Indices of a split into the dataset's train (or, for test splits, test) set."""
        if name not in SPLITS:
            raise UnlearnkitError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, f"{name}_idx")

    def few_shot_forget(self, k: int, *, folder: str | None = None) -> Dataset:
        """The no-retain setting's forget data: ``k`` images of the forgotten class.

        Drawn (seeded) from D_f, or, with ``folder``, loaded from a user's folder of external images of the
        class (see :func:`unlearnkit.data.few_shot.load_external_images`).
        """
        if self.request.kind != "class":
            raise UnlearnkitError(f"few-shot forgetting needs a class request, got {self.request}")
        if k < 1:
            raise UnlearnkitError(f"the number of forget images k must be >= 1, got {k}")
        if folder is not None:
            from unlearnkit.data.few_shot import load_external_images

            ds = load_external_images(folder, self.bundle.in_shape, label=self.forget_classes[0])
            available = len(ds)
            if k > available:
                raise UnlearnkitError(f"k={k} forget images asked for, but {folder} holds only {available}")
            return Subset(ds, np.random.default_rng(self.seed).choice(available, k, replace=False).tolist())
        if k > len(self.forget_idx):
            raise UnlearnkitError(
                f"k={k} forget images asked for, but the forget set holds only {len(self.forget_idx)}"
            )
        pick = np.sort(np.random.default_rng(self.seed + 7).choice(self.forget_idx, k, replace=False))
        return self._train_subset(pick)

    # -- identity -----------------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """What identifies this scenario (goes into every run's config hash)."""
        return {
            "dataset": self.bundle.name,
            "forget": str(self.request),
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "num_classes": self.bundle.num_classes,
            "in_shape": list(self.bundle.in_shape),
            "n_train": len(self.bundle.train_targets),
            "n_test": len(self.bundle.test_targets),
        }

    def splits_dict(self) -> dict[str, list[int] | None]:
        """Every split's exact indices (stored with each run so results trace to their data)."""
        out: dict[str, list[int] | None] = {}
        for name in SPLITS:
            idx = self.split_indices(name)
            out[name] = None if idx is None else idx.tolist()
        return out

    def splits_hash(self) -> str:
        """SHA-256 of :meth:`splits_dict` (short)."""
        blob = json.dumps(self.splits_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"Scenario(dataset={self.bundle.name!r}, forget={str(self.request)!r}, seed={self.seed}, "
            f"|D_f|={len(self.forget_idx)}, |D_r|={len(self.retain_idx)}, |val|={len(self.val_idx)}, "
            f"|test|={len(self.test_idx)})"
        )


SPLITS: tuple[str, ...] = ("forget", "retain", "train", "val", "test", "forget_test", "retain_test")
