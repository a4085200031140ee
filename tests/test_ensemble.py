"""Reference ensembles (engine/ensemble.py) and the ε score with its ceiling (protocols/ensembles.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.engine import TrainConfig, seed_everything, train_model
from unlearnkit.engine.ensemble import (
    EnsembleCache,
    EnsembleFallbackWarning,
    auto_path,
    ensemble_path,
    train_ensemble,
    vmap_unsupported_reason,
)
from unlearnkit.engine.grouped import GroupedMembers, grouped_unsupported_reason
from unlearnkit.errors import TrainingDivergedError, UnlearnkitError
from unlearnkit.metrics import METRICS, evaluate, forget_quality, is_not_computed
from unlearnkit.metrics import epsilon_score as S
from unlearnkit.models import create_model
from unlearnkit.protocols import ensembles as E

CPU = torch.device("cpu")
CFG = TrainConfig(epochs=2, lr=1e-2, batch_size=64)
N = 4


@pytest.fixture(autouse=True)
def _one_thread():
    """Two shared cores: one intra-op thread avoids oversubscription (and keeps timings sane)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mlp() -> nn.Module:
    return create_model("mlp", 10, (1, 8, 8), hidden=32)


def _cnn() -> nn.Module:
    return create_model("small_cnn", 10, (1, 8, 8), width=8)


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


def _reference_loop(make_model, dataset, cfg, seed) -> nn.Module:
    """The runner's recipe for one model, written out independently of engine/ensemble.py."""
    seed_everything(seed)
    model = make_model()
    train_model(model, dataset, cfg, device=CPU, generator=seed_everything(seed))
    return model.eval()


# -- batched training == the loop ---------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_vmap_matches_loop_per_member_mlp(digits_random_scenario, optimizer):
    cfg = TrainConfig(epochs=2, lr=1e-2, optimizer=optimizer, weight_decay=5e-4)
    seeds, ds = [3, 11, 7], digits_random_scenario.forget  # 121 samples: 2 steps per epoch, one partial
    batched = train_ensemble(_mlp, ds, cfg, seeds, device=CPU, mode="vmap")
    for s, m in zip(seeds, batched, strict=True):
        ref = _reference_loop(_mlp, ds, cfg, s)
        assert _max_diff(m, ref) < 1e-5, f"member seed {s} differs from the loop beyond float32 rounding"
    assert _max_diff(batched[0], batched[1]) > 1e-2, "members with different seeds must differ"


def test_vmap_batch_norm_is_per_member_in_float64(digits_random_scenario):
    """With batch norm, the batched path equals the loop exactly in float64 (float32 differs by rounding)."""

    class F64(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _cnn().double()

        def forward(self, x):
            return self.net(x.double())

    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=50)
    seeds, ds = [0, 1], digits_random_scenario.forget
    batched = train_ensemble(F64, ds, cfg, seeds, device=CPU, mode="vmap")
    for s, m in zip(seeds, batched, strict=True):
        ref = _reference_loop(F64, ds, cfg, s)
        assert _max_diff(m, ref) < 1e-10
        # running statistics moved away from their initial values, per member
        assert not torch.equal(m.net.features[1].running_mean, torch.zeros_like(m.net.features[1].running_mean))
    assert not torch.equal(batched[0].net.features[1].running_mean, batched[1].net.features[1].running_mean)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_grouped_matches_loop_per_member_mlp(digits_random_scenario, optimizer):
    """Batched matmuls (and the fused Adam step) give each member the loop's weights up to float32 rounding."""
    cfg = TrainConfig(epochs=2, lr=1e-2, optimizer=optimizer, weight_decay=5e-4)
    seeds, ds = [3, 11, 7], digits_random_scenario.forget
    batched = train_ensemble(_mlp, ds, cfg, seeds, device=CPU, mode="grouped")
    for s, m in zip(seeds, batched, strict=True):
        assert _max_diff(m, _reference_loop(_mlp, ds, cfg, s)) < 1e-5, f"member seed {s} differs beyond rounding"
    assert _max_diff(batched[0], batched[1]) > 1e-2


def test_grouped_small_cnn_equals_loop_in_float64(digits_random_scenario):
    """Grouped convolutions with per-member batch norm: the loop's weights and running statistics, to 1e-10 in
    float64 (float32 differs by rounding only)."""
    from unlearnkit.data._base import ArrayDataset

    f = digits_random_scenario.forget
    ds = ArrayDataset(torch.stack([f[i][0] for i in range(len(f))]), [int(f[i][1]) for i in range(len(f))])
    ds.x = ds.x.double()  # in-memory float64 features (the constructor stores float32)

    def make() -> nn.Module:
        return _cnn().double()

    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=50)
    batched = train_ensemble(make, ds, cfg, [0, 1], device=CPU, mode="grouped")
    for s, m in zip([0, 1], batched, strict=True):
        ref = _reference_loop(make, ds, cfg, s)
        assert _max_diff(m, ref) < 1e-10
        assert int(m.features[1].num_batches_tracked) == int(ref.features[1].num_batches_tracked) == 6
    assert not torch.equal(batched[0].features[1].running_mean, batched[1].features[1].running_mean)


@pytest.mark.parametrize("split_convs", [False, True])
def test_grouped_forward_is_each_members_forward(split_convs):
    """One grouped convolution (or M plain ones) over channel blocks = each member on its own batch."""
    torch.manual_seed(0)
    members = [create_model("small_cnn", 10, (3, 12, 12), width=4).double().train() for _ in range(3)]
    for m in members:  # non-trivial running statistics and affine parameters
        for p in m.parameters():
            p.data.normal_()
    wide = GroupedMembers(members, split_convs=split_convs)
    x = torch.randn(3, 5, 3, 12, 12, dtype=torch.float64)
    out = wide.forward(x)
    for i, m in enumerate(members):
        torch.testing.assert_close(out[i], m(x[i]), rtol=1e-12, atol=1e-12)
    copies = [create_model("small_cnn", 10, (3, 12, 12), width=4).double() for _ in range(3)]
    wide.write_back(copies)  # running statistics updated per member by the one forward above
    for m, c in zip(members, copies, strict=True):
        torch.testing.assert_close(c.features[1].running_var, m.features[1].running_var, rtol=1e-12, atol=1e-12)


def test_grouped_airbench_on_cifar_shaped_data_equals_the_loop():
    """The airbench-style GPU recipe's model, tiny widths, synthetic 3x32x32 data: grouped == loop (float64)."""
    from unlearnkit.data._base import ArrayDataset

    g = torch.Generator().manual_seed(0)
    ds = ArrayDataset(torch.rand(40, 3, 32, 32, generator=g), torch.randint(0, 10, (40,), generator=g))
    ds.x = ds.x.double()

    def make() -> nn.Module:
        return create_model("airbench", 10, (3, 32, 32), widths=(4, 8, 8)).double()

    cfg = TrainConfig(epochs=1, lr=1e-2, batch_size=16, optimizer="sgd", weight_decay=5e-4)
    batched = train_ensemble(make, ds, cfg, [0, 1], device=CPU, mode="loop")
    grouped = train_ensemble(make, ds, cfg, [0, 1], device=CPU, mode="grouped")
    for seed, a, b in zip([0, 1], batched, grouped, strict=True):
        assert _max_diff(a, _reference_loop(make, ds, cfg, seed)) == 0.0
        assert _max_diff(a, b) < 1e-10
    assert _max_diff(grouped[0], grouped[1]) > 1e-3


def test_auto_is_a_fixed_rule_and_the_path_is_checked():
    cnn, mlp = _cnn(), _mlp()
    drop = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 10))
    assert auto_path(cnn, CPU) == "fused"  # convolutions on the CPU: the members' own channels-last kernels
    assert auto_path(mlp, CPU) == "grouped"
    assert auto_path(cnn, torch.device("cuda")) == "grouped"
    assert auto_path(drop, CPU) is None and "Dropout" in (grouped_unsupported_reason(drop) or "")
    assert "layer_sequence" in (grouped_unsupported_reason(create_model("resnet18", 10, (3, 32, 32))) or "")
    with pytest.raises(UnlearnkitError, match="cannot be trained grouped"):
        ensemble_path("grouped", lambda: drop, [(torch.zeros(1, 8, 8), 0)], CPU)


def test_loop_mode_is_exactly_train_model(digits_random_scenario):
    (m,) = train_ensemble(_mlp, digits_random_scenario.forget, CFG, [5], device=CPU, mode="loop")
    assert _max_diff(m, _reference_loop(_mlp, digits_random_scenario.forget, CFG, 5)) == 0.0


def test_auto_falls_back_to_loop_for_dropout_and_vmap_mode_refuses(digits_random_scenario):
    def make() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 10))

    assert "random" in (vmap_unsupported_reason(make, digits_random_scenario.train, CPU) or "")
    assert vmap_unsupported_reason(_mlp, digits_random_scenario.train, CPU) is None
    cfg = TrainConfig(epochs=1)
    with pytest.warns(EnsembleFallbackWarning, match="cannot vmap"):
        models = train_ensemble(make, digits_random_scenario.forget, cfg, [0, 1], device=CPU, mode="auto")
    assert _max_diff(models[1], _reference_loop(make, digits_random_scenario.forget, cfg, 1)) == 0.0
    with pytest.raises(UnlearnkitError, match="cannot be trained under vmap"):
        train_ensemble(make, digits_random_scenario.forget, cfg, [0, 1], device=CPU, mode="vmap")


def test_bad_input_raises_before_training(digits_random_scenario):
    ds = digits_random_scenario.train
    for kwargs, match in [
        ({"seeds": [1, 1]}, "distinct"),
        ({"seeds": [-1]}, "non-negative"),
        ({"seeds": [0], "mode": "fast"}, "unknown ensemble mode"),
        ({"seeds": [0], "batch_models": 0}, "batch_models"),
        ({"seeds": [0], "cache": EnsembleCache("unused")}, "needs a key"),
    ]:
        with pytest.raises(UnlearnkitError, match=match):
            train_ensemble(_mlp, ds, CFG, device=CPU, **kwargs)


def test_nan_loss_names_the_member(digits_random_scenario):
    with pytest.raises(TrainingDivergedError, match="member seed"):
        train_ensemble(_mlp, digits_random_scenario.forget, TrainConfig(epochs=1, lr=1e30), [0, 1], mode="vmap")


# -- cache ----------------------------------------------------------------------------------------------


def test_cache_hit_trains_nothing_and_returns_the_same_weights(digits_random_scenario, tmp_path, monkeypatch):
    ds, key = digits_random_scenario.forget, {"test": "cache", "model": "mlp"}
    cache = EnsembleCache(tmp_path)
    first = train_ensemble(_mlp, ds, CFG, [0, 1, 2], device=CPU, cache=cache, key=key, batch_models=2)
    assert cache.trained == 3 and len(list(tmp_path.glob("*.safetensors"))) == 3
    grouped = {**key, "path": "grouped"}  # auto's path for an MLP, part of every member's key
    assert cache.info(grouped, CFG, 0)["mode"] == "grouped" and cache.info(grouped, CFG, 2)["batch"] == 1
    assert not cache.has(key, CFG, 0)  # an entry keyed without a path (as before paths were keys) is another

    from unlearnkit.engine import ensemble as ens

    def boom(*a, **k):
        raise AssertionError("a cached member was retrained")

    monkeypatch.setattr(ens, "_train_batched", boom)
    monkeypatch.setattr(ens, "_train_loop", boom)
    again = EnsembleCache(tmp_path)
    second = train_ensemble(_mlp, ds, CFG, [0, 1, 2], device=CPU, cache=again, key=key)
    assert again.trained == 0 and again.loaded == 3
    for a, b in zip(first, second, strict=True):
        assert _max_diff(a, b) == 0.0
    with pytest.raises(AssertionError, match="retrained"):  # a new seed, another recipe: trained
        train_ensemble(_mlp, ds, CFG, [0, 9], device=CPU, cache=again, key=key)
    with pytest.raises(AssertionError, match="retrained"):  # another path: never served the grouped members
        train_ensemble(_mlp, ds, CFG, [0], device=CPU, cache=again, key=key, mode="vmap")


def test_members_cached_without_a_path_are_not_reused(digits_random_scenario, tmp_path):
    """Entries written before the path was part of the key (whichever path trained them) are never read."""
    ds, key = digits_random_scenario.forget, {"test": "old-entries", "model": "mlp"}
    cache = EnsembleCache(tmp_path)
    (old,) = train_ensemble(_mlp, ds, CFG, [4], device=CPU, mode="vmap")
    cache.save(key, CFG, 4, old, {"mode": "vmap"})  # what the previous version stored under this key
    (new,) = train_ensemble(_mlp, ds, CFG, [4], device=CPU, cache=cache, key=key, mode="loop")
    assert cache.trained == 2 and cache.loaded == 0 and cache.info({**key, "path": "loop"}, CFG, 4)["mode"] == "loop"
    assert _max_diff(new, _reference_loop(_mlp, ds, CFG, 4)) == 0.0


# -- the ε score of a method, and its ceiling -------------------------------------------------------------


@pytest.fixture(scope="module")
def ens_cache(tmp_path_factory) -> EnsembleCache:
    return EnsembleCache(tmp_path_factory.mktemp("ensembles"))


def _eval(scenario, method, cache, n=N, params=None, **kw):
    return E.forget_quality_eval(scenario, method, params or {}, "mlp", CFG, n, device="cpu", cache=cache,
                                 model_kwargs={"hidden": 32}, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def scores(digits_random_scenario, ens_cache) -> dict[str, dict]:
    torch.set_num_threads(1)
    out = {m: _eval(digits_random_scenario, m, ens_cache) for m in ("retrain", "original")}
    out["finetune"] = _eval(digits_random_scenario, "finetune", ens_cache, params={"epochs": 1, "lr": 1e-3})
    return out


def test_eval_returns_every_key_as_a_number(scores):
    for method, out in scores.items():
        assert tuple(out) == S.KEYS, method
        assert all(isinstance(v, float) and np.isfinite(v) for v in out.values()), (method, out)
        assert out["ensemble_n"] == N
        for k in ("ra_u", "ra_r", "ta_u", "ta_r"):
            assert 0.5 < out[k] <= 1.0, (method, k, out[k])  # fractions, of models that learned digits


def test_ceiling_is_shared_and_far_below_one(scores):
    ceil = {out["forget_quality_ceiling"] for out in scores.values()}
    assert len(ceil) == 1, "the ceiling depends only on the retrained ensembles"
    (c,) = ceil
    assert 0.05 < c < 0.6  # an ideal unlearner is far from F = 1 at N = 4 (top bin ⌈ln 3⌉ = 2)


def test_retrain_scores_near_the_ceiling_and_the_original_lower(scores):
    c = scores["retrain"]["forget_quality_ceiling"]
    f_retrain = scores["retrain"]["forget_quality"]
    assert abs(f_retrain - c) < 0.5 * c, "retraining is an independent draw of the ceiling's statistic"
    # one original model N times: a zero-width sample, caught by the peakiness check -> F = 0
    assert scores["original"]["forget_quality"] == 0.0 and scores["original"]["final_score"] == 0.0
    assert scores["finetune"]["forget_quality"] < f_retrain


def test_per_seed_originals_carry_their_spread(digits_random_scenario, ens_cache, scores):
    """originals="per_seed" (not the published set-up): N originals, so "original" is no longer a point mass."""
    out = _eval(digits_random_scenario, "original", ens_cache, originals="per_seed")
    assert out["forget_quality"] > 0.0 == scores["original"]["forget_quality"]
    assert out["forget_quality_ceiling"] == scores["original"]["forget_quality_ceiling"]
    ft = _eval(digits_random_scenario, "finetune", ens_cache, params={"epochs": 1, "lr": 1e-3}, originals="per_seed")
    assert isinstance(ft["forget_quality"], float) and ft["forget_quality"] != scores["finetune"]["forget_quality"]


def test_final_score_and_accuracies_match_an_independent_computation(digits_random_scenario, ens_cache, scores):
    s = digits_random_scenario
    setup = E._Setup(s, "mlp", {"hidden": 32}, CFG, CPU, ens_cache, 16, "auto", None)
    retrained = train_ensemble(setup.make_model, s.retain, CFG, E.ensemble_seeds(s.seed, N), device=CPU,
                               cache=ens_cache, key=setup.key("retain"))  # fmt: skip
    ideal = train_ensemble(setup.make_model, s.retain, CFG, E.ensemble_seeds(s.seed, N, E.CEILING_OFFSET),
                           device=CPU, cache=ens_cache, key=setup.key("retain"))  # fmt: skip

    def phi_and_acc(models):
        y_f = torch.as_tensor(s.targets("forget"))
        rows, ra, ta = [], [], []
        with torch.no_grad():
            for m in models:
                lp = torch.log_softmax(m(s.bundle.train.x[s.forget_idx]).double(), 1)  # [|S|, C]
                lp_y = lp.gather(1, y_f[:, None])[:, 0]
                rest = lp.scatter(1, y_f[:, None], -torch.inf).logsumexp(1)  # log Σ_{j≠y} p_j
                rows.append((lp_y - rest).numpy())
                ra.append((m(s.bundle.train.x[s.retain_idx]).argmax(1).numpy() == s.targets("retain")).mean())
                ta.append((m(s.bundle.test.x).argmax(1).numpy() == s.targets("test")).mean())
        return np.stack(rows), float(np.mean(ra)), float(np.mean(ta))

    phi_r, ra_r, ta_r = phi_and_acc(retrained)
    phi_c, ra_c, ta_c = phi_and_acc(ideal)
    out = scores["retrain"]
    assert out["ra_r"] == pytest.approx(ra_r) and out["ta_r"] == pytest.approx(ta_r)
    f_c = forget_quality(phi_c, phi_r).F
    assert out["forget_quality_ceiling"] == pytest.approx(f_c, abs=1e-9)
    assert out["final_score_ceiling"] == pytest.approx(f_c * (ra_c / ra_r) * (ta_c / ta_r), abs=1e-9)


def test_retrain_shortcut_equals_the_retrain_method(digits_random_scenario, ens_cache):
    """For "retrain", run i is trained by the batched trainer; the retrain method with that seed is the same."""
    from unlearnkit.methods import UnlearnData, create_method

    s = digits_random_scenario
    setup = E._Setup(s, "mlp", {"hidden": 32}, CFG, CPU, ens_cache, 16, "loop", None)
    seed = E.ensemble_seeds(s.seed, 1, E.UNLEARN_OFFSET)[0]
    (batched,) = train_ensemble(setup.make_model, s.retain, CFG, [seed], device=CPU, mode="loop")
    data = UnlearnData.from_scenario(s, make_model=setup.make_model, train_config=CFG, device="cpu", seed=seed)
    by_method = create_method("retrain").unlearn(setup.make_model(), data)
    assert _max_diff(batched, by_method) == 0.0
    # and the shared original is the runner's original (seed_everything(seed); make_model; train on D)
    assert _max_diff(setup.original(), _reference_loop(setup.make_model, s.train, CFG, s.seed)) == 0.0


def test_not_computed_reasons(digits_random_scenario, digits_class_scenario, ens_cache, monkeypatch):
    for n, match in [(0, "off"), (1, "at least 2")]:
        out = _eval(digits_random_scenario, "finetune", ens_cache, n=n)
        assert tuple(out) == S.KEYS and all(is_not_computed(v) and match in v for v in out.values()), out
    out = _eval(digits_class_scenario, "retrain", ens_cache)
    assert all(is_not_computed(v) and "sample-level" in v for v in out.values()), out
    from unlearnkit.methods.finetune import Finetune

    with monkeypatch.context() as mp:  # a few-shot method's run params carry "shots": not ensembled, no error
        mp.setattr(Finetune, "setting", 2)
        out = _eval(digits_random_scenario, "finetune", ens_cache, params={"epochs": 1, "shots": 10})
        assert all(is_not_computed(v) and "setting-2" in v for v in out.values()), out
    diverging = TrainConfig(epochs=1, lr=1e30)  # reference training fails: every key says why
    out = E.forget_quality_eval(digits_random_scenario, "finetune", {}, "mlp", diverging, 2, device="cpu",
                                cache=ens_cache)  # fmt: skip
    assert all(is_not_computed(v) and "reference ensemble training failed" in v for v in out.values()), out
    with pytest.raises(UnlearnkitError, match="ensemble_n"):
        _eval(digits_random_scenario, "finetune", ens_cache, n=-1)
    with pytest.raises(UnlearnkitError, match="no hyperparameter"):
        _eval(digits_random_scenario, "finetune", ens_cache, params={"epoch": 1})


def test_failed_method_keeps_the_ceiling(digits_random_scenario, ens_cache, scores, monkeypatch):
    from unlearnkit.methods.finetune import Finetune

    def fail(self, model, data, generator):
        raise RuntimeError("boom")

    monkeypatch.setattr(Finetune, "_unlearn", fail)
    out = _eval(digits_random_scenario, "finetune", ens_cache)
    for k in ("forget_quality", "final_score", "ra_u", "ta_u"):
        assert is_not_computed(out[k]) and "failed on ensemble run 0" in out[k] and "boom" in out[k]
    assert out["forget_quality_ceiling"] == scores["retrain"]["forget_quality_ceiling"]
    assert out["ra_r"] == scores["retrain"]["ra_r"]


def test_forget_quality_of_given_models(digits_random_scenario, ens_cache, scores):
    """The audit path: user-supplied models. The retrain method's own models give its F back."""
    s = digits_random_scenario
    setup = E._Setup(s, "mlp", {"hidden": 32}, CFG, CPU, ens_cache, 16, "auto", None)
    models = train_ensemble(setup.make_model, s.retain, CFG, E.ensemble_seeds(s.seed, N, E.UNLEARN_OFFSET),
                            device=CPU, cache=ens_cache, key=setup.key("retain"))  # fmt: skip
    out = E.forget_quality_of_models(s, models, "mlp", CFG, device="cpu", cache=ens_cache,
                                     model_kwargs={"hidden": 32})  # fmt: skip
    assert out == scores["retrain"]
    one = E.forget_quality_of_models(s, models[:1], "mlp", CFG, device="cpu", cache=ens_cache)
    assert all(is_not_computed(v) for v in one.values())


def test_registered_names_are_not_computed_without_a_resource_builder(digits_random_scenario):
    for name in S.KEYS:
        assert name in METRICS
    assert METRICS.get("forget_quality").higher_is_better is True
    assert METRICS.get("final_score").higher_is_better is True
    assert METRICS.get("forget_quality_ceiling").higher_is_better is None
    out = evaluate(_mlp(), digits_random_scenario, metrics=list(S.KEYS), device="cpu")
    assert all(is_not_computed(v) and "reference ensemble" in str(v) and "resource builder" in str(v)
               for v in out.values()), out  # fmt: skip


def test_seed_families_are_disjoint():
    n = E.MAX_MODELS
    fams = [set(E.ensemble_seeds(s, n, off)) for s in (0, 1) for off in
            (0, E.CEILING_OFFSET, E.UNLEARN_OFFSET, E.ORIGINALS_OFFSET)]  # fmt: skip
    assert sum(len(f) for f in fams) == len(set().union(*fams))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert E.ensemble_seeds(0, 2) == [0, 1]


def test_ensemble_mode_is_a_config_key_and_in_the_run_key_only_with_the_epsilon_score():
    from unlearnkit.errors import ConfigError
    from unlearnkit.experiments.config import parse_config
    from unlearnkit.experiments.runner import Cell

    assert parse_config({"dataset": "digits", "ensemble_mode": "grouped"}).ensemble_mode == "grouped"
    with pytest.raises(ConfigError, match="ensemble_mode"):
        parse_config({"dataset": "digits", "ensemble_mode": "fast"})
    common = {"dataset": "digits", "forget": "random:0.1", "seed": 0, "model": "mlp", "method": "finetune",
              "params": {}, "train": {}}  # fmt: skip
    keys = {Cell(**common, ensemble_n=4, ensemble_mode=m).identity()["ensemble_mode"] for m in ("auto", "loop")}
    assert keys == {"auto", "loop"}
    assert "ensemble_mode" not in Cell(**common, ensemble_mode="loop").identity()  # ε score off: keys as before
