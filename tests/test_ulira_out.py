"""U-LiRA's OUT side (issue 21): shadows that never trained on x, unlearned like the IN ones (default) or not.

* a Gaussian simulation through the pure functions reproduces the issue's figures: a method that lowers every
  example's φ leaves the AUC unchanged with unlearned OUT, and drags it down (then inverts it) with
  untouched OUT; a perfect unlearner scores ≈ 0.5 either way;
* the shadow bank and the registered ``ulira_*`` metrics take OUT from the unlearned shadows by default and
  from the untouched ones with ``ulira_out="untouched"`` (simulated φ injected, no training);
* a bad ``ulira_out`` is a one-line error (config, API, bank); the setting is part of the run key when LiRA is on;
* end to end on digits with 16 shadows: a perfect unlearner that also lowers the confidence of never-seen
  examples (retrain, then a temperature on the logits) scores within 0.05 of 0.5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import unlearnkit as uk
from unlearnkit.engine import TrainConfig
from unlearnkit.errors import UnlearnkitError
from unlearnkit.experiments.config import parse_config
from unlearnkit.experiments.runner import Cell
from unlearnkit.methods import UnlearnData
from unlearnkit.methods.retrain import Retrain
from unlearnkit.metrics import EvalContext
from unlearnkit.metrics._base import NotComputed, evaluate_context
from unlearnkit.metrics.functional.lira import lira_scores, roc_auc
from unlearnkit.metrics.shadow_attacks import ULIRA_OUT, attack_figures
from unlearnkit.protocols import shadows as L

# -- the Gaussian simulation of the issue ---------------------------------------------------------------
# φ(x) of a model that never trained on x ~ N(μ_x, 0.8²), μ_x ~ N(0, 2²); training on x adds g_x = |N(3, 1)|;
# the audited method keeps 0.3 g_x of a forgotten x (residual memorisation) and lowers every φ it outputs
# by `shift` (it changes the whole model). 1000 scored examples (500 forgotten, 500 never seen), 16 shadows.


def _simulate(n: int, keep: np.ndarray, shift: float, residual: float = 0.3, seed: int = 0):
    """(target φ [n], unlearned shadows' φ [M, n], untouched shadows' φ [M, n], is_member [n])."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 2.0, n)
    gap = np.abs(rng.normal(3.0, 1.0, n))

    def noise(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.8, shape)

    untouched = mu + keep * gap + noise(*keep.shape)
    unlearned = mu + keep * residual * gap - shift + noise(*keep.shape)
    member = np.arange(n) < n // 2
    target = mu + member * residual * gap - shift + noise(n)
    return target, unlearned, untouched, member


def _sim_keep(n: int, m: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((n, m)), axis=1).T < m // 2  # every example IN for exactly m/2 shadows


def _aucs(shift: float, residual: float = 0.3, n: int = 1000, m: int = 16) -> dict[str, float]:
    keep = _sim_keep(n, m)
    target, unlearned, untouched, member = _simulate(n, keep, shift, residual)
    out = {}
    for side, out_phi in (("unlearned", unlearned), ("untouched", untouched)):
        s = lira_scores(target, unlearned, out_phi, in_mask=keep, out_mask=~keep, fixed_variance=True)
        out[side] = roc_auc(s, member)
    return out


def test_gaussian_simulation_reproduces_the_issue():
    """Issue 21: 0.762 either way without shift; 0.690 / 0.331 with untouched OUT at shifts 0.5 / 1.5."""
    none, half, big = _aucs(0.0), _aucs(0.5), _aucs(1.5)
    assert none["unlearned"] == pytest.approx(0.762, abs=0.02)
    assert none["untouched"] == pytest.approx(none["unlearned"], abs=0.01)
    # unlearned OUT: the shift moves IN, OUT and the target together; the scores do not change
    assert half["unlearned"] == pytest.approx(none["unlearned"], abs=1e-9)
    assert big["unlearned"] == pytest.approx(none["unlearned"], abs=1e-9)
    # untouched OUT: the global shift is read as (non-)membership, and the AUC falls, then inverts
    assert half["untouched"] == pytest.approx(0.690, abs=0.03)
    assert big["untouched"] == pytest.approx(0.331, abs=0.05)
    assert big["untouched"] < 0.5 < big["unlearned"]


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.5])
def test_gaussian_perfect_unlearner_scores_one_half(shift):
    """Forgotten ≡ never seen after unlearning (residual 0): 16 shadows give an AUC within 0.05 of 0.5."""
    got = _aucs(shift, residual=0.0)
    assert abs(got["unlearned"] - 0.5) < 0.05


# -- the bank and the registered metrics choose the OUT side ----------------------------------------------

TINY = TrainConfig(epochs=8, lr=1e-2, batch_size=64, weight_decay=0.0)


@pytest.fixture(scope="module")
def simulated_bank():
    """A 16-shadow bank on digits (drawn, never trained) whose φ are the simulation's, shift 1.5."""
    s = uk.Scenario(dataset="digits", forget="random:0.3", seed=0)
    bank = L.ShadowBank.build(s, "mlp", TINY, 16, device="cpu", seed=0)
    keep = bank.keep[:, bank.scored]
    target, unlearned, untouched, member = _simulate(len(bank.scored), keep, shift=1.5)
    assert (member == bank.is_member).all()  # the k forget examples come first in both
    bank.phi_base = untouched
    bank.unlearned_phi = lambda method: unlearned  # type: ignore[method-assign]
    bank.phi = lambda model: target  # type: ignore[method-assign]
    expected = {
        side: attack_figures("ulira", [target], unlearned, out_phi, keep, member, fixed_variance=True)
        for side, out_phi in (("unlearned", unlearned), ("untouched", untouched))
    }
    assert expected["untouched"]["ulira_auc"] < 0.45 < 0.65 < expected["unlearned"]["ulira_auc"]
    return bank, expected


class _Bank:
    """The resources of a metric evaluation, handed in (no builder)."""

    def __init__(self, bank: L.ShadowBank) -> None:
        self.bank = bank

    def get(self, name: str):
        return self.bank if name == "shadow_bank" else self.bank.unlearned_phi(None)


def test_bank_takes_out_from_the_unlearned_shadows_by_default(simulated_bank):
    bank, expected = simulated_bank
    target = nn.Linear(64, 10)
    assert bank.ulira("finetune", target, fixed_variance=True) == expected["unlearned"]
    assert bank.ulira("finetune", target, fixed_variance=True, ulira_out="untouched") == expected["untouched"]
    got = L.run_ulira(bank.scenario, "finetune", None, "mlp", TINY, 16, target_model=target, fixed_variance=True,
                      bank=bank)  # fmt: skip
    assert got == expected["unlearned"]


def test_registered_metrics_follow_the_ulira_out_option(simulated_bank):
    bank, expected = simulated_bank
    names = ["ulira_auc", "ulira_tpr_at_1pct_fpr", "ulira_acc"]
    for options, side in (({}, "unlearned"), ({"ulira_out": "untouched"}, "untouched"),
                          ({"ulira_out": "unlearned"}, "unlearned")):  # fmt: skip
        ctx = EvalContext(nn.Linear(64, 10), bank.scenario, resources=_Bank(bank),
                          options={"lira_fixed_variance": True, **options})  # fmt: skip
        assert evaluate_context(ctx, names) == expected[side]
    ctx = EvalContext(nn.Linear(64, 10), bank.scenario, resources=_Bank(bank), options={"ulira_out": "retrained"})
    got = evaluate_context(ctx, ["ulira_auc"])["ulira_auc"]
    assert isinstance(got, NotComputed) and "ulira_out must be one of unlearned, untouched" in got.reason


def test_bad_ulira_out_is_a_one_line_error(simulated_bank):
    bank, _ = simulated_bank
    assert ULIRA_OUT == ("unlearned", "untouched")
    with pytest.raises(UnlearnkitError, match=r"^ulira_out must be one of unlearned, untouched, got 'none'$"):
        bank.ulira("finetune", nn.Linear(64, 10), ulira_out="none")
    with pytest.raises(UnlearnkitError, match="ulira_out"):
        L.run_ulira(bank.scenario, "finetune", None, "mlp", TINY, 16, target_model=nn.Linear(64, 10), ulira_out=1)
    with pytest.raises(UnlearnkitError, match="ulira_out"):
        uk.evaluate(nn.Linear(64, 10), bank.scenario, metrics=["acc_test"], ulira_out="Unlearned")
    base = {"dataset": "digits", "forget": "random:0.1", "methods": ["finetune"], "lira_shadows": 4}
    with pytest.raises(UnlearnkitError) as e:
        parse_config({**base, "ulira_out": "retrained"})
    assert "ulira_out" in str(e.value) and "\n" not in str(e.value)
    assert parse_config(base).ulira_out == "unlearned"


def test_ulira_out_is_part_of_the_run_key_when_lira_is_on():
    common = {"dataset": "digits", "forget": "random:0.1", "seed": 0, "model": "mlp", "method": "finetune",
              "params": {}, "train": {}}  # fmt: skip
    on = [Cell(**common, lira_shadows=8, ulira_out=side).identity() for side in ULIRA_OUT]
    assert on[0]["ulira_out"] == "unlearned" and on[0] != on[1]
    off = [Cell(**common, ulira_out=side).identity() for side in ULIRA_OUT]
    assert "ulira_out" not in off[0] and off[0] == off[1]  # LiRA off: keys stay what they were


# -- end to end: a perfect unlearner that shifts never-seen examples ------------------------------------


class TemperedRetrain(Retrain):
    """Retrain on D_r, then divide the logits by 2.5: forgotten ≡ never seen, every φ pulled towards 0."""

    name = "tempered_retrain"

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        fresh = super()._unlearn(model, data, generator)
        last = [m for m in fresh.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(0.4)
            last.bias.mul_(0.4)
        return fresh


@pytest.fixture
def _one_thread():
    """Tiny models train far faster on one thread than on several contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("_one_thread")
def test_perfect_unlearner_that_shifts_never_seen_examples_scores_one_half():
    s = uk.Scenario(dataset="digits", forget="random:0.3", seed=0)
    kw = {"hidden": 32}
    original = uk.train("mlp", s, config=TINY, device="cpu", **kw)
    bank = L.ShadowBank.build(s, "mlp", TINY, 16, device="cpu", seed=0, model_kwargs=kw)
    method = TemperedRetrain()
    data = UnlearnData.from_scenario(s, make_model=bank.make_model, train_config=TINY, device="cpu", seed=0)
    target = method.unlearn(original, data)
    plain = Retrain().unlearn(original, data)
    # the method does move never-seen examples: their φ falls by more than 1 (mean over the test examples)
    never_seen = ~bank.is_member
    assert np.mean(bank.phi(plain)[never_seen] - bank.phi(target)[never_seen]) > 1.0
    got = bank.ulira(method, target)
    assert abs(got["ulira_auc"] - 0.5) < 0.05


# -- the report says what U-LiRA's OUT side was ------------------------------------------------------------


def _run(method: str, config: dict, metrics: dict) -> dict:
    return {"status": "ok", "model": "mlp", "method": method, "seed": 0, "params": {}, "config": config,
            "scenario": {"dataset": "digits", "forget": "random:0.1"}, "metrics": metrics}  # fmt: skip


def test_report_footnotes_the_ulira_out_side():
    from unlearnkit.reports.tables import render_markdown

    runs = [_run("retrain", {"ulira_out": "unlearned"}, {"ulira_auc": 0.51, "lira_auc": 0.5}),
            _run("finetune", {"ulira_out": "unlearned"}, {"ulira_auc": 0.55, "lira_auc": 0.5})]  # fmt: skip
    md = render_markdown(runs)
    header = next(line for line in md.split("## All metrics")[1].splitlines() if line.startswith("| method"))
    assert "ulira_auc ≈ [1]" in header and "lira_auc ≈ |" in header
    assert "[1] U-LiRA (ulira_*): IN = shadows trained on x and then unlearned" in md
    assert "OUT = shadows that never trained on x, unlearned too on their own forget sets" in md
    old = render_markdown([_run("finetune", {}, {"ulira_auc": 0.55})])  # stored before ulira_out existed
    assert "OUT = shadows that never trained on x, as trained (not unlearned)" in old
    assert "U-LiRA" not in render_markdown([_run("finetune", {}, {"lira_auc": 0.55})])
