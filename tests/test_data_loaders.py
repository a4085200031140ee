"""The torchvision-backed and image-folder loaders, on tiny files written in the real on-disk formats.

Nothing is downloaded: every test writes MNIST idx files, CIFAR pickle batches, SVHN ``.mat`` files or PNGs
into ``tmp_path`` and loads them through the same loader code (and the same torchvision classes) users run.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unlearnkit as uk
from unlearnkit.data import ArrayDataset, list_datasets, load_dataset
from unlearnkit.data.image_folder import image_folder
from unlearnkit.data.torchvision_sets import (
    CIFAR100_SUPERCLASSES,
    UInt8ImageDataset,
    cifar20,
    cifar100_fine_to_coarse,
)
from unlearnkit.errors import UnlearnkitError

TORCHVISION_SETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "cifar20", "svhn")

# CIFAR-100's fine_label_names in label order (alphabetical), as in the official meta file.
CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
# The coarse label of each fine label, by index, as commonly tabulated from the dataset's coarse_labels field:
# an index-based table written independently of the loader's name-based one, to cross-check it.
CIFAR100_COARSE_OF_FINE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip

KNOWN_SUPERCLASS = {
    "baby": "people",
    "apple": "fruit_and_vegetables",
    "whale": "aquatic_mammals",
    "lawn_mower": "vehicles_2",
    "maple_tree": "trees",
    "keyboard": "household_electrical_devices",
}

# -- writers for the real formats ------------------------------------------------------------------------


def _write_idx(path: Path, arr: np.ndarray) -> None:
    """An idx (SN3 "Pascal Vincent") file of uint8: magic 0x08<ndim>, big-endian dims, then the bytes."""
    header = struct.pack(">I", 0x0800 + arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, rng: np.random.Generator, n_train: int = 20, n_test: int = 10) -> dict:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[0, 0, 0], x[0, 0, 1] = 0, 255
        y = np.arange(n, dtype=np.uint8) % 10
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        out[prefix] = (x, y)
    return out


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar10(root: Path, rng: np.random.Generator, per_batch: int = 4) -> dict:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    out = {"train": [], "test": None}
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for b, name in enumerate(names):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)  # rows: R(32x32) G B, row-major
        labels = [(b * per_batch + i) % 10 for i in range(per_batch)]
        _pickle(d / name, {"batch_label": name, "labels": labels, "data": data, "filenames": ["x.png"] * per_batch})
        if name == "test_batch":
            out["test"] = (data, labels)
        else:
            out["train"].append((data, labels))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(d / "batches.meta", {"label_names": classes, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return out


def _write_cifar100(root: Path, rng: np.random.Generator, n_train: int = 200, n_test: int = 100) -> dict:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [i % 100 for i in range(n)]
        coarse = [CIFAR100_COARSE_OF_FINE[f] for f in fine]
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        _pickle(
            d / name,
            {
                "filenames": ["x.png"] * n,
                "batch_label": name,
                "fine_labels": fine,
                "coarse_labels": coarse,
                "data": data,
            },
        )
        out[name] = (data, fine, coarse)
    _pickle(d / "meta", {"fine_label_names": CIFAR100_FINE, "coarse_label_names": list(CIFAR100_SUPERCLASSES)})
    return out


def _write_svhn(root: Path, rng: np.random.Generator) -> dict:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", 12), ("test", 6)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # H, W, C, n as in the official files
        y = (np.arange(n, dtype=np.uint8) % 10 + 1).reshape(n, 1)  # 1..10, where 10 is the digit 0
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = (x, y)
    return out


@pytest.fixture
def no_md5(monkeypatch):
    """Skip torchvision's md5 comparison (test only).

    torchvision checks CIFAR and SVHN files against the md5 sums of the full official files, which tiny files in
    the same format cannot match. Only the checksum comparison is replaced: the files must still exist.
    """
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.svhn as tv_svhn

    def exists_only(fpath, md5=None):
        return os.path.isfile(fpath)

    monkeypatch.setattr(tv_cifar, "check_integrity", exists_only)
    monkeypatch.setattr(tv_svhn, "check_integrity", exists_only)


def _check_images(bundle, shape: tuple[int, ...]) -> None:
    assert bundle.in_shape == shape
    for ds in (bundle.train, bundle.test):
        for i in (0, len(ds) - 1):
            x, y = ds[i]
            assert x.dtype == torch.float32
            assert tuple(x.shape) == shape
            assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
            assert isinstance(y, int)
    assert len(bundle.train) == len(bundle.train_targets)
    assert len(bundle.test) == len(bundle.test_targets)


def _one_line_error(fn, *args, match: str | None = None, **kwargs) -> str:
    with pytest.raises(UnlearnkitError, match=match) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# -- registry and the uint8 dataset ------------------------------------------------------------------------


def test_all_loaders_registered():
    names = list_datasets()
    for name in (*TORCHVISION_SETS, "image_folder"):
        assert name in names


def test_uint8_dataset_scales_on_indexing():
    x = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    ds = UInt8ImageDataset(x, [3])
    assert isinstance(ds, ArrayDataset)
    assert ds.x.dtype == torch.uint8  # stored compactly
    xi, yi = ds[0]
    assert yi == 3 and xi.dtype == torch.float32
    torch.testing.assert_close(xi, torch.tensor([[[0.0, 1.0], [0.2, 0.4]]]))
    with pytest.raises(UnlearnkitError):
        UInt8ImageDataset(x.float(), [3])
    with pytest.raises(UnlearnkitError):
        UInt8ImageDataset(x, [3, 4])


# -- MNIST / Fashion-MNIST ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_from_idx_files(tmp_path, name, folder):
    written = _write_mnist(tmp_path, folder, np.random.default_rng(0))
    b = load_dataset(name, root=str(tmp_path))
    _check_images(b, (1, 28, 28))
    assert b.num_classes == 10 and len(b.class_names) == 10
    assert len(b.train) == 20 and len(b.test) == 10
    xtr, ytr = written["train"]
    np.testing.assert_array_equal(b.train_targets, ytr)
    np.testing.assert_array_equal(b.test_targets, written["t10k"][1])
    torch.testing.assert_close(b.train[3][0], torch.from_numpy(xtr[3]).float().div(255).unsqueeze(0))
    assert float(b.train[0][0][0, 0, 0]) == 0.0 and float(b.train[0][0][0, 0, 1]) == 1.0
    if name == "fashion_mnist":
        assert b.class_names[0] == "T-shirt/top"
    s = uk.Scenario(b, forget="class:3", seed=0)
    assert (b.train_targets[s.forget_idx] == 3).all()


def test_mnist_missing_or_corrupt_files(tmp_path):
    msg = _one_line_error(load_dataset, "mnist", root=str(tmp_path), match="cannot load")
    assert "MNIST/raw" in msg
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / f).write_bytes(b"\xff" * 16)  # not an idx header
    _one_line_error(load_dataset, "mnist", root=str(tmp_path), match="cannot load")


def test_download_flag_reaches_torchvision(tmp_path, monkeypatch):
    """download=True goes to torchvision (whose fetch is stubbed to fail here: tests never download)."""
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise RuntimeError("offline test: download attempted")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    _one_line_error(load_dataset, "mnist", root=str(tmp_path), download=True, match="download attempted")
    _one_line_error(load_dataset, "cifar10", root=str(tmp_path), download=True, match="download attempted")
    msg = _one_line_error(load_dataset, "cifar10", root=str(tmp_path), download=False)
    assert "download attempted" not in msg


# -- CIFAR-10 / CIFAR-100 / CIFAR-20 ---------------------------------------------------------------------


def test_cifar10_from_pickle_batches(tmp_path, no_md5):
    written = _write_cifar10(tmp_path, np.random.default_rng(1))
    b = load_dataset("cifar10", root=str(tmp_path))
    _check_images(b, (3, 32, 32))
    assert len(b.train) == 20 and len(b.test) == 4
    assert b.class_names[0] == "airplane" and b.num_classes == 10
    train_x = np.concatenate([d for d, _ in written["train"]])
    train_y = np.concatenate([lab for _, lab in written["train"]])
    np.testing.assert_array_equal(b.train_targets, train_y)
    # the stored row is R, G, B planes of 32x32: channels first is a plain reshape
    for i in (0, 7, 19):
        torch.testing.assert_close(b.train[i][0], torch.from_numpy(train_x[i].reshape(3, 32, 32)).float() / 255)
    torch.testing.assert_close(b.test[2][0], torch.from_numpy(written["test"][0][2].reshape(3, 32, 32)).float() / 255)


def test_cifar_md5_mismatch_and_corrupt_pickle(tmp_path, monkeypatch):
    _write_cifar10(tmp_path, np.random.default_rng(1))
    # torchvision's real md5 check rejects files that are not the official ones
    _one_line_error(load_dataset, "cifar10", root=str(tmp_path), match="corrupted")
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    _one_line_error(load_dataset, "cifar10", root=str(tmp_path), match="cannot load")


def test_cifar100_fine_names(tmp_path, no_md5):
    written = _write_cifar100(tmp_path, np.random.default_rng(2))
    b = load_dataset("cifar100", root=str(tmp_path))
    _check_images(b, (3, 32, 32))
    assert b.num_classes == 100 and b.class_names == CIFAR100_FINE
    np.testing.assert_array_equal(b.train_targets, written["train"][1])
    assert b.fine_names is None  # plain CIFAR-100: the fine classes are the classes


def test_fine_to_coarse_table_matches_index_table():
    np.testing.assert_array_equal(cifar100_fine_to_coarse(CIFAR100_FINE), CIFAR100_COARSE_OF_FINE)
    assert sum(len(v) for v in CIFAR100_SUPERCLASSES.values()) == 100
    with pytest.raises(UnlearnkitError):
        cifar100_fine_to_coarse([*CIFAR100_FINE[:-1], "unicorn"])


def test_cifar20_coarse_labels_and_subclass_request(tmp_path, no_md5):
    written = _write_cifar100(tmp_path, np.random.default_rng(3))
    b = cifar20(root=str(tmp_path))
    _check_images(b, (3, 32, 32))
    assert b.num_classes == 20 and len(b.class_names) == 20
    assert b.fine_names == CIFAR100_FINE
    # coarse labels agree with the coarse_labels field of the files
    np.testing.assert_array_equal(b.train_targets, written["train"][2])
    np.testing.assert_array_equal(b.test_targets, written["test"][2])
    np.testing.assert_array_equal(b.train_fine, written["train"][1])
    np.testing.assert_array_equal(b.test_fine, written["test"][1])
    for fine, coarse in KNOWN_SUPERCLASS.items():
        idx = np.flatnonzero(b.train_fine == CIFAR100_FINE.index(fine))
        assert {b.class_names[c] for c in b.train_targets[idx]} == {coarse}

    s = uk.Scenario(b, forget="subclass:baby", seed=0, val_fraction=0.0)
    baby = CIFAR100_FINE.index("baby")
    np.testing.assert_array_equal(s.forget_idx, np.flatnonzero(b.train_fine == baby))
    np.testing.assert_array_equal(s.forget_test_idx, np.flatnonzero(b.test_fine == baby))
    assert (b.train_targets[s.forget_idx] == b.class_names.index("people")).all()
    # other people (boys, girls, ...) stay in the retain set
    assert (b.train_targets[s.retain_idx] == b.class_names.index("people")).sum() > 0


# -- SVHN --------------------------------------------------------------------------------------------------


def test_svhn_from_mat_files(tmp_path, no_md5):
    written = _write_svhn(tmp_path, np.random.default_rng(4))
    b = load_dataset("svhn", root=str(tmp_path))
    _check_images(b, (3, 32, 32))
    assert len(b.train) == 12 and len(b.test) == 6
    x, y = written["train"]
    expected = y.ravel().astype(np.int64) % 10  # the files' 10 is the digit 0
    np.testing.assert_array_equal(b.train_targets, expected)
    assert b.train_targets[9] == 0 and y[9, 0] == 10
    for i in (0, 9):
        torch.testing.assert_close(b.train[i][0], torch.from_numpy(x[..., i].transpose(2, 0, 1).copy()).float() / 255)
        assert b.train[i][1] == expected[i]


def test_svhn_missing_file(tmp_path, no_md5):
    _write_svhn(tmp_path, np.random.default_rng(4))
    (tmp_path / "test_32x32.mat").unlink()
    _one_line_error(load_dataset, "svhn", root=str(tmp_path), match="test_32x32.mat")


# -- shared error cases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*TORCHVISION_SETS, "image_folder"])
def test_root_none_is_one_clear_line(name):
    msg = _one_line_error(load_dataset, name, root=None, match="needs --data-root")
    assert repr(name) in msg


@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_missing_dataset_is_one_clear_line(tmp_path, name):
    msg = _one_line_error(load_dataset, name, root=str(tmp_path / "nothing_here"), match="cannot load")
    assert "download=True" in msg


# -- image folders -------------------------------------------------------------------------------------------


def _write_png(
    path: Path, color: tuple[int, int, int] | int, size: tuple[int, int] = (8, 6), mode: str = "RGB"
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)  # size is (width, height)


def _write_folder(root: Path) -> None:
    for split, n in (("train", 3), ("test", 2)):
        for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            for i in range(n):
                _write_png(root / split / cls / f"{i}.png", color)
    (root / "train" / "cat" / "notes.txt").write_text("ignored: not an image")


def test_image_folder_rgb_with_attributes(tmp_path):
    _write_folder(tmp_path)
    rows = ["split,path,color,size"]
    for split, n in (("train", 3), ("test", 2)):
        for cls, color in (("cat", "red"), ("dog", "blue")):
            rows += [f"{split},{split}/{cls}/{i}.png,{color},{'big' if i == 0 else 'small'}" for i in range(n)]
    (tmp_path / "attributes.csv").write_text("\n".join(rows) + "\n")
    b = load_dataset("image_folder", root=str(tmp_path))
    _check_images(b, (3, 6, 8))
    assert b.class_names == ["cat", "dog"]
    assert len(b.train) == 6 and len(b.test) == 4
    np.testing.assert_array_equal(b.train_targets, [0, 0, 0, 1, 1, 1])
    x, y = b.train[0]
    assert y == 0
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(b.test[3][0][:, 2, 2], torch.tensor([0.0, 0.0, 1.0]))
    assert list(b.train_attributes) == ["color", "size"]
    np.testing.assert_array_equal(b.train_attributes["size"], ["big", "small", "small"] * 2)
    s = uk.Scenario(b, forget="group:size=big", seed=0, val_fraction=0.0)
    np.testing.assert_array_equal(s.forget_idx, [0, 3])
    np.testing.assert_array_equal(s.forget_test_idx, [0, 2])
    s = uk.Scenario(b, forget="group:color=red", seed=0, val_fraction=0.0)
    np.testing.assert_array_equal(s.forget_idx, [0, 1, 2])


def test_image_folder_grayscale_resize_and_explicit_csv(tmp_path):
    for split in ("train", "test"):
        for cls, (v, size) in {"a": (0, (4, 4)), "b": (255, (10, 5))}.items():
            _write_png(tmp_path / split / cls / "0.png", v, size=size, mode="L")
    msg = _one_line_error(image_folder, root=str(tmp_path), match="differ in size")
    assert "image_size" in msg
    csv = tmp_path / "meta" / "groups.csv"
    csv.parent.mkdir()
    csv.write_text("split,path,site\ntrain,a/0.png,x\ntrain,train/b/0.png,y\n")  # test split: no rows
    b = image_folder(root=str(tmp_path), image_size=(7, 9), attributes="meta/groups.csv")
    _check_images(b, (1, 7, 9))
    assert float(b.train[0][0].max()) == 0.0 and float(b.train[1][0].min()) == 1.0
    np.testing.assert_array_equal(b.train_attributes["site"], ["x", "y"])
    assert b.test_attributes == {}


def test_image_folder_errors(tmp_path):
    # empty root, empty train folder, class folder without images
    _one_line_error(image_folder, root=str(tmp_path), match="not a folder")
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    _one_line_error(image_folder, root=str(tmp_path), match="class folder")
    (tmp_path / "train" / "cat").mkdir()
    _one_line_error(image_folder, root=str(tmp_path), match="no valid file")
    _one_line_error(image_folder, root=str(tmp_path / "absent"), match="not a folder")

    good = tmp_path / "good"
    _write_folder(good)
    _write_png(good / "test" / "bird" / "0.png", (0, 255, 0))
    _one_line_error(image_folder, root=str(good), match="bird")
    (good / "test" / "bird" / "0.png").unlink()
    (good / "test" / "bird").rmdir()
    (good / "test" / "dog" / "1.png").write_bytes(b"not a png")
    _one_line_error(image_folder, root=str(good), match="cannot read image")
    _write_png(good / "test" / "dog" / "1.png", (0, 0, 255))

    csv = good / "attributes.csv"
    for text, match in [
        ("path,color\ntrain/cat/0.png,red\n", "columns split,path"),
        ("split,path\ntrain,train/cat/0.png\n", "attribute column"),
        ("split,path,color\nval,train/cat/0.png,red\n", "split must be"),
        ("split,path,color\ntrain,train/cat/9.png,red\n", "no train image"),
        ("split,path,color\ntrain,train/cat/0.png,red\ntrain,cat/0.png,red\n", "listed twice"),
        ("split,path,color\ntrain,train/cat/0.png,red\n", "have no row"),
    ]:
        csv.write_text(text)
        _one_line_error(image_folder, root=str(good), match=match)
    csv.unlink()
    _one_line_error(image_folder, root=str(good), attributes="missing.csv", match="not found")
    _one_line_error(image_folder, root=str(good), image_size=0, match="positive")
    b = image_folder(root=str(good))
    with pytest.raises(UnlearnkitError, match="no attribute"):
        uk.Scenario(b, forget="group:color=red")
    # a test split may lack a class; labels follow the train folder names
    for f in (good / "test" / "cat").iterdir():
        f.unlink()
    (good / "test" / "cat").rmdir()
    b = image_folder(root=str(good))
    assert b.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(b.test_targets, [1, 1])
