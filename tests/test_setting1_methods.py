"""Focused tests of the talk's setting-1 methods: Boundary Shrink/Expanding, UNSIR, the untraining loss.

Each checks the method's defining behaviour on a tiny problem (hand-built linear models, or the digits
MLP of ``conftest.py``); the registry-generated contract tests cover the rest.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unlearnkit as uk
import unlearnkit.methods.boundary_expand  # registers the methods until methods/__init__ imports them
import unlearnkit.methods.boundary_shrink
import unlearnkit.methods.unsir
import unlearnkit.methods.untrain
from unlearnkit.data import ArrayDataset
from unlearnkit.engine import TrainConfig, iterate
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import UnlearnData, create_method
from unlearnkit.methods.boundary_expand import find_head, prune, widen
from unlearnkit.methods.boundary_shrink import nearest_wrong_class
from unlearnkit.methods.unsir import error_maximising_noise, recalibrate_batch_norm, retain_subset
from unlearnkit.methods.untrain import untraining_loss


def _acc(model: nn.Module, ds) -> float:
    correct = total = 0
    with torch.no_grad():
        for x, y in iterate(ds, 512):
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def _mean_ce(model: nn.Module, ds) -> float:
    with torch.no_grad():
        x, y = next(iterate(ds, 100_000))
        return F.cross_entropy(model(x), y).item()


def _data(scenario: uk.Scenario) -> UnlearnData:
    return UnlearnData.from_scenario(scenario, device="cpu")


# -- Boundary Shrink ---------------------------------------------------------------------------------------


def _three_class_linear() -> nn.Module:
    """Logits (0, 4·x0 − 2.1, 4·x1 − 2.5) on 2-D inputs: at (0.5, 0.5) class 0 wins, class 1's boundary is
    0.025 away along x0, class 2's 0.125 away along x1 (so class 1 is the nearest wrong class)."""
    lin = nn.Linear(2, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]))
        lin.bias.copy_(torch.tensor([0.0, -2.1, -2.5]))
    return lin


def test_neighbour_search_finds_the_nearest_wrong_class():
    model = _three_class_linear()
    x, y = torch.tensor([[0.5, 0.5]]), torch.tensor([0])
    y_hat, x_adv = nearest_wrong_class(model, x, y, 0.1, clip_unit=True)
    assert y_hat.tolist() == [1]  # x' = (0.6, 0.6): logits (0, 0.3, −0.1)
    assert torch.allclose(x_adv, torch.tensor([[0.6, 0.6]]))  # one signed step of ε on every input
    # too small a step does not cross any boundary: the attack fails and the label is kept
    assert nearest_wrong_class(model, x, y, 0.01, clip_unit=True)[0].tolist() == [0]
    # multi-class forgetting: another forgotten class is never the neighbour
    assert nearest_wrong_class(model, x, y, 0.2, clip_unit=True)[0].tolist() == [1]
    assert nearest_wrong_class(model, x, y, 0.2, clip_unit=True, excluded=(0, 1))[0].tolist() == [2]
    # clipping keeps x' in [0, 1]; without it the step may leave the box
    edge = torch.tensor([[0.95, 0.5]])
    assert nearest_wrong_class(model, edge, y, 0.1, clip_unit=True)[1].max().item() == pytest.approx(1.0)
    assert nearest_wrong_class(model, edge, y, 0.1, clip_unit=False)[1].max().item() == pytest.approx(1.05)
    assert all(p.grad is None for p in model.parameters())


def test_boundary_shrink_moves_forget_samples_to_their_neighbour_class(digits_class_scenario, trained_mlp):
    data = _data(digits_class_scenario)
    x_f, y_f = next(iterate(data.forget, 10_000))
    y_hat, _ = nearest_wrong_class(trained_mlp, x_f, y_f, 0.2, clip_unit=True)
    assert (y_hat != y_f).float().mean() > 0.5  # most samples of class 3 have a neighbour within ε
    method = create_method("boundary_shrink", bound=0.2, lr=0.01)
    out = method.unlearn(trained_mlp, data)
    with torch.no_grad():
        pred = out(x_f).argmax(1)
    moved = y_hat != y_f
    assert (pred[moved] == y_hat[moved]).float().mean() > 0.8  # fine-tuned on the original x towards ŷ
    assert _acc(out, digits_class_scenario.split("forget_test")) < 0.5 * _acc(
        trained_mlp, digits_class_scenario.split("forget_test")
    )
    assert method.report_["bs_clipped_to_unit"] == 1.0  # digits are in [0, 1]


# -- Boundary Expanding ------------------------------------------------------------------------------------


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.aux = nn.Linear(4, 10)  # also 10 outputs, but not the last such layer
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.out = nn.Linear(8, 10)

    def forward(self, x):
        return self.out(self.body(x.flatten(1)[:, :4]))


def test_find_head_picks_the_last_linear_with_num_classes_outputs():
    model = _TwoHeads()
    parent, attr, lin = find_head(model, 10)
    assert parent is model and attr == "out" and lin is model.out
    cnn = uk.create_model("small_cnn", 10, (1, 8, 8))
    assert find_head(cnn, 10)[1] == "head"
    with pytest.raises(UnlearnkitError, match=r"needs a final nn\.Linear layer with 7 outputs"):
        find_head(cnn, 7)


def test_widen_then_prune_restores_the_head_exactly():
    lin = nn.Linear(5, 4)
    wide = widen(lin, torch.Generator().manual_seed(0))
    assert wide.out_features == 5 and torch.equal(wide.weight[:4], lin.weight) and wide.bias[4].item() == 0.0
    assert wide.weight[4].abs().sum() > 0  # the shadow row is initialised, not zero
    back = prune(wide)
    assert torch.equal(back.weight, lin.weight) and torch.equal(back.bias, lin.bias)


def test_boundary_expand_keeps_the_architecture_and_moves_forget_predictions(digits_class_scenario):
    cnn = uk.train("small_cnn", digits_class_scenario, config=TrainConfig(epochs=4), device="cpu")
    data = _data(digits_class_scenario)
    out = create_method("boundary_expand").unlearn(cnn, data)
    before, after = cnn.state_dict(), out.state_dict()
    assert before.keys() == after.keys()
    assert all(before[k].shape == after[k].shape for k in before)
    assert isinstance(out.head, nn.Linear) and out.head.out_features == 10
    forget = digits_class_scenario.split("forget")
    assert _acc(out, forget) < _acc(cnn, forget) - 0.3  # forget samples left their class
    with torch.no_grad():  # ... and went to the kept classes, spread over more than one of them
        preds = out(next(iterate(forget, 10_000))[0]).argmax(1)
    assert len(set(preds.tolist()) - {3}) >= 2


def test_boundary_expand_refuses_a_model_without_a_head(digits_class_scenario):
    no_head = nn.Sequential(nn.Flatten(), nn.Linear(64, 12))
    with pytest.raises(UnlearnkitError, match=r"needs a final nn\.Linear layer with 10 outputs"):
        create_method("boundary_expand").unlearn(no_head, _data(digits_class_scenario))


# -- UNSIR -------------------------------------------------------------------------------------------------


def test_error_maximising_noise_raises_the_forget_class_error(trained_mlp):
    model = copy.deepcopy(trained_mlp)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    noise, hist = error_maximising_noise(
        model, 3, (16, 1, 8, 8), steps=30, lr=0.1, lam=0.1, generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )  # fmt: skip
    assert noise.shape == (16, 1, 8, 8) and len(hist) == 31
    with torch.no_grad():
        start = torch.randn((16, 1, 8, 8), generator=torch.Generator().manual_seed(0))  # the same initial noise
        ce_start = F.cross_entropy(model(start), torch.full((16,), 3)).item()
        ce_learned = F.cross_entropy(model(noise), torch.full((16,), 3)).item()
    assert hist[0] == pytest.approx(ce_start, rel=1e-5)
    assert ce_learned > ce_start + 1.0  # maximises CE(f(N), c): the model's error on class 3 grows
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # the model is fixed
    assert all(p.grad is None for p in model.parameters())


def test_retain_subset_takes_per_class_samples(digits_class_scenario):
    sub = retain_subset(digits_class_scenario.retain, 7, torch.Generator().manual_seed(0))
    labels = next(iterate(sub, 10_000))[1]
    assert sorted(labels.unique().tolist()) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert all((labels == c).sum() == 7 for c in labels.unique())


def test_unsir_forgets_several_classes_without_the_forget_data():
    scenario = uk.Scenario(dataset="digits", forget="class:3,7", seed=0)
    mlp = uk.train("mlp", scenario, config=TrainConfig(epochs=8), device="cpu")
    data = UnlearnData.from_scenario(scenario, provide=("retain",), device="cpu")  # no D_f at all
    method = create_method("unsir", impair_lr=3e-3)  # the MLP has no batch norm: a stronger impair step
    out = method.unlearn(mlp, data)
    x, y = next(iterate(scenario.split("forget_test"), 10_000))
    with torch.no_grad():
        before, after = mlp(x).argmax(1), out(x).argmax(1)
    for c in (3, 7):  # each forgotten class, by its own noise
        acc_before, acc_after = (before[y == c] == c).float().mean(), (after[y == c] == c).float().mean()
        assert acc_after < 0.2 and acc_after < acc_before - 0.5
    assert _acc(out, scenario.split("retain_test")) > 0.75
    assert method.report_["unsir_noise_ce_gain"] > 0


def test_batch_norm_recalibration_matches_the_data_statistics():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3))
    model[1].running_mean.fill_(5.0)  # skewed statistics, as after the noise batches
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert recalibrate_batch_norm(model.eval(), ArrayDataset(x, torch.zeros(40)), 20, torch.device("cpu")) == 1
    with torch.no_grad():
        feats = model[0](x)
    assert torch.allclose(model[1].running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not model.training and model[1].momentum == 0.1  # mode and momentum restored


def test_unsir_needs_the_forget_class_labels(digits_class_scenario, trained_mlp):
    data = _data(digits_class_scenario)
    data.forget_classes = ()
    with pytest.raises(UnlearnkitError, match="forget class label"):
        create_method("unsir").unlearn(trained_mlp, data)


# -- the untraining loss -----------------------------------------------------------------------------------


def test_untraining_loss_value_and_self_bounding_gradient():
    ce_f = torch.tensor(0.5, requires_grad=True)
    ce_r = torch.tensor(0.2, requires_grad=True)
    loss = untraining_loss(ce_f, ce_r, lam=3.0, eps=1e-6)
    assert loss.item() == pytest.approx(1 / (0.5 + 1e-6) + 3 * 0.2)
    loss.backward()
    assert ce_f.grad.item() == pytest.approx(-1 / (0.5 + 1e-6) ** 2)  # −1/(CE_f + ε)²: vanishes as CE_f grows
    assert ce_r.grad.item() == pytest.approx(3.0)


@pytest.mark.parametrize("request_kind", ["class", "random"])
def test_untrain_raises_forget_error_and_keeps_retain_accuracy(request_kind, digits_class_scenario, trained_mlp,
                                                               digits_random_scenario):  # fmt: skip
    scenario = digits_class_scenario if request_kind == "class" else digits_random_scenario
    model = (
        trained_mlp
        if request_kind == "class"
        else uk.train("mlp", scenario, config=TrainConfig(epochs=8), device="cpu")
    )
    method = create_method("untrain")
    out = method.unlearn(model, _data(scenario))
    # CE_f rises: far for a class; a little for random samples, which the model fits no better than unseen ones
    rise = 1.0 if request_kind == "class" else 0.0
    assert _mean_ce(out, scenario.forget) > _mean_ce(model, scenario.forget) + rise
    held_out = scenario.split("retain_test") if request_kind == "class" else scenario.test
    assert _acc(out, held_out) >= _acc(model, held_out) - 0.05  # the retain term keeps what is not forgotten
