"""Forget requests (spec parsing) and scenarios (dataset + request + seed -> index splits)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import unlearnkit as uk
from unlearnkit.errors import UnlearnkitError
from unlearnkit.scenario import SPLITS, ForgetRequest, Scenario, read_indices_file

# -- ForgetRequest.parse ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("random:0.1", ForgetRequest("random", fraction=0.1)),
        ("random:0.5", ForgetRequest("random", fraction=0.5)),
        ("random:1e-3", ForgetRequest("random", fraction=0.001)),
        ("random:300", ForgetRequest("random", count=300)),
        ("random:1", ForgetRequest("random", count=1)),
        ("class:3", ForgetRequest("class", classes=(3,))),
        ("class:3,7", ForgetRequest("class", classes=(3, 7))),
        ("class: 3 , 7 ", ForgetRequest("class", classes=(3, 7))),
        ("subclass:baby", ForgetRequest("subclass", subclass="baby")),
        ("indices:forget.txt", ForgetRequest("indices", path="forget.txt")),
        ("indices:C:/data/f.npy", ForgetRequest("indices", path="C:/data/f.npy")),
        ("group:gender=female", ForgetRequest("group", group=("gender", "female"))),
        ("group: site = 2", ForgetRequest("group", group=("site", "2"))),
    ],
)
def test_parse_every_form(spec, expected):
    req = ForgetRequest.parse(spec)
    assert req == expected
    assert ForgetRequest.parse(str(req)) == req  # str round-trips
    assert ForgetRequest.parse(req) is req


@pytest.mark.parametrize(
    "spec",
    ["random:0.1", "random:300", "class:3", "class:3,7", "subclass:baby", "indices:a/b.txt", "group:g=v"],
)
def test_canonical_spec_str_is_identity(spec):
    assert str(ForgetRequest.parse(spec)) == spec


def test_request_properties():
    assert ForgetRequest.parse("class:1").is_class_level
    assert ForgetRequest.parse("group:a=b").is_class_level
    assert not ForgetRequest.parse("random:0.2").is_class_level
    assert not ForgetRequest.parse("indices:x").is_class_level


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("clas:3", "did you mean 'class'"),
        ("randon:0.1", "did you mean 'random'"),
        ("bogus:1", "unknown forget kind 'bogus'"),
        ("class3", "malformed"),
        ("", "malformed"),
        ("random:1.5", r"\(0, 1\)"),
        ("random:1.0", r"\(0, 1\)"),
        ("random:0", ">= 1"),
        ("random:0.0", r"\(0, 1\)"),
        ("random:-0.1", r"\(0, 1\)"),
        ("random:-5", ">= 1"),
        ("random:abc", "random:abc"),
        ("random:nan", "random"),
        ("random:inf", "random"),
        ("random:-inf", "random"),
        ("class:x", "integers"),
        ("class:3.5", "integers"),
        ("class:3,", "integers"),
        ("class:3,3", "twice"),
        ("group:nokey", "NAME=VALUE"),
        ("group:=x", "NAME=VALUE"),
        ("class:", "no value"),
        ("random:", "no value"),
        ("subclass:", "no value"),
        ("indices:  ", "no value"),
        ("group:", "no value"),
    ],
)
def test_bad_specs_raise(spec, match):
    with pytest.raises(UnlearnkitError, match=match):
        ForgetRequest.parse(spec)


def test_non_string_spec_raises():
    with pytest.raises(UnlearnkitError):
        ForgetRequest.parse(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "nope"},
        {"kind": "random"},
        {"kind": "random", "fraction": 0.1, "count": 3},
        {"kind": "class"},
        {"kind": "subclass"},
        {"kind": "indices"},
        {"kind": "group", "group": ("", "x")},
    ],
)
def test_direct_construction_is_validated(kwargs):
    with pytest.raises(UnlearnkitError):
        ForgetRequest(**kwargs)


# -- Scenario on digits ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> uk.DatasetBundle:
    return uk.load_dataset("digits")


def _assert_partition(s: Scenario) -> None:
    n_train = len(s.bundle.train_targets)
    assert np.intersect1d(s.forget_idx, s.retain_idx).size == 0
    assert np.array_equal(np.union1d(s.forget_idx, s.retain_idx), s.train_idx)
    assert np.intersect1d(s.train_idx, s.val_idx).size == 0
    assert np.array_equal(np.union1d(s.train_idx, s.val_idx), np.arange(n_train))
    assert np.array_equal(s.test_idx, np.arange(len(s.bundle.test_targets)))
    assert len(s.forget_idx) > 0 and len(s.retain_idx) > 0


def test_class_request_splits(digits):
    s = Scenario(digits, "class:3", seed=0)
    y, yt = digits.train_targets, digits.test_targets
    assert s.forget_classes == (3,)
    assert (y[s.forget_idx] == 3).all()
    assert not (y[s.retain_idx] == 3).any()
    assert np.array_equal(s.forget_idx, np.intersect1d(np.flatnonzero(y == 3), s.train_idx))  # every one of them
    assert (yt[s.forget_test_idx] == 3).all() and not (yt[s.retain_test_idx] == 3).any()
    assert np.intersect1d(s.forget_test_idx, s.retain_test_idx).size == 0
    assert np.array_equal(np.union1d(s.forget_test_idx, s.retain_test_idx), s.test_idx)
    _assert_partition(s)
    # the datasets are the indexed samples, and targets() reads the right labels
    assert len(s.forget) == len(s.forget_idx) and len(s.forget_test) == len(s.forget_test_idx)
    x0, y0 = s.forget[0]
    xr, yr = digits.train[int(s.forget_idx[0])]
    assert torch.equal(x0, xr) and y0 == yr == 3
    assert np.array_equal(s.targets("retain_test"), yt[s.retain_test_idx])
    assert len(s.val_idx) == round(0.1 * len(y))


def test_multi_class_request(digits):
    s = Scenario(digits, "class:7,2", seed=0)
    assert s.forget_classes == (2, 7)
    assert set(np.unique(digits.train_targets[s.forget_idx])) == {2, 7}
    assert set(np.unique(digits.test_targets[s.forget_test_idx])) == {2, 7}
    _assert_partition(s)


@pytest.mark.parametrize(("spec", "size"), [("random:0.1", lambda n: round(0.1 * n)), ("random:0.25", None),
                                            ("random:50", lambda n: 50), ("random:1", lambda n: 1)])  # fmt: skip
def test_random_request_sizes(digits, spec, size):
    s = Scenario(digits, spec, seed=0)
    n = len(s.train_idx)
    expected = size(n) if size else round(0.25 * n)
    assert len(s.forget_idx) == expected
    assert s.forget_test is None and s.retain_test is None and s.forget_classes == ()
    _assert_partition(s)


def test_random_count_must_be_smaller_than_train(digits):
    n = len(Scenario(digits, "random:1", seed=0).train_idx)
    Scenario(digits, f"random:{n - 1}", seed=0)  # the largest allowed
    for k in (n, n + 1, 10**6):
        with pytest.raises(UnlearnkitError, match="smaller than the training set"):
            Scenario(digits, f"random:{k}", seed=0)


@pytest.mark.parametrize("spec", ["class:10", "class:-1", "class:3,10"])
def test_class_not_in_dataset(digits, spec):
    with pytest.raises(UnlearnkitError, match="not in dataset 'digits'"):
        Scenario(digits, spec, seed=0)


def test_subclass_on_digits_errors(digits):
    with pytest.raises(UnlearnkitError, match="no fine classes"):
        Scenario(digits, "subclass:baby", seed=0)


def test_group_on_digits_errors(digits):
    with pytest.raises(UnlearnkitError, match="no attribute 'colour'"):
        Scenario(digits, "group:colour=red", seed=0)


def test_bad_val_fraction(digits):
    for v in (-0.1, 0.5, 0.9):
        with pytest.raises(UnlearnkitError, match="val_fraction"):
            Scenario(digits, "class:3", val_fraction=v)


def test_unknown_split_name(digits):
    s = Scenario(digits, "class:3", seed=0)
    with pytest.raises(UnlearnkitError, match="unknown split 'forgett'"):
        s.split("forgett")
    with pytest.raises(UnlearnkitError, match="unknown split"):
        s.split_indices("nope")


def test_same_seed_same_splits_different_seed_different(digits):
    a, b = Scenario(digits, "random:0.1", seed=0), Scenario(digits, "random:0.1", seed=0)
    c = Scenario(digits, "random:0.1", seed=1)
    assert a.splits_dict() == b.splits_dict() and a.splits_hash() == b.splits_hash()
    assert not np.array_equal(a.val_idx, c.val_idx)
    assert not np.array_equal(a.forget_idx, c.forget_idx)
    assert a.splits_hash() != c.splits_hash()
    assert set(a.splits_dict()) == set(SPLITS)
    assert a.spec() == b.spec() and a.spec()["seed"] == 0 and c.spec()["seed"] == 1
    # a class request differs across seeds only through the validation hold-out
    d, e = Scenario(digits, "class:3", seed=0), Scenario(digits, "class:3", seed=1)
    assert not np.array_equal(d.val_idx, e.val_idx)
    assert np.array_equal(d.forget_test_idx, e.forget_test_idx)


# -- indices:PATH -------------------------------------------------------------------------------------------


def test_indices_text_file(digits, tmp_path):
    base = Scenario(digits, "class:3", seed=0)
    in_val = int(base.val_idx[0])
    chosen = sorted({int(base.train_idx[0]), int(base.train_idx[5]), int(base.train_idx[40]), in_val})
    p = tmp_path / "forget.txt"
    p.write_text(f"{chosen[0]} {chosen[1]},{chosen[2]}\n\n{chosen[3]}\n")
    s = Scenario(digits, f"indices:{p}", seed=0)
    assert s.forget_idx.tolist() == chosen
    assert in_val not in s.val_idx  # a requested sample was trained on by definition: moved out of val
    assert s.forget_test is None
    _assert_partition(s)


def test_indices_npy_file(digits, tmp_path):
    p = tmp_path / "forget.npy"
    np.save(p, np.array([[10, 3], [7, 200]], dtype=np.int32))
    s = Scenario(digits, f"indices:{p}", seed=0)
    assert s.forget_idx.tolist() == [3, 7, 10, 200]
    _assert_partition(s)
    assert read_indices_file(p).dtype == np.int64


class _PlantsMarker:
    """Unpickling this object creates a marker file: proof that a loader unpickled it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write(tmp_path, name: str, content) -> str:
    p = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(p, content, allow_pickle=content.dtype == object)
    elif isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return str(p)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("big.txt", "1 2 1347", r"must be in \[0, 1347\)"),
        ("neg.txt", "-1 5", r"must be in \[0, 1347\)"),
        ("big.npy", np.array([0, 99999]), r"must be in \[0, 1347\)"),
        ("dup.txt", "4 5 4", "more than once"),
        ("dup.npy", np.array([4, 4]), "more than once"),
        ("word.txt", "1 2 three", "'three' is not an integer"),
        ("float.txt", "1 2.0", "not an integer"),
        ("float.npy", np.array([1.0, 2.0]), "must be integers"),
        ("bool.npy", np.array([True, False]), "must be integers"),
        ("empty.txt", "", "no indices"),
        ("blank.txt", " \n\n ,", "no indices"),
        ("empty.npy", np.array([], dtype=np.int64), "no indices"),
        ("binary.txt", b"\xff\xfe\x00\x81garbage", "indices"),
        ("fake.npy", b"not a numpy file at all", "indices"),
    ],
)
def test_bad_indices_files(digits, tmp_path, name, content, match):
    path = _write(tmp_path, name, content)
    with pytest.raises(UnlearnkitError, match=match):
        Scenario(digits, f"indices:{path}", seed=0)


def test_indices_file_missing(digits, tmp_path):
    with pytest.raises(UnlearnkitError, match="not found"):
        Scenario(digits, f"indices:{tmp_path / 'nope.txt'}", seed=0)


def test_indices_every_sample_errors(digits, tmp_path):
    path = _write(tmp_path, "all.npy", np.arange(len(digits.train_targets)))
    with pytest.raises(UnlearnkitError, match="nothing would be retained"):
        Scenario(digits, f"indices:{path}", seed=0)


def test_pickled_npy_is_refused_not_unpickled(digits, tmp_path):
    marker = tmp_path / "unpickled.marker"
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = _PlantsMarker(str(marker)), 3
    path = _write(tmp_path, "evil.npy", arr)
    assert not marker.exists()
    with pytest.raises(UnlearnkitError, match=r"not a plain \.npy"):
        Scenario(digits, f"indices:{path}", seed=0)
    assert not marker.exists(), "the .npy file was unpickled"
    # sanity: unpickling it really would have planted the marker
    np.load(path, allow_pickle=True)
    assert marker.exists()


# -- custom bundles: from_torch and group requests --------------------------------------------------------------


def _toy_bundle(n_train: int = 60, n_test: int = 20) -> uk.DatasetBundle:
    g = torch.Generator().manual_seed(0)
    xtr, xte = torch.randn(n_train, 3, generator=g), torch.randn(n_test, 3, generator=g)
    ytr, yte = torch.arange(n_train) % 4, torch.arange(n_test) % 4
    return uk.from_torch(TensorDataset(xtr, ytr), TensorDataset(xte, yte), name="toy")


def test_from_torch_integer_labels():
    b = _toy_bundle()
    assert b.name == "toy" and b.num_classes == 4 and b.in_shape == (3,)
    assert b.train_targets.dtype == np.int64
    assert np.array_equal(b.train_targets, np.arange(60) % 4)
    assert np.array_equal(b.test_targets, np.arange(20) % 4)
    assert b.class_names == ["0", "1", "2", "3"]
    s = Scenario(b, "class:1", seed=0, val_fraction=0.1)
    assert (b.train_targets[s.forget_idx] == 1).all()
    _assert_partition(s)


def test_from_torch_num_classes_and_float_integer_labels():
    x = torch.randn(8, 2)
    b = uk.from_torch(TensorDataset(x, torch.tensor([0.0, 1.0] * 4)), TensorDataset(x, torch.zeros(8)), num_classes=5)
    assert b.num_classes == 5 and np.array_equal(b.train_targets, [0, 1] * 4)
    with pytest.raises(UnlearnkitError, match="labels"):
        uk.from_torch(TensorDataset(x, torch.arange(8)), TensorDataset(x, torch.arange(8)), num_classes=3)


@pytest.mark.parametrize("where", ["train", "test"])
def test_from_torch_refuses_non_integer_labels(where):
    x = torch.randn(10, 3)
    good, bad = TensorDataset(x, torch.arange(10) % 2), TensorDataset(x, torch.tensor([0.5, 1.2] * 5))
    train, test = (bad, good) if where == "train" else (good, bad)
    with pytest.raises(UnlearnkitError, match=f"{where} labels must be integers"):
        uk.from_torch(train, test)


def test_from_torch_reads_targets_attribute():
    class WithTargets(TensorDataset):
        def __init__(self, x, y):
            super().__init__(x, y)
            self.targets = y.numpy().astype(np.float64) + 0.25  # deliberately non-integer

        def __getitem__(self, i):
            raise AssertionError("labels should be read from .targets, not by iterating")

    x = torch.randn(6, 3)
    with pytest.raises(UnlearnkitError, match="labels must be integers"):
        uk.from_torch(WithTargets(x, torch.arange(6)), TensorDataset(x, torch.arange(6)))


def test_group_request_on_custom_bundle():
    b = dataclasses.replace(
        _toy_bundle(),
        train_attributes={"colour": np.array(["red", "blue", "green"] * 20), "site": np.arange(60) % 2},
        test_attributes={"colour": np.array(["red", "blue"] * 10)},
    )
    s = Scenario(b, "group:colour=red", seed=0, val_fraction=0.1)
    colour = b.train_attributes["colour"]
    assert (colour[s.forget_idx] == "red").all() and not (colour[s.retain_idx] == "red").any()
    assert np.array_equal(s.forget_idx, np.intersect1d(np.flatnonzero(colour == "red"), s.train_idx))
    test_colour = b.test_attributes["colour"]
    assert (test_colour[s.forget_test_idx] == "red").all() and not (test_colour[s.retain_test_idx] == "red").any()
    assert len(s.forget_test_idx) + len(s.retain_test_idx) == 20
    _assert_partition(s)

    # numeric attribute values are matched by their string form; no test attribute -> no forget_test
    s2 = Scenario(b, "group:site=1", seed=0, val_fraction=0.1)
    assert (b.train_attributes["site"][s2.forget_idx] == 1).all()
    assert s2.forget_test is None and s2.retain_test is None

    with pytest.raises(UnlearnkitError, match=r"no attribute 'size' \(attributes: colour, site\)"):
        Scenario(b, "group:size=big", seed=0)
    with pytest.raises(UnlearnkitError, match="forget set is empty"):
        Scenario(b, "group:colour=purple", seed=0)
