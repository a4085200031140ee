"""Relearning attacks (resource ``relearn_attack``, metrics in ``metrics/relearn.py``) and EU-k / CF-k."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import unlearnkit as uk
from unlearnkit.engine import TrainConfig
from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.experiments import parse_config
from unlearnkit.experiments.runner import plan
from unlearnkit.methods.eu_k import last_k_layers
from unlearnkit.metrics import NotComputed
from unlearnkit.metrics.relearn import RELEARN_METRICS, relearn_time, steps_to_reach
from unlearnkit.protocols.relearn import RelearnSettings, head_layers, penultimate_features

FAST = {"seeds": 1, "steps": 10, "probe_retain": 200}


@pytest.fixture(scope="module")
def retrained_mlp(digits_class_scenario) -> nn.Module:
    return uk.train("mlp", digits_class_scenario, on="retain", config=TrainConfig(epochs=8), device="cpu")


@pytest.fixture(scope="module")
def finetuned_mlp(trained_mlp, digits_class_scenario) -> nn.Module:
    return uk.unlearn("finetune", trained_mlp, digits_class_scenario, device="cpu", epochs=2)


def _relearn(model, scenario, original=None, **knobs):
    return uk.evaluate(model, scenario, original=original, metrics=["acc_forget_test", *RELEARN_METRICS],
                       device="cpu", relearn={**FAST, **knobs})  # fmt: skip


def test_the_attack_recovers_less_on_the_retrained_model(trained_mlp, retrained_mlp, finetuned_mlp,
                                                         digits_class_scenario):  # fmt: skip
    sc = digits_class_scenario
    ret = _relearn(retrained_mlp, sc, original=trained_mlp)
    ft = _relearn(finetuned_mlp, sc, original=trained_mlp)
    orig = _relearn(trained_mlp, sc, original=trained_mlp)
    assert ft["acc_forget_test"] < 0.2 and ret["acc_forget_test"] < 0.05  # both "forgot" before the attack
    assert ret["relearn_acc_forget_test"] + 0.2 < ft["relearn_acc_forget_test"]  # the finetuned model relearns
    assert ret["relearn_acc_forget_test"] + 0.2 < orig["relearn_acc_forget_test"]
    assert ret["relearn_time"] > ft["relearn_time"] and orig["relearn_time"] == 0.0
    curve = ft["relearn_curve"]
    assert curve["kind"] == "class" and len(curve["mean"]) == FAST["steps"] + 1
    assert curve["mean"][0] == pytest.approx(ft["acc_forget_test"], abs=1e-6)  # step 0 is the model as received
    assert curve["mean"][-1] == pytest.approx(ft["relearn_acc_forget_test"], abs=1e-6)
    assert isinstance(ft["relearn_rtt_acc"], NotComputed) and "class requests" in ft["relearn_rtt_acc"].reason


def test_rtt_and_probe_are_accuracies(trained_mlp, digits_random_scenario):
    out = _relearn(trained_mlp, digits_random_scenario)
    for name in ("relearn_rtt_acc", "probe_acc_forget"):
        assert 0.0 <= out[name] <= 1.0
    assert out["relearn_curve"]["kind"] == "rtt"
    assert isinstance(out["relearn_acc_forget_test"], NotComputed)  # no forget_test split on a random request
    assert isinstance(out["relearn_time"], NotComputed)


def test_evaluating_leaves_the_model_and_the_global_rng_alone(finetuned_mlp, trained_mlp, digits_class_scenario):
    before = {k: v.clone() for k, v in finetuned_mlp.state_dict().items()}
    grads = [p.requires_grad for p in finetuned_mlp.parameters()]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    out = _relearn(finetuned_mlp, digits_class_scenario, original=trained_mlp)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in finetuned_mlp.state_dict().items())
    assert [p.requires_grad for p in finetuned_mlp.parameters()] == grads
    assert not finetuned_mlp._forward_hooks and all(not m._forward_hooks for m in finetuned_mlp.modules())
    again = _relearn(finetuned_mlp, digits_class_scenario, original=trained_mlp)  # seeded: same values
    assert again["relearn_acc_forget_test"] == out["relearn_acc_forget_test"]


def test_relearn_time_counts_steps_to_half_the_original_accuracy():
    assert steps_to_reach([0.0, 0.2, 0.5, 0.9], 0.5) == 2
    assert steps_to_reach([0.0, 0.1, 0.2], 0.5) == 2  # never reached: capped at the budget
    assert steps_to_reach([0.6, 0.1], 0.5) == 0
    assert relearn_time([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]], original_acc=1.0) == pytest.approx(1.5)


def test_ensembles_are_probed_on_every_members_features():
    torch.manual_seed(0)
    members = nn.ModuleList([nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)) for _ in range(2)])

    class Ens(nn.Module):
        def __init__(self):
            super().__init__()
            self.shards = members

        def forward(self, x):
            return torch.stack([m(x).softmax(-1) for m in self.shards]).mean(0).log()

    ens = Ens()
    assert len(head_layers(ens, 3)) == 2
    assert penultimate_features(ens, torch.randn(5, 4), 3, torch.device("cpu")).shape == (5, 12)
    assert not any(m._forward_hooks for m in ens.modules())


@pytest.mark.parametrize(
    ("knobs", "match"),
    [
        ({"k": 0}, "relearn.k must be an integer >= 1"),
        ({"steps": 2.5}, "relearn.steps must be an integer >= 1"),
        ({"lr": -1}, "relearn.lr must be a number > 0"),
        ({"k": 20, "batch_size": 10}, "relearn.batch_size must be an integer >= relearn.k"),
        ({"stepz": 3}, "unknown relearn setting 'stepz'"),
    ],
)
def test_bad_knobs_are_refused_in_one_line(knobs, match, trained_mlp, digits_class_scenario):
    with pytest.raises(UnlearnkitError, match=match) as e:
        uk.evaluate(trained_mlp, digits_class_scenario, metrics=["relearn_acc_forget_test"], relearn=knobs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"k": 0}, "relearn.k"),
        ({"steps": -1}, "relearn.steps"),
        ({"k": 20, "batch_size": 10}, "batch_size"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_config_sections_are_refused_in_one_line(section, match):
    with pytest.raises(ConfigError, match=match) as e:
        parse_config({"relearn": section}, "cfg.yaml")
    assert "\n" not in str(e.value)


def test_knobs_are_in_the_run_key_and_off_keeps_the_old_key():
    base = {"methods": ["finetune"], "forget": ["class:3"]}
    on, _ = plan(parse_config(base))
    tuned, _ = plan(parse_config({**base, "relearn": {"k": 5}}))
    off, _ = plan(parse_config({**base, "relearn": False}))
    assert [c.relearn for c in off] == [None] * len(off)
    assert all(a.key != b.key for a, b in zip(on, tuned, strict=True))
    assert all("relearn" not in c.identity() for c in off)
    assert all(c.identity()["relearn"]["k"] == 10 for c in on)


def test_off_switch_reports_why(trained_mlp, digits_class_scenario):
    out = uk.evaluate(
        trained_mlp, digits_class_scenario, original=trained_mlp, metrics=list(RELEARN_METRICS), relearn=False
    )
    assert all(isinstance(v, NotComputed) and "off" in v.reason for v in out.values())
    assert RelearnSettings.parse(None) == RelearnSettings()


def test_eu_k_reinitialises_and_cf_k_finetunes_only_the_last_k_layers(trained_mlp, digits_class_scenario):
    names = dict(trained_mlp.named_parameters())
    top = {id(p) for m in last_k_layers(trained_mlp, 2) for p in m.parameters()}
    bottom = [n for n, p in names.items() if id(p) not in top]
    assert bottom and len(top) == 4  # mlp: Linear, Linear, Linear -> the last two (weights + biases)
    for method in ("eu_k", "cf_k"):
        out = uk.unlearn(method, trained_mlp, digits_class_scenario, device="cpu", epochs=1)
        new = dict(out.named_parameters())
        assert all(torch.equal(new[n], names[n]) for n in bottom), method  # frozen part untouched
        assert not any(torch.equal(new[n], names[n]) for n in names if n not in bottom), method
    with pytest.raises(UnlearnkitError, match="k = 9 but the model has 3"):
        uk.unlearn("eu_k", trained_mlp, digits_class_scenario, device="cpu", k=9)


def _run(method, forget, metrics, seed=0):
    scenario = {"dataset": "digits", "forget": forget, "seed": seed}
    return {"key": f"{method}{forget}{seed}", "scenario": scenario, "model": "mlp", "method": method, "params": {},
            "seed": seed, "status": "ok", "metrics": metrics}  # fmt: skip


def _class_metrics(before, after, probe, curve):
    curve_value = {"kind": "class", "mean": curve}
    return {"acc_forget_test": before, "acc_retain_test": 0.9, "acc_test": 0.9, "relearn_acc_forget_test": after,
            "relearn_time": 5.0, "probe_acc_forget": probe, "relearn_curve": curve_value}  # fmt: skip


def test_the_report_shows_before_after_and_the_gap_to_retrain(tmp_path):
    from unlearnkit.reports import write_reports
    from unlearnkit.reports.leaderboard import RELEARN_HEADER, build_boards
    from unlearnkit.reports.relearn import relearning

    runs = [
        _run("retrain", "class:3", _class_metrics(0.0, 0.3, 0.7, [0.0, 0.3])),
        _run("scrub", "class:3", _class_metrics(0.0, 0.9, 0.9, [0.0, 0.9])),
    ]
    sec = relearning(runs)
    assert sec is not None and sec.title == "Relearning"
    assert "| scrub | 0.000 | 0.900 | 0.300 | +0.600 | 5.0 | 0.900 | +0.200 |" in sec.markdown
    assert "data:image/png" in sec.html  # the recovery curves
    board = build_boards(runs)[0]
    col = board.headers.index(RELEARN_HEADER)
    assert [r[col] for r in board.rows] == ["0.300", "0.900 (+0.600)"]
    out = write_reports(runs, tmp_path)
    assert "## Relearning" in out["md"].read_text()
    plain = [_run(r["method"], "class:3", {"acc_forget_test": 0.0, "acc_retain_test": 0.9, "acc_test": 0.9})
             for r in runs]  # fmt: skip
    assert relearning(plain) is None and RELEARN_HEADER not in build_boards(plain)[0].headers


class _Spy(nn.Module):
    """Records every training-mode input batch in ``seen`` (a list shared by its deep copies)."""

    def __init__(self, net: nn.Module, seen: list[torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self.seen = seen

    def __deepcopy__(self, memo):
        return _Spy(copy.deepcopy(self.net, memo), self.seen)

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.net(x)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.flatten(1)}


def test_variants_draw_only_the_images_they_name(trained_mlp, digits_class_scenario):
    sc = digits_class_scenario
    seen: list[torch.Tensor] = []
    spy = _Spy(copy.deepcopy(trained_mlp), seen)
    knobs = {"seeds": 1, "steps": 3, "probe_retain": 50, "forget_only": True, "retain_only": True}
    out = uk.evaluate(spy, sc, original=trained_mlp, metrics=list(RELEARN_METRICS), device="cpu", relearn=knobs)
    forget = _rows(torch.stack([sc.bundle.train[int(i)][0] for i in sc.forget_idx]))
    assert len(seen) == 9  # main, forget-only, retain-only attacks, 3 steps each
    per_batch = [(len(x), len(_rows(x) & forget)) for x in seen]
    assert per_batch[:3] == [(64, 10)] * 3  # k = 10 forget images + 54 retain images
    assert per_batch[3:6] == [(10, 10)] * 3  # forget images only
    assert per_batch[6:] == [(64, 0)] * 3  # retain only: zero forget images
    for name in ("relearn_forget_only_acc", "relearn_retain_only_acc"):
        assert 0.0 <= out[name] <= 1.0
    assert set(out["relearn_curve"]["variants"]) == {"forget_only", "retain_only"}
    off = _relearn(trained_mlp, sc, original=trained_mlp)
    assert (
        isinstance(off["relearn_retain_only_acc"], NotComputed)
        and "retain_only: true" in off["relearn_retain_only_acc"].reason
    )


def test_the_curve_goes_on_beyond_the_budget_without_moving_the_after_attack_value(
    finetuned_mlp, trained_mlp, digits_class_scenario
):
    out = _relearn(finetuned_mlp, digits_class_scenario, original=trained_mlp, steps=4, extra_steps=3)
    curve = out["relearn_curve"]
    assert len(curve["mean"]) == 8 and curve["budget"] == 4
    assert out["relearn_acc_forget_test"] == pytest.approx(curve["mean"][4], abs=1e-6)
    assert out["relearn_time"] <= 4  # capped at the budget, not at the curve's end
    short = _relearn(finetuned_mlp, digits_class_scenario, original=trained_mlp, steps=4)
    assert short["relearn_curve"]["mean"] == curve["mean"][:5]  # the same attack, stopped at the budget


def test_the_new_options_stay_out_of_the_run_key_at_their_defaults():
    base = {"methods": ["finetune"], "forget": ["class:3"]}
    on, _ = plan(parse_config(base))
    assert "retain_only" not in on[0].identity()["relearn"]
    opt, _ = plan(parse_config({**base, "relearn": {"retain_only": True}}))
    assert opt[0].identity()["relearn"]["retain_only"] is True and opt[0].key != on[0].key
    with pytest.raises(ConfigError, match="extra_steps"):
        parse_config({"relearn": {"extra_steps": -1}})


def test_setting2_attacks_the_merged_vit_at_k_10_only(digits_class_scenario):
    pytest.importorskip("timm")
    from unlearnkit.engine import TrainConfig as TC
    from unlearnkit.metrics import MetricUnavailable
    from unlearnkit.models import create_model
    from unlearnkit.protocols import ResourceBuilder, ResourceInputs

    torch.manual_seed(0)
    vit = create_model("vit_digits", 10, (1, 8, 8), depth=1)
    nn.init.normal_(vit.head.weight, std=0.5)
    knobs = {"seeds": 1, "steps": 2, "probe_retain": 40}

    def attack(shots):
        inputs = ResourceInputs(digits_class_scenario, model="vit_digits", model_kwargs={"depth": 1},
                                train=TC(batch_size=32), shots=shots, evaluated=vit, relearn=knobs)  # fmt: skip
        return ResourceBuilder(inputs, disk=False).get("relearn_attack")

    res = attack(10)
    assert res.kind == "class" and len(res.curves[0]) == 3 and res.attacked.startswith("VisionTransformer")
    with pytest.raises(MetricUnavailable, match="k = 10 forget images only"):
        attack(5)
    x = torch.stack([digits_class_scenario.bundle.test[i][0] for i in range(6)])
    cls = vit.eval().forward_head(vit.forward_features(x), pre_logits=True)  # the CLS token before the head
    assert np.allclose(penultimate_features(vit, x, 10, torch.device("cpu")), cls.detach().double().numpy(), atol=1e-5)


def test_the_report_adds_a_column_per_variant_and_marks_the_budget():
    from unlearnkit.reports._aggregate import aggregate
    from unlearnkit.reports.relearn import recovery_plot, relearning

    runs = [
        _run("retrain", "class:3", {**_class_metrics(0.0, 0.3, 0.7, [0.0, 0.3, 0.4]), "relearn_retain_only_acc": 0.1}),
        _run("scrub", "class:3", {**_class_metrics(0.0, 0.9, 0.9, [0.0, 0.9, 0.9]), "relearn_retain_only_acc": 0.6}),
    ]
    for r in runs:
        r["metrics"]["relearn_curve"]["budget"] = 1
    sec = relearning(runs)
    assert "retain-only attack" in sec.markdown and "forget-only attack" not in sec.markdown
    assert "| scrub | 0.000 | 0.900 | 0.300 | +0.600 | 5.0 | 0.900 | +0.200 | 0.600 |" in sec.markdown
    fig_budget = recovery_plot(aggregate(runs)[0])
    assert fig_budget is not None
