"""The ``fused`` ensemble path (engine/ensemble.py): the members' own modules, one backward, one fused
optimiser step, channels-last convolutions on the CPU; equal to the loop up to float rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.data._base import ArrayDataset
from unlearnkit.engine import TrainConfig, seed_everything, train_model
from unlearnkit.engine.ensemble import _fused_step, auto_path, ensemble_path, train_ensemble
from unlearnkit.errors import UnlearnkitError
from unlearnkit.models import create_model

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _loop(make_model, dataset, cfg, seed) -> nn.Module:
    """The runner's recipe for one model, written out independently of engine/ensemble.py."""
    seed_everything(seed)
    model = make_model()
    train_model(model, dataset, cfg, device=CPU, generator=seed_everything(seed))
    return model.eval()


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 40)], ids=["2d", "1d"])
def test_fused_small_cnn_equals_loop_in_float64(in_shape):
    """Channels-last convolutions (2-D) and one fused Adam step: the loop's weights, batch-norm running statistics
    and step counts to 1e-10 in float64; members stay distinct and come back in the default memory layout."""
    g = torch.Generator().manual_seed(0)
    ds = ArrayDataset(torch.rand(90, *in_shape, generator=g), torch.randint(0, 10, (90,), generator=g))
    ds.x = ds.x.double()

    def make() -> nn.Module:
        return create_model("small_cnn", 10, in_shape, width=4).double()

    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=32)
    fused = train_ensemble(make, ds, cfg, [0, 1], device=CPU, mode="fused")
    for s, m in zip([0, 1], fused, strict=True):
        ref = _loop(make, ds, cfg, s)
        assert _max_diff(m, ref) < 1e-10
        assert int(m.features[1].num_batches_tracked) == int(ref.features[1].num_batches_tracked) == 6
        assert all(p.is_contiguous() for p in m.parameters())
    assert _max_diff(fused[0], fused[1]) > 1e-3


def test_fused_forward_is_each_members_forward():
    """The step's per-member losses equal each member's loss on its own batch (float64 to 1e-12; float32 to
    float32 rounding): the channels-last layout changes kernels, not the function."""
    torch.manual_seed(0)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        members = [create_model("small_cnn", 10, (3, 12, 12), width=4).to(dtype).train() for _ in range(3)]
        for m in members:
            for p in m.parameters():
                p.data.normal_()
        copies = [create_model("small_cnn", 10, (3, 12, 12), width=4).to(dtype).train() for _ in range(3)]
        for c, m in zip(copies, members, strict=True):
            c.load_state_dict(m.state_dict())
        leaves, step, write_back = _fused_step(members, CPU)
        assert len(leaves) == 3 * len(list(copies[0].parameters()))
        assert members[0].features[0].weight.is_contiguous(memory_format=torch.channels_last)
        x, y = torch.randn(3, 5, 3, 12, 12, dtype=dtype), torch.randint(0, 10, (3, 5))
        losses = step(x, y)
        for i, c in enumerate(copies):
            torch.testing.assert_close(losses[i], F.cross_entropy(c(x[i]), y[i]), rtol=tol, atol=tol)
            torch.testing.assert_close(members[i].features[1].running_var, c.features[1].running_var, rtol=tol,
                                       atol=tol)  # fmt: skip
        write_back()
        assert all(p.is_contiguous() for m in members for p in m.parameters())


def test_fused_is_autos_cpu_path_for_2d_convolutions_and_refuses_random_models():
    cnn2d = create_model("small_cnn", 10, (1, 8, 8), width=8)
    cnn1d = create_model("small_cnn", 10, (1, 40), width=8)
    assert auto_path(cnn2d, CPU) == "fused"
    assert auto_path(cnn1d, CPU) == "fused"
    assert auto_path(cnn2d, torch.device("cuda")) == "grouped"
    drop = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 10))
    with pytest.raises(UnlearnkitError, match="mode='fused'"):
        ensemble_path("fused", lambda: drop, [(torch.zeros(1, 8, 8), 0)] * 2, CPU)
    assert ensemble_path("fused", lambda: cnn2d, [(torch.zeros(1, 8, 8), 0)] * 2, CPU) == "fused"


def test_fused_members_are_cached_under_their_own_path(tmp_path):
    """auto's CPU path for a CNN is "fused", part of each member's key: a loop request never gets them."""
    from unlearnkit.engine.ensemble import EnsembleCache

    g = torch.Generator().manual_seed(1)
    ds = ArrayDataset(torch.rand(40, 1, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g))

    def make() -> nn.Module:
        return create_model("small_cnn", 10, (1, 8, 8), width=4)

    cfg, key, cache = TrainConfig(epochs=1, batch_size=16), {"test": "fused-cache"}, EnsembleCache(tmp_path)
    (auto,) = train_ensemble(make, ds, cfg, [3], device=CPU, cache=cache, key=key)
    assert cache.info({**key, "path": "fused"}, cfg, 3)["mode"] == "fused"
    assert not cache.has({**key, "path": "loop"}, cfg, 3)
    (loop,) = train_ensemble(make, ds, cfg, [3], device=CPU, cache=cache, key=key, mode="loop")
    assert cache.trained == 2 and cache.loaded == 0
    assert _max_diff(loop, _loop(make, ds, cfg, 3)) == 0.0
    assert _max_diff(auto, loop) < 1e-4  # at most float32 rounding of other kernels, one epoch
