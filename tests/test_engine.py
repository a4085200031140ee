"""The engine: seeded training, checkpoints (safetensors only), the model cache, devices, batching."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

import unlearnkit as uk
from unlearnkit.data import ArrayDataset
from unlearnkit.engine import (
    ModelCache,
    TrainConfig,
    cycle,
    default_cache_dir,
    iterate,
    labels_of,
    load_checkpoint,
    make_optimizer,
    predict_logits,
    read_state_dict,
    resolve_device,
    save_checkpoint,
    train_model,
)
from unlearnkit.engine.checkpoint import read_sidecar
from unlearnkit.errors import TrainingDivergedError, UnlearnkitError

CPU = torch.device("cpu")


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: nn.Module | dict, b: nn.Module | dict) -> bool:
    sa = a if isinstance(a, dict) else a.state_dict()
    sb = b if isinstance(b, dict) else b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


# -- seeded training -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_runs(digits_random_scenario):
    """Train the MLP three times: seed 0, seed 0 again, seed 1."""
    cfg = TrainConfig(epochs=3, lr=1e-2)
    return [uk.train("mlp", digits_random_scenario, config=cfg, seed=s, device="cpu", hidden=32) for s in (0, 0, 1)]


def test_same_seed_same_weights(seeded_runs):
    a, b, c = seeded_runs
    assert _same_state(a, b), "two runs with seed 0 gave different weights"
    assert not _same_state(a, c), "seed 1 gave the same weights as seed 0: the seed is ignored"


def test_same_seed_same_metrics(seeded_runs, digits_random_scenario):
    a, b, c = seeded_runs
    torch.manual_seed(0)
    rand = uk.create_model("mlp", 10, (1, 8, 8), hidden=32)
    kw = {"reference": c, "original": c, "random_model": rand, "timing": {"time_s": 1.0, "retrain_time_s": 2.0}}
    ma = uk.evaluate(a, digits_random_scenario, device="cpu", **kw)
    mb = uk.evaluate(b, digits_random_scenario, device="cpu", **kw)
    assert ma == mb, "same seed, different metrics"
    computed = {k: v for k, v in ma.items() if isinstance(v, float)}
    assert {"acc_retain", "acc_forget", "acc_test", "js_divergence", "zrf"} <= set(computed)
    assert uk.evaluate(c, digits_random_scenario, device="cpu", **kw) != ma
    assert computed["acc_test"] > 0.5  # it did learn something in three epochs


def test_train_model_history_and_callback():
    g = torch.Generator().manual_seed(0)
    ds = ArrayDataset(torch.randn(50, 4, generator=g), torch.arange(50) % 3)
    model = nn.Linear(4, 3)
    calls: list[tuple[int, int, float]] = []
    hist = train_model(model, ds, TrainConfig(epochs=3, batch_size=16), device=CPU, on_epoch=lambda *a: calls.append(a))
    assert len(hist) == 3 and all(np.isfinite(hist))
    assert [(e, n) for e, n, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert [loss for _, _, loss in calls] == hist
    assert not model.training
    before = _state(model)
    assert train_model(model, ds, TrainConfig(epochs=0), device=CPU) == []
    assert _same_state(before, model)


class _NaNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * float("nan")


def test_train_model_raises_on_nan_loss():
    ds = ArrayDataset(torch.randn(20, 4), torch.arange(20) % 3)
    model = _NaNNet()
    before = _state(model)
    with pytest.raises(TrainingDivergedError, match=r"nan.*during my-stage"):
        train_model(model, ds, TrainConfig(epochs=2, batch_size=8), device=CPU, where="my-stage")
    assert _same_state(before, model), "a step was taken on a NaN loss"


def test_train_model_raises_on_divergence():
    """A huge learning rate overflows the weights and the loss turns NaN: reported, not trained through."""
    g = torch.Generator().manual_seed(0)
    ds = ArrayDataset(torch.randn(64, 4, generator=g) * 100, torch.arange(64) % 3)
    cfg = TrainConfig(epochs=5, lr=1e38, optimizer="sgd", momentum=0.0, scheduler="none", weight_decay=0.0)
    with pytest.raises(TrainingDivergedError):
        train_model(nn.Linear(4, 3), ds, cfg, device=CPU)


# -- TrainConfig, optimizers, devices ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -0.1}, "lr"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -4}, "batch_size"),
        ({"epochs": -1}, "epochs"),
        ({"optimizer": "adagrad"}, "unknown optimizer 'adagrad'"),
        ({"scheduler": "step"}, "unknown scheduler 'step'"),
        ({"weight_decay": -1e-4}, "weight_decay"),
    ],
)
def test_train_config_validation(kwargs, match):
    with pytest.raises(UnlearnkitError, match=match):
        TrainConfig(**kwargs)


def test_train_config_round_trip():
    cfg = TrainConfig(epochs=3, lr=0.01, optimizer="sgd")
    d = cfg.to_dict()
    assert d["epochs"] == 3 and d["optimizer"] == "sgd"
    assert TrainConfig(**d) == cfg
    json.dumps(d)  # storable


def test_make_optimizer():
    params = [nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer(params, "adam", 0.1), torch.optim.Adam)
    assert isinstance(make_optimizer(params, "adamw", 0.1), torch.optim.AdamW)
    sgd = make_optimizer(params, "sgd", 0.1, weight_decay=0.01, momentum=0.5)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.5
    with pytest.raises(UnlearnkitError, match="unknown optimizer 'rmsprop'"):
        make_optimizer(params, "rmsprop", 0.1)


@pytest.fixture
def no_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_resolve_device_cpu_and_auto(no_accelerators):
    assert resolve_device("cpu") == CPU
    assert resolve_device("CPU") == CPU
    assert resolve_device("auto") == CPU
    dev = torch.device("cpu")
    assert resolve_device(dev) is dev


def test_resolve_device_auto_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "mps"])
def test_resolve_device_unavailable(no_accelerators, name):
    with pytest.raises(UnlearnkitError, match="not available"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "gpu", "xla:0", ""])
def test_resolve_device_unknown(name):
    with pytest.raises(UnlearnkitError, match="unknown device"):
        resolve_device(name)


# -- checkpoints ------------------------------------------------------------------------------------------------


def _cnn(width: int = 4) -> nn.Module:
    return uk.create_model("small_cnn", 10, (1, 8, 8), width=width)


@pytest.fixture
def trained_cnn() -> nn.Module:
    torch.manual_seed(0)
    m = _cnn()
    m.train()
    m(torch.rand(8, 1, 8, 8))  # move the BatchNorm running stats and num_batches_tracked off their defaults
    return m.eval()


def test_checkpoint_round_trip(tmp_path, trained_cnn):
    path = save_checkpoint(trained_cnn, tmp_path / "sub" / "model.safetensors", {"lr": 0.1, "tags": ["a"]})
    assert path.is_file() and (tmp_path / "sub" / "model.json").is_file()
    assert json.loads((tmp_path / "sub" / "model.json").read_text()) == {"lr": 0.1, "tags": ["a"]}
    assert read_sidecar(path) == {"lr": 0.1, "tags": ["a"]}
    torch.manual_seed(1)
    fresh = _cnn()
    assert not _same_state(fresh, trained_cnn)
    assert load_checkpoint(fresh, path) is fresh
    assert _same_state(fresh, trained_cnn)  # weights and buffers, dtypes included
    assert read_state_dict(path)["features.1.num_batches_tracked"].dtype == torch.int64
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), trained_cnn(x))
    assert not list(tmp_path.glob("sub/.*.tmp")), "temporary files were left behind"


def test_checkpoint_without_config_and_bad_suffix(tmp_path, trained_cnn):
    path = save_checkpoint(trained_cnn, tmp_path / "m.safetensors")
    assert read_sidecar(path) == {}
    (tmp_path / "m.json").unlink()
    assert read_sidecar(path) == {}
    with pytest.raises(UnlearnkitError, match=r"\.safetensors"):
        save_checkpoint(trained_cnn, tmp_path / "m.pt")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(UnlearnkitError, match="not valid JSON"):
        read_sidecar(path)


class _PlantsMarker:
    """Unpickling this object creates a marker file: proof that a loader unpickled it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch_save", "pickle"])
def test_loading_a_pickle_never_unpickles(tmp_path, writer):
    marker = tmp_path / "unpickled.marker"
    path = tmp_path / "evil.safetensors"
    payload = {"fc.weight": torch.zeros(2, 2), "evil": _PlantsMarker(str(marker))}
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    model = nn.Sequential(nn.Linear(2, 2))
    before = _state(model)
    with pytest.raises(UnlearnkitError, match="not a safetensors checkpoint"):
        load_checkpoint(model, path)
    with pytest.raises(UnlearnkitError, match="not a safetensors checkpoint"):
        read_state_dict(path)
    assert not marker.exists(), "the checkpoint was unpickled"
    assert _same_state(before, model)
    # sanity: the payload really plants the marker when unpickled
    if writer == "pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(io.BytesIO(path.read_bytes()), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 4, np.random.default_rng(0).bytes(4096), (16).to_bytes(8, "little") + b'{"a": 1}' + b" " * 8],
    ids=["empty", "short", "random", "bad_header"],
)
def test_loading_garbage_raises(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    with pytest.raises(UnlearnkitError, match="not a safetensors checkpoint"):
        load_checkpoint(nn.Linear(2, 2), path)


def test_loading_missing_checkpoint(tmp_path):
    with pytest.raises(UnlearnkitError, match="not found"):
        load_checkpoint(nn.Linear(2, 2), tmp_path / "nope.safetensors")
    with pytest.raises(UnlearnkitError, match="not found"):
        read_state_dict(tmp_path)  # a directory


@pytest.mark.parametrize(
    ("saved", "target", "match"),
    [
        (lambda: uk.create_model("mlp", 10, (1, 8, 8), hidden=16), lambda: uk.create_model("mlp", 10, (1, 8, 8)),
         "shape mismatch"),
        (lambda: uk.create_model("mlp", 10, (1, 8, 8), depth=1), lambda: uk.create_model("mlp", 10, (1, 8, 8)),
         "missing 2 keys"),
        (lambda: uk.create_model("mlp", 10, (1, 8, 8)), lambda: uk.create_model("mlp", 10, (1, 8, 8), depth=1),
         "2 unexpected keys"),
        (lambda: uk.create_model("mlp", 10, (1, 8, 8)), lambda: _cnn(), "does not fit"),
    ],
    ids=["wrong_shapes", "missing_keys", "unexpected_keys", "other_architecture"],
)  # fmt: skip
def test_checkpoint_that_does_not_fit(tmp_path, saved, target, match):
    path = save_checkpoint(saved(), tmp_path / "m.safetensors")
    model = target()
    before = _state(model)
    with pytest.raises(UnlearnkitError, match=match):
        load_checkpoint(model, path)
    assert _same_state(before, model), "a failed load changed the model"


# -- the train-once model cache --------------------------------------------------------------------------------


def test_default_cache_dir_is_isolated(tmp_path_factory):
    assert default_cache_dir() == tmp_path_factory.getbasetemp() / "uk_cache"
    assert ModelCache().root == default_cache_dir() / "models"


def test_model_cache_trains_once_then_loads(tmp_path):
    cache = ModelCache(tmp_path / "cache")
    calls: list[nn.Module] = []

    def make() -> nn.Module:
        return uk.create_model("mlp", 3, (4,), hidden=8)

    def train(model: nn.Module) -> dict:
        calls.append(model)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.5)
        return {"time_s": 1.5}

    key = {"model": "mlp", "seed": 0, "train": TrainConfig(epochs=1).to_dict()}
    assert key not in cache
    m1, info1, now1 = cache.get_or_train(key, make, train)
    assert now1 and info1 == {"time_s": 1.5} and len(calls) == 1 and key in cache
    side = read_sidecar(cache.path(key))
    assert cache.path(key).is_file() and side["key"] == key and side["info"] == {"time_s": 1.5}

    m2, info2, now2 = cache.get_or_train(key, make, train)
    assert not now2 and info2 == {"time_s": 1.5} and len(calls) == 1, "a cache hit trained again"
    assert _same_state(m1, m2) and all((p == 0.5).all() for p in m2.parameters())
    assert m2 is not m1 and not m2.training

    # key order does not matter; a different key trains again
    reordered = dict(reversed(list(key.items())))
    assert cache.get_or_train(reordered, make, train)[2] is False
    assert cache.get_or_train({**key, "seed": 1}, make, train)[2] is True and len(calls) == 2


def test_model_cache_quarantines_a_pickle_and_retrains(tmp_path):
    cache = ModelCache(tmp_path)
    key = {"k": 1}
    cache.path(key).parent.mkdir(parents=True, exist_ok=True)
    cache.path(key).write_bytes(pickle.dumps({"w": torch.zeros(2)}))  # never unpickled
    trained = []
    with pytest.warns(uk.engine.CacheEntryWarning, match="damaged"):
        _, _, now = cache.get_or_train(key, lambda: nn.Linear(2, 2), lambda m: trained.append(m) or {})
    assert now and len(trained) == 1 and len(list(tmp_path.glob("*.quarantined-*"))) == 1


# -- batching ---------------------------------------------------------------------------------------------------


@pytest.fixture
def arrays() -> ArrayDataset:
    x = torch.arange(30, dtype=torch.float32).reshape(15, 2)  # row i is [2i, 2i+1]
    return ArrayDataset(x, torch.arange(15) % 4)


class _PlainDataset(Dataset):
    """The same data through the generic (DataLoader) path."""

    def __init__(self, base: ArrayDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i]


def _collect(batches) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs), torch.cat(ys), [len(y) for y in ys]


def test_iterate_subset_equals_manual_indexing(arrays):
    idx = [9, 2, 14, 0, 7, 3, 11]
    x, y, sizes = _collect(iterate(Subset(arrays, idx), 3))
    assert torch.equal(x, arrays.x[idx]) and torch.equal(y, arrays.y[idx])
    assert sizes == [3, 3, 1]
    # nested subsets compose their indices
    nested = Subset(Subset(arrays, idx), [6, 0, 2])
    xn, yn, _ = _collect(iterate(nested, 2))
    assert torch.equal(xn, arrays.x[[11, 9, 14]]) and torch.equal(yn, arrays.y[[11, 9, 14]])
    # the generic DataLoader path agrees
    xg, yg, _ = _collect(iterate(Subset(_PlainDataset(arrays), idx), 3))
    assert torch.equal(xg, arrays.x[idx]) and torch.equal(yg, arrays.y[idx]) and yg.dtype == torch.long
    assert torch.equal(labels_of(Subset(arrays, idx)), arrays.y[idx])
    assert torch.equal(labels_of(Subset(_PlainDataset(arrays), idx)), arrays.y[idx])


@pytest.mark.parametrize("wrap", [lambda d: d, _PlainDataset], ids=["array", "generic"])
def test_iterate_shuffle_is_seeded(arrays, wrap):
    ds = Subset(wrap(arrays), list(range(3, 15)))

    def order(seed: int) -> torch.Tensor:
        return _collect(iterate(ds, 5, shuffle=True, generator=torch.Generator().manual_seed(seed)))[0][:, 0]

    a, b, c = order(0), order(0), order(1)
    assert torch.equal(a, b), "same generator seed, different order"
    assert not torch.equal(a, c)
    assert sorted(a.tolist()) == [2.0 * i for i in range(3, 15)], "shuffling lost or repeated samples"
    assert not torch.equal(a, torch.sort(a).values)


def test_iterate_drop_last_and_bad_batch_size(arrays):
    _, _, sizes = _collect(iterate(arrays, 4, drop_last=True))
    assert sizes == [4, 4, 4]
    _, _, sizes = _collect(iterate(arrays, 100, drop_last=True))
    assert sizes == [15]  # fewer samples than one batch: keep them rather than yield nothing
    with pytest.raises(UnlearnkitError, match="batch_size"):
        next(iterate(arrays, 0))


def test_cycle_reshuffles_every_pass(arrays):
    stream = cycle(arrays, 15, torch.Generator().manual_seed(0))
    first, second = next(stream)[1], next(stream)[1]
    assert sorted(first.tolist()) == sorted(second.tolist()) == sorted(arrays.y.tolist())
    assert not torch.equal(next(stream)[0], next(stream)[0])


def test_predict_logits_order_and_mode(arrays):
    model = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5))
    model.train()
    sub = Subset(arrays, [4, 1, 8])
    out = predict_logits(model, sub, device=CPU, batch_size=2)
    with torch.no_grad():
        expected = model.eval()(arrays.x[[4, 1, 8]])
    assert torch.equal(out, expected)  # eval mode (dropout off), in order
    model.train()
    predict_logits(model, sub, device=CPU)
    assert model.training, "predict_logits must restore the train/eval mode"
