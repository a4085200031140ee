"""MNIST, Fashion-MNIST, CIFAR-10/100, CIFAR-20 and SVHN, read through ``torchvision.datasets``.

Each loader is ``fn(root, download=False) -> DatasetBundle``. ``root`` and ``download`` go unchanged to the
torchvision class, so the on-disk layout is torchvision's:

==============  =====================================================================================
``mnist``       ``ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
``fashion_mnist``  ``ROOT/FashionMNIST/raw/`` (same file names)
``cifar10``     ``ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
``cifar100``    ``ROOT/cifar-100-python/{train,test,meta}``
``cifar20``     as ``cifar100``
``svhn``        ``ROOT/{train,test}_32x32.mat``
==============  =====================================================================================

Nothing is downloaded unless ``download=True`` is passed explicitly. A missing ``root``, missing files or
files that fail torchvision's checks (md5 for CIFAR/SVHN) become a one-line
:class:`~unlearnkit.errors.UnlearnkitError`.

Items are float tensors in [0, 1], channels first (``1x28x28`` for the MNISTs, ``3x32x32`` otherwise), with
no normalisation. The arrays torchvision already holds in memory are kept as ``uint8`` in a
:class:`UInt8ImageDataset` (CIFAR's 60,000 images take 180 MB this way, four times less than float32) and
scaled by 1/255 when indexed.

``cifar20`` is CIFAR-100 relabelled to its 20 coarse superclasses; the 100 fine labels are kept as
``train_fine``/``test_fine`` with their names from CIFAR-100's ``meta`` file as ``fine_names``, so
``subclass:baby`` requests work. The fine -> coarse assignment is the fixed table published with the
dataset (:data:`CIFAR100_SUPERCLASSES`), matched to the meta file's fine class names *by name*, so it does
not depend on the label order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnkit.data._base import ArrayDataset, DatasetBundle, register_dataset
from unlearnkit.errors import UnlearnkitError

#: CIFAR-100's 20 superclasses (the ``coarse_label_names`` of its meta file, in label order) and the five
#: fine classes of each (https://www.cs.toronto.edu/~kriz/cifar.html), spelled as in ``fine_label_names``.
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

#: where each dataset's files must be under ``root`` (for error messages)
_LAYOUT: dict[str, str] = {
    "mnist": "MNIST/raw/train-images-idx3-ubyte etc.",
    "fashion_mnist": "FashionMNIST/raw/train-images-idx3-ubyte etc.",
    "cifar10": "cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta",
    "cifar100": "cifar-100-python/ with train, test, meta",
    "cifar20": "cifar-100-python/ with train, test, meta",
    "svhn": "train_32x32.mat and test_32x32.mat",
}


def uint8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """Scale a ``uint8`` image tensor to float32 in [0, 1] (``x / 255``); the one conversion used everywhere."""
    return x.to(torch.float32).div_(255.0)


class UInt8ImageDataset(ArrayDataset):
    """An in-memory image dataset stored as ``uint8`` and served as floats in [0, 1].

    ``x`` is a ``uint8`` tensor ``[n, C, H, W]`` and ``y`` a ``long`` tensor ``[n]``. Indexing returns
    ``(x[i] / 255 as float32, int(y[i]))``, exactly what an :class:`ArrayDataset` of the scaled floats would
    return. It subclasses :class:`ArrayDataset` so the engine's batched fast path applies; that path must
    scale ``uint8`` batches the same way (:func:`uint8_to_unit`).

    Args:
        x: ``uint8`` images, channels first.
        y: integer labels, one per image.

    Raises:
        UnlearnkitError: if ``x`` is not ``uint8`` or the lengths differ.
    """

    #: multiply ``x`` by this to get the float inputs (documentation of the storage convention)
    scale: float = 1.0 / 255.0

    def __init__(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> None:
        # ArrayDataset.__init__ is not called on purpose: it would cast x to float32 (4x the memory).
        x = torch.as_tensor(x)
        if x.dtype != torch.uint8:
            raise UnlearnkitError(f"UInt8ImageDataset needs uint8 images, got {x.dtype}")
        y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        if len(x) != len(y):
            raise UnlearnkitError(f"images and labels differ in length: {len(x)} vs {len(y)}")
        self.x = x
        self.y = y

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return uint8_to_unit(self.x[i]), int(self.y[i])


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= 300 else msg[:297] + "..."


def _torchvision_reason(e: BaseException) -> str:
    """torchvision's reason in one line, without its own advice (it names ``download=True`` only)."""
    return _one_line(e).replace(" You can use download=True to download it", "").strip() or type(e).__name__


def _need_root(name: str, root: str | Path | None) -> str:
    if root is None or str(root) == "":
        raise UnlearnkitError(
            f"dataset {name!r} needs --data-root DIR (a folder holding {_LAYOUT[name]}, or where --download "
            f"(download=True in Python) may put it)"
        )
    return str(Path(root).expanduser())


def _open(name: str, root: str, make: Callable[[], Any]) -> Any:
    """Build a torchvision dataset, turning any failure to read the user's files into one clear line."""
    try:
        return make()
    except UnlearnkitError:
        raise
    except Exception as e:  # torchvision raises RuntimeError, OSError, pickle/scipy/assert errors, ...
        raise UnlearnkitError(
            f"dataset {name!r}: cannot load from {root}: {_torchvision_reason(e)} (expected {_LAYOUT[name]} under "
            f"that root; pass --download, or download=True in Python, to fetch it)"
        ) from e


def _as_uint8(name: str, data: Any) -> torch.Tensor:
    arr = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if arr.dtype != np.uint8:
        raise UnlearnkitError(f"dataset {name!r}: expected uint8 images on disk, got {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _bundle(
    name: str,
    splits: tuple[tuple[torch.Tensor, np.ndarray], tuple[torch.Tensor, np.ndarray]],
    class_names: list[str],
    meta: dict[str, Any],
    **extra: Any,
) -> DatasetBundle:
    (xtr, ytr), (xte, yte) = splits
    return DatasetBundle(
        name=name,
        train=UInt8ImageDataset(xtr, ytr),
        test=UInt8ImageDataset(xte, yte),
        train_targets=ytr,
        test_targets=yte,
        num_classes=len(class_names),
        in_shape=tuple(int(s) for s in xtr.shape[1:]),
        class_names=class_names,
        meta=meta,
        **extra,
    )


def _train_test(
    name: str, cls_name: str, root: str | Path | None, download: bool, to_nchw: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[list, list[str], str]:
    """``([(x_train, y_train), (x_test, y_test)], classes, root)`` of a torchvision class taking ``train=``;
    ``to_nchw`` brings its ``uint8`` images to ``[n, C, H, W]``."""
    r = _need_root(name, root)
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    out = []
    for train in (True, False):
        ds = _open(name, r, lambda train=train: cls(root=r, train=train, download=download))
        out.append((to_nchw(_as_uint8(name, ds.data)), np.asarray(ds.targets, dtype=np.int64)))
    return out, list(ds.classes), r


def _mnist_like(name: str, cls_name: str, root: str | Path | None, download: bool) -> DatasetBundle:
    out, classes, r = _train_test(name, cls_name, root, download, lambda x: x.unsqueeze(1))  # [n, 1, 28, 28]
    names = [str(i) for i in range(10)] if cls_name == "MNIST" else classes
    return _bundle(name, (out[0], out[1]), names, {"source": f"torchvision.datasets.{cls_name}", "root": r})


def _cifar(name: str, cls_name: str, root: str | Path | None, download: bool) -> tuple[list, list[str], str]:
    """:func:`_train_test` for CIFAR, whose images are stored HWC: turned to ``[n, 3, 32, 32]``."""
    return _train_test(name, cls_name, root, download, lambda x: x.permute(0, 3, 1, 2).contiguous())


@register_dataset("mnist")
def mnist(root: str | None = None, download: bool = False) -> DatasetBundle:
    """Load MNIST (60,000 train / 10,000 test) as ``1x28x28`` images in [0, 1].

    Args:
        root: folder holding ``MNIST/raw/`` (torchvision's layout).
        download: let torchvision download the files into ``root`` if missing.

    Raises:
        UnlearnkitError: if ``root`` is None or the files are missing or unreadable.
    """
    return _mnist_like("mnist", "MNIST", root, download)


@register_dataset("fashion_mnist")
def fashion_mnist(root: str | None = None, download: bool = False) -> DatasetBundle:
    """Load Fashion-MNIST (60,000 train / 10,000 test) as ``1x28x28`` images in [0, 1].

    Args:
        root: folder holding ``FashionMNIST/raw/`` (torchvision's layout).
        download: let torchvision download the files into ``root`` if missing.

    Raises:
        UnlearnkitError: if ``root`` is None or the files are missing or unreadable.
    """
    return _mnist_like("fashion_mnist", "FashionMNIST", root, download)


@register_dataset("cifar10")
def cifar10(root: str | None = None, download: bool = False) -> DatasetBundle:
    """Load CIFAR-10 (50,000 train / 10,000 test) as ``3x32x32`` images in [0, 1].

    Args:
        root: folder holding ``cifar-10-batches-py/``.
        download: let torchvision download and extract the archive into ``root`` if missing.

    Raises:
        UnlearnkitError: if ``root`` is None or the files are missing, corrupt or unreadable.
    """
    splits, names, r = _cifar("cifar10", "CIFAR10", root, download)
    return _bundle("cifar10", (splits[0], splits[1]), names, {"source": "torchvision.datasets.CIFAR10", "root": r})


@register_dataset("cifar100")
def cifar100(root: str | None = None, download: bool = False) -> DatasetBundle:
    """Load CIFAR-100 with its 100 fine labels (names such as ``apple``, ``baby`` as ``class_names``).

    Args:
        root: folder holding ``cifar-100-python/``.
        download: let torchvision download and extract the archive into ``root`` if missing.

    Raises:
        UnlearnkitError: if ``root`` is None or the files are missing, corrupt or unreadable.
    """
    splits, names, r = _cifar("cifar100", "CIFAR100", root, download)
    return _bundle("cifar100", (splits[0], splits[1]), names, {"source": "torchvision.datasets.CIFAR100", "root": r})


def cifar100_fine_to_coarse(fine_names: list[str]) -> np.ndarray:
    """Coarse (superclass) label of each fine CIFAR-100 class, matched by name.

    Args:
        fine_names: the fine class names in label order (CIFAR-100's ``fine_label_names``).

    Returns:
        ``int64`` array ``m`` with ``m[fine] = coarse``, coarse labels indexing ``list(CIFAR100_SUPERCLASSES)``.

    Raises:
        UnlearnkitError: if the names are not exactly CIFAR-100's 100 fine classes.
    """
    lookup = {f: c for c, (_, fines) in enumerate(CIFAR100_SUPERCLASSES.items()) for f in fines}
    unknown = [f for f in fine_names if f not in lookup]
    if unknown or len(set(fine_names)) != len(lookup):
        raise UnlearnkitError(
            f"cifar20: the CIFAR-100 meta file does not list the 100 known fine classes "
            f"(unknown: {', '.join(map(repr, unknown[:5])) or 'none'}; {len(set(fine_names))} distinct names)"
        )
    return np.asarray([lookup[f] for f in fine_names], dtype=np.int64)


@register_dataset("cifar20")
def cifar20(root: str | None = None, download: bool = False) -> DatasetBundle:
    """Load CIFAR-100 labelled by its 20 superclasses, keeping the fine classes for subclass forgetting.

    ``class_names`` are the superclass names (``people``, ``vehicles_1``, ...); ``train_fine``/``test_fine``
    hold the 100 fine labels and ``fine_names`` their names from the meta file, so ``subclass:baby`` forgets
    the babies within ``people``.

    Args:
        root: folder holding ``cifar-100-python/``.
        download: let torchvision download and extract the archive into ``root`` if missing.

    Raises:
        UnlearnkitError: if ``root`` is None or the files are missing, corrupt or unreadable.
    """
    splits, fine_names, r = _cifar("cifar20", "CIFAR100", root, download)
    to_coarse = cifar100_fine_to_coarse(fine_names)
    (xtr, ftr), (xte, fte) = splits
    return _bundle(
        "cifar20",
        ((xtr, to_coarse[ftr]), (xte, to_coarse[fte])),
        list(CIFAR100_SUPERCLASSES),
        {"source": "torchvision.datasets.CIFAR100", "root": r, "labels": "coarse (20 superclasses)"},
        train_fine=ftr,
        test_fine=fte,
        fine_names=fine_names,
    )


@register_dataset("svhn")
def svhn(root: str | None = None, download: bool = False) -> DatasetBundle:
    """Load SVHN's ``train`` (73,257) and ``test`` (26,032) splits as ``3x32x32`` images in [0, 1].

    Labels are the digits 0-9 (torchvision maps the files' label 10 to 0); the ``extra`` split is not used.

    Args:
        root: folder holding ``train_32x32.mat`` and ``test_32x32.mat``.
        download: let torchvision download the files into ``root`` if missing.

    Raises:
        UnlearnkitError: if ``root`` is None or the files are missing, corrupt or unreadable.
    """
    r = _need_root("svhn", root)
    import torchvision.datasets as tvd

    out = []
    for split in ("train", "test"):
        ds = _open("svhn", r, lambda split=split: tvd.SVHN(root=r, split=split, download=download))
        out.append((_as_uint8("svhn", ds.data), np.asarray(ds.labels, dtype=np.int64)))  # already [n, 3, 32, 32]
    names = [str(i) for i in range(10)]
    return _bundle("svhn", (out[0], out[1]), names, {"source": "torchvision.datasets.SVHN", "root": r})
