"""WF-Net: class-conditioned filter weights, one training for every request, deletion/insertion analysis."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import unlearnkit as uk
import unlearnkit.methods.wfnet  # registers wfnet until methods/__init__ imports it
import unlearnkit.metrics.wfnet as wfm
import unlearnkit.reports.wfnet as wfr
from unlearnkit.data import ArrayDataset
from unlearnkit.engine import TrainConfig, labels_of, predict_logits
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import UnlearnData
from unlearnkit.methods._wfnet_model import WFNetModel, find_filter_layers
from unlearnkit.methods.wfnet import WFNet
from unlearnkit.methods.wfnet_analysis import curve_auc, deletion_insertion, unit_ranking
from unlearnkit.metrics import NotComputed, evaluate
from unlearnkit.metrics._base import EvalContext
from unlearnkit.scenario import Scenario

CPU = torch.device("cpu")
#: a short schedule for the tests (the defaults train 20 epochs)
QUICK = {"epochs": 4, "lr": 0.1}


@pytest.fixture(scope="module")
def cnn(digits_class_scenario: Scenario) -> nn.Module:
    return uk.train("small_cnn", digits_class_scenario, config=TrainConfig(epochs=8), device="cpu").eval()


@pytest.fixture(scope="module")
def scenarios(digits_class_scenario: Scenario) -> dict[int, Scenario]:
    return {c: Scenario(digits_class_scenario.bundle, f"class:{c}", 0) for c in (3, 7)}


@pytest.fixture(scope="module")
def wf(cnn: nn.Module, scenarios: dict[int, Scenario]) -> WFNetModel:
    WFNet.clear_cache()
    out = WFNet(**QUICK).unlearn(cnn, UnlearnData.from_scenario(scenarios[3], device="cpu"))
    assert isinstance(out, WFNetModel)
    return out


def _per_class_acc(model: nn.Module, scenario: Scenario) -> np.ndarray:
    y = labels_of(scenario.test)
    pred = predict_logits(model, scenario.test, device=CPU).argmax(1)
    return np.array([(pred[y == c] == c).float().mean().item() for c in range(10)])


# -- the defining behaviour -------------------------------------------------------------------------------


def test_switching_off_a_class_lowers_only_that_class(wf, cnn, scenarios):
    base = _per_class_acc(cnn, scenarios[3])
    for c in (3, 7):
        acc = _per_class_acc(copy.deepcopy(wf).set_unlearn([c]), scenarios[c])
        others = np.delete(acc, c)
        assert acc[c] <= 0.1, f"class {c} still recognised: {acc[c]:.2f}"
        assert base[c] - acc[c] > 0.8
        assert np.mean(np.delete(base, c) - others) < 0.08, f"other classes hurt: {others}"


def test_bypass_gives_the_original_outputs_exactly(wf, cnn):
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        ref = cnn(x)
        assert torch.equal(copy.deepcopy(wf).set_unlearn(None)(x), ref)
        assert not torch.equal(copy.deepcopy(wf).set_unlearn([3])(x), ref)


def test_alpha_is_trained_and_stays_in_the_unit_interval(wf):
    for name in wf.layer_names:
        a = wf.alpha_of(name).detach()
        assert a.shape[0] == 10 and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert any(float(wf.alpha_of(n).detach().min()) < 0.9 for n in wf.layer_names), "α never moved from 1"


def test_one_training_serves_every_class_request(cnn, scenarios):
    """Two requests of one scenario seed: the second reuses the first's α (no training), in any order."""
    WFNet.clear_cache()
    calls = []
    method = WFNet(epochs=1, lr=0.1)
    original_train = method._train
    method._train = lambda *a, **k: calls.append(1) or original_train(*a, **k)  # type: ignore[method-assign]
    out3 = method.unlearn(cnn, UnlearnData.from_scenario(scenarios[3], device="cpu"))
    assert method.report_["wfnet_trained_now"] == 1 and len(calls) == 1
    train_time = method.report_["wfnet_train_time_s"]
    out7 = method.unlearn(cnn, UnlearnData.from_scenario(scenarios[7], device="cpu"))
    assert method.report_["wfnet_trained_now"] == 0 and len(calls) == 1
    assert method.report_["wfnet_train_time_s"] == train_time
    assert method.report_["alpha_params"] == sum(a.numel() for a in out3.alpha.values())
    assert out3.unlearned_classes == (3,) and out7.unlearned_classes == (7,)
    for n in out3.layer_names:
        assert torch.equal(out3.alpha_of(n), out7.alpha_of(n))
        assert out3.alpha_of(n).data_ptr() != out7.alpha_of(n).data_ptr()
    # the other order trains the same α (D is rebuilt in a canonical order; same seed)
    WFNet.clear_cache()
    again = WFNet(epochs=1, lr=0.1).unlearn(cnn, UnlearnData.from_scenario(scenarios[7], device="cpu"))
    for n in out3.layer_names:
        assert torch.equal(out3.alpha_of(n), again.alpha_of(n))
    # other weights, other hyperparameters: train again
    other = WFNet(epochs=1, lr=0.05)
    other.unlearn(cnn, UnlearnData.from_scenario(scenarios[3], device="cpu"))
    assert other.report_["wfnet_trained_now"] == 1


def test_state_dict_holds_weights_alpha_and_request(wf, cnn):
    sd = wf.state_dict()
    assert {f"model.{k}" for k in cnn.state_dict()} <= set(sd)
    assert {k for k in sd if k.startswith("alpha.")} == {f"alpha.{k}" for k in wf.alpha.keys()}
    assert sd["switched_off"].tolist() == [c == 3 for c in range(10)]
    restored = WFNetModel(copy.deepcopy(cnn), wf.layer_names, 10)
    restored.load_state_dict(sd)
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(restored(x), wf(x))


def test_deepcopy_gates_the_copy_not_the_original(wf):
    a = copy.deepcopy(wf).set_unlearn(None)
    b = copy.deepcopy(a).set_unlearn([3])
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        assert not torch.equal(a(x), b(x))
        assert torch.equal(b(x), copy.deepcopy(wf).set_unlearn([3])(x))


# -- the parametrisation, against independent references -------------------------------------------------------


class _TinyConvNet(nn.Module):
    """A conv WITH bias (no batch norm) feeding a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).relu().mean(dim=(2, 3)))


def _random_alpha(model: WFNetModel, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in model.alpha.values():
            a.copy_(torch.rand(a.shape, generator=g))


def _scaled_conv_reference(net: _TinyConvNet, gate: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The paper's W̃[k] = g[k] · W[k] built explicitly (bias unscaled)."""
    ref = copy.deepcopy(net)
    with torch.no_grad():
        ref.conv.weight.mul_(gate.view(-1, 1, 1, 1))
        return ref(x)


def test_gating_equals_scaling_the_filters_and_rows_combine_by_product():
    torch.manual_seed(0)
    net = _TinyConvNet().eval()
    layers, kind = find_filter_layers(net)
    assert (layers, kind) == (["conv"], "conv")  # the head is never filtered
    wfm_ = WFNetModel(copy.deepcopy(net), layers, 3)
    _random_alpha(wfm_)
    alpha = wfm_.alpha_of("conv").detach()
    x = torch.rand(5, 2, 6, 6)
    with torch.no_grad():
        single = wfm_.set_unlearn([1])(x)
        both = wfm_.set_unlearn([0, 2])(x)
        rows = torch.tensor([0, 1, 2, 1, 0])
        per_sample = wfm_(x, rows=rows)
    torch.testing.assert_close(single, _scaled_conv_reference(net, alpha[1], x))
    torch.testing.assert_close(both, _scaled_conv_reference(net, alpha[0] * alpha[2], x))
    for i, r in enumerate(rows.tolist()):
        torch.testing.assert_close(per_sample[i : i + 1], _scaled_conv_reference(net, alpha[r], x[i : i + 1]))


def test_mlp_filters_hidden_linear_units_and_a_bare_head_is_refused():
    mlp = uk.create_model("mlp", 10, (1, 8, 8))
    layers, kind = find_filter_layers(mlp)
    assert kind == "linear" and layers == ["1", "3"]  # the head "5" is left alone
    with pytest.raises(UnlearnkitError, match="no conv layer"):
        find_filter_layers(mlp, "conv")
    with pytest.raises(UnlearnkitError, match="nothing to filter"):
        find_filter_layers(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))


def test_vit_qkv_projections_are_filtered_per_sample():
    timm = pytest.importorskip("timm")
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=16, depth=2, num_heads=2
    ).eval()  # fmt: skip
    layers, kind = find_filter_layers(vit)
    assert kind == "attention" and layers == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    model = WFNetModel(copy.deepcopy(vit), layers, 3)
    assert model.alpha_of(layers[0]).shape == (3, 48)  # 3d outputs of the fused projection
    _random_alpha(model, 1)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.set_unlearn(None)(x), vit(x))
        rows = torch.tensor([2, 0, 1, 2])
        per_sample = model(x, rows=rows)
        for i, r in enumerate(rows.tolist()):
            torch.testing.assert_close(per_sample[i : i + 1], model.set_unlearn([r])(x[i : i + 1]))


# -- input checks --------------------------------------------------------------------------------------------


def test_random_requests_are_refused(cnn, digits_random_scenario):
    with pytest.raises(UnlearnkitError, match="does not support random requests"):
        WFNet().unlearn(cnn, UnlearnData.from_scenario(digits_random_scenario, device="cpu"))


def test_bad_class_requests_are_refused(wf, scenarios):
    with pytest.raises(UnlearnkitError, match="already a WF-Net model"):
        WFNet(**QUICK).unlearn(wf, UnlearnData.from_scenario(scenarios[7], device="cpu"))
    with pytest.raises(UnlearnkitError, match=r"class 12 is not in 0\.\.9"):
        copy.deepcopy(wf).set_unlearn([12])
    with pytest.raises(UnlearnkitError, match="listed twice"):
        copy.deepcopy(wf).set_unlearn([1, 1])


# -- deletion / insertion ------------------------------------------------------------------------------------


def test_curve_auc_hand_computed():
    assert curve_auc([0.0, 0.5, 1.0], [1.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert curve_auc([0.0, 0.1, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(0.05 + 0.9)
    with pytest.raises(UnlearnkitError, match="increasing"):
        curve_auc([0.0, 0.0, 1.0], [1.0, 1.0, 1.0])


def _two_filter_problem() -> tuple[WFNetModel, ArrayDataset, ArrayDataset]:
    """Class 0 is x = +1, class 1 is x = −1; filter 0 detects +1, filter 1 detects −1.

    logits = [relu(+x)·a0 − 0.1, relu(−x)·a1]: removing filter 0 makes class 0 lose its only evidence.
    """
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        net[3].weight.copy_(torch.eye(2))
        net[3].bias.copy_(torch.tensor([-0.1, 0.0]))
    model = WFNetModel(net.eval(), ["0"], 2)
    with torch.no_grad():
        model.alpha_of("0").copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # class 0 relies on filter 0
    forget = ArrayDataset(torch.ones(3, 1, 1, 1), torch.zeros(3, dtype=torch.long))
    retain = ArrayDataset(-torch.ones(4, 1, 1, 1), torch.ones(4, dtype=torch.long))
    return model, forget, retain


def test_deletion_insertion_on_a_hand_made_network():
    model, forget, retain = _two_filter_problem()
    assert unit_ranking(model, [0], "alpha") == [("0", 0), ("0", 1)]
    assert unit_ranking(model, [1], "alpha") == [("0", 1), ("0", 0)]
    res = deletion_insertion(model, forget, retain, [0], fractions=[0.0, 0.5, 1.0], rankings=["alpha"])
    c = res.curves["alpha"]
    # deletion: all on -> filter 0 off (class 0 lost) -> all off (everything predicted as 1)
    assert c["deletion"] == {"forget": [1.0, 0.0, 0.0], "retain": [1.0, 1.0, 1.0]}
    # insertion: all off -> filter 0 back (class 0 recovered) -> all on
    assert c["insertion"] == {"forget": [0.0, 1.0, 1.0], "retain": [1.0, 1.0, 1.0]}
    aucs = res.aucs()["alpha"]
    assert aucs["deletion_forget"] == pytest.approx(0.25) and aucs["insertion_forget"] == pytest.approx(0.75)
    assert aucs["deletion_retain"] == pytest.approx(1.0)
    assert res.n_units == 2 and (res.n_forget, res.n_retain) == (3, 4)
    assert model.unlearned_classes == ()  # the analysis leaves the stored request alone


def test_rankings_are_seeded_permutations(wf):
    units = sum(wf.units().values())
    for how in ("alpha", "random", "magnitude"):
        r = unit_ranking(wf, [3], how, seed=1)
        assert len(set(r)) == len(r) == units
        assert r == unit_ranking(wf, [3], how, seed=1)
    assert unit_ranking(wf, [3], "random", seed=1) != unit_ranking(wf, [3], "random", seed=2)


def test_alpha_ranking_beats_random_on_the_trained_model(wf, scenarios):
    s = scenarios[3]
    res = wfm.analysis(EvalContext(model=wf, scenario=s))  # what the metrics report (cached per model)
    aucs = res["auc"]
    assert res["curves"]["alpha"]["deletion"]["forget"][0] == pytest.approx(_per_class_acc(wf.model, s)[3])
    assert aucs["alpha"]["deletion_forget"] < aucs["random"]["deletion_forget"]
    assert aucs["alpha"]["insertion_forget"] > aucs["random"]["insertion_forget"] + 0.2


# -- metrics and the report section -------------------------------------------------------------------------

AUC_METRICS = ["wfnet_deletion_auc_forget", "wfnet_insertion_auc_forget",
               "wfnet_deletion_auc_retain", "wfnet_insertion_auc_retain"]  # fmt: skip


def test_metrics_need_a_wfnet_model(cnn, scenarios):
    out = evaluate(cnn, scenarios[3], metrics=AUC_METRICS, device="cpu")
    assert all(isinstance(v, NotComputed) and "not a WF-Net model" in str(v) for v in out.values())


def test_metrics_and_curves_on_a_wfnet_model(wf, scenarios):
    out = evaluate(wf, scenarios[3], metrics=AUC_METRICS, device="cpu")
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out.values()), out
    curves = wfm.wfnet_deletion_curves(EvalContext(model=wf, scenario=scenarios[3]))
    assert curves["fractions"] == list(wfm.FRACTIONS) and curves["classes"] == [3]
    assert out["wfnet_deletion_auc_forget"] == pytest.approx(curves["auc"]["alpha"]["deletion_forget"])
    assert set(curves["curves"]) == {"alpha", "random", "magnitude"}


def test_every_metric_evaluates_on_a_wfnet_model(wf, scenarios):
    """The runner evaluates every registered metric: none may fail on the wrapper (e.g. a non-float value)."""
    out = evaluate(wf, scenarios[3], device="cpu")
    assert all(isinstance(out[m], float) for m in AUC_METRICS)
    if wfm.CURVES_METRIC in out:  # registered where evaluate() keeps mapping values
        assert isinstance(out[wfm.CURVES_METRIC], dict) and "curves" in out[wfm.CURVES_METRIC]


def _record(method: str, metrics: dict, seed: int = 0, forget: str = "class:3") -> dict:
    return {"method": method, "model": "small_cnn", "params": {"epochs": 4}, "seed": seed, "status": "ok",
            "scenario": {"dataset": "digits", "forget": forget, "seed": seed}, "metrics": metrics}  # fmt: skip


def test_report_section_plots_the_curves(wf, scenarios):
    curves = wfm.wfnet_deletion_curves(EvalContext(model=wf, scenario=scenarios[3]))
    runs = [_record("wfnet", {"acc_test": 0.9, wfm.CURVES_METRIC: curves}, seed=s) for s in (0, 1)]
    runs.append(_record("finetune", {"acc_test": 0.9}))
    sec = wfr.wfnet_deletion_section(runs)
    assert sec is not None and "data:image/png;base64," in (sec.html or "")
    assert "deletion AUC, forgotten" in sec.markdown and "Mean over 2 runs" in sec.markdown
    auc = sec.data[0]["auc"]["alpha"]["deletion_forget"]
    assert auc["n"] == 2 and auc["mean"] == pytest.approx(curves["auc"]["alpha"]["deletion_forget"])
    assert sec.data[0]["mean_curves"]["alpha"]["deletion"]["forget"] == pytest.approx(
        curves["curves"]["alpha"]["deletion"]["forget"]
    )
    assert wfr.wfnet_deletion_section([_record("finetune", {"acc_test": 0.9})]) is None
    aucs_only = [_record("wfnet", {"wfnet_deletion_auc_forget": a, "wfnet_insertion_auc_forget": 0.8}, seed=i)
                 for i, a in enumerate((0.1, 0.3))]  # fmt: skip
    missing = wfr.wfnet_deletion_section(aucs_only)
    assert missing is not None and missing.markdown.startswith("not computed: the curves")
    assert "0.200 ± 0.141" in missing.markdown and "data:image" not in (missing.html or "")
