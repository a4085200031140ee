"""The NeurIPS-2023 unlearning challenge's top solutions, each on its defining behaviour on a tiny problem.

fanchuan's first pass pulls the forget predictions toward uniform, and its contrastive loss is smallest
(log B) when a forget output is equally similar to every retain output; kookmin re-draws exactly the
``init_rate`` fraction of each layer's weights with the smallest |∇(CE_r − CE_f)|; conv_noise perturbs only
the first convolution, by N(0, σ²), and weighs classes as scikit-learn's "balanced"; prune_reinit prunes
the globally smallest weights and biases, re-draws the pruned weights within ±1/√fan_in and rounds to fp16.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import Subset

import unlearnkit as uk
from unlearnkit.engine import iterate
from unlearnkit.methods import UnlearnData
from unlearnkit.methods import conv_noise as noise_mod
from unlearnkit.methods import fanchuan as fan_mod
from unlearnkit.methods import kookmin as kook_mod
from unlearnkit.methods import prune_reinit as prune_mod
from unlearnkit.models import create_model


@pytest.fixture(scope="module")
def data(digits_class_scenario) -> UnlearnData:
    return UnlearnData.from_scenario(digits_class_scenario, device="cpu")


def _mean_kl_to_uniform(model: nn.Module, dataset) -> float:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in iterate(dataset, 256)])
    c = logits.shape[1]
    return F.kl_div(F.log_softmax(logits, 1), torch.full_like(logits, 1 / c), reduction="batchmean").item()


# -- fanchuan (1st place) ------------------------------------------------------------------------------------


def test_fanchuan_losses_match_their_definitions():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    ref = F.kl_div(F.log_softmax(logits, 1), torch.full((5, 7), 1 / 7), reduction="batchmean")
    assert torch.allclose(fan_mod.kl_uniform(logits), ref, atol=1e-6)
    z_f = torch.randn(3, 4, requires_grad=True)
    flat = fan_mod.similarity_uniform_loss(z_f, torch.ones(6, 4), 1.15)  # all similarities equal: log 6
    assert flat.item() == pytest.approx(math.log(6), abs=1e-5)
    z_r = torch.randn(6, 4, requires_grad=True) * 3
    assert fan_mod.similarity_uniform_loss(z_f, z_r, 1.15).item() > math.log(6) + 1e-3
    fan_mod.similarity_uniform_loss(z_f, z_r, 1.15).backward()
    assert z_f.grad is not None and z_f.grad.abs().sum() > 0


def test_fanchuan_uniform_pass_pulls_forget_predictions_to_uniform(trained_mlp, data):
    before = _mean_kl_to_uniform(copy.deepcopy(trained_mlp), data.forget)
    m = uk.create_method("fanchuan", epochs=0)  # only the uniform pass
    after = _mean_kl_to_uniform(m.unlearn(trained_mlp, data), data.forget)
    assert after < 0.75 * before, (before, after)  # three SGD steps on digits: 2.13 -> 1.11
    assert m.report_["fanchuan_uniform_kl"] > 0 and m.history_ == []


# -- kookmin (2nd place) --------------------------------------------------------------------------------------


def test_kookmin_triangle_schedule():
    assert [kook_mod.triangle(e, 5) for e in range(1, 6)] == pytest.approx([1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    assert [kook_mod.triangle(e, 1) for e in (1,)] == [1.0]


def test_kookmin_redraws_exactly_the_smallest_gradient_entries(trained_mlp, digits_class_scenario, data):
    # D_r smaller than D_f: the gradient's retain subset is all of D_r, one batch each side
    small = copy.copy(data)
    small._retain, small._forget = Subset(data.retain, range(20)), Subset(data.forget, range(30))
    ref_model = copy.deepcopy(trained_mlp).train()
    xr, yr = next(iterate(small.retain, 64))
    xf, yf = next(iterate(small.forget, 64))
    (F.cross_entropy(ref_model(xr), yr) - F.cross_entropy(ref_model(xf), yf)).backward()
    m = uk.create_method("kookmin", layers="conv_linear", init_rate=0.3, epochs=1, lr=1e-12)
    out = m.unlearn(trained_mlp, small)
    linears = [(a, b) for a, b in zip(ref_model.modules(), out.modules(), strict=True) if isinstance(a, nn.Linear)]
    assert linears
    for ref, new in linears:
        changed = (new.weight - ref.weight).abs() > 1e-6
        k = round(0.3 * ref.weight.numel())
        smallest = torch.zeros(ref.weight.numel(), dtype=torch.bool)
        smallest[ref.weight.grad.abs().flatten().argsort()[:k]] = True
        assert int(changed.sum()) == k
        assert torch.equal(changed.flatten(), smallest)
    with pytest.raises(uk.UnlearnkitError, match="no convolution"):
        uk.create_method("kookmin").unlearn(trained_mlp, data)  # default layers='conv' on an MLP


# -- conv_noise (3rd place) -----------------------------------------------------------------------------------


def test_balanced_class_weights_match_sklearn():
    y = torch.tensor([0, 0, 0, 1, 2, 2, 4, 4, 4, 4])  # class 3 absent
    w = noise_mod.balanced_class_weights(y, 5)
    ref = compute_class_weight("balanced", classes=np.array([0, 1, 2, 4]), y=y.numpy())
    assert torch.allclose(w[[0, 1, 2, 4]], torch.tensor(ref, dtype=torch.float32)) and w[3] == 0


def test_conv_noise_perturbs_only_the_first_convolution(digits_class_scenario, data):
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, (1, 8, 8))
    m = uk.create_method("conv_noise", noise_std=0.6, epochs=1, lr=1e-12)
    out = m.unlearn(model, data)
    convs = [(a, b) for a, b in zip(model.modules(), out.modules(), strict=True) if isinstance(a, nn.Conv2d)]
    diff = (convs[0][1].weight - convs[0][0].weight).detach()
    assert diff.std().item() == pytest.approx(0.6, rel=0.15) and abs(diff.mean().item()) < 0.15
    for ref, new in convs[1:]:
        assert torch.allclose(ref.weight, new.weight, atol=1e-6)


# -- prune_reinit (4th place) ---------------------------------------------------------------------------------


def test_prune_and_redraw_takes_the_globally_smallest_entries(trained_mlp):
    model = copy.deepcopy(trained_mlp)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    before = [(m.weight.detach().clone(), m.bias.detach().clone()) for m in linears]
    magnitudes = torch.cat([t.abs().flatten() for w, b in before for t in (w, b)]).sort().values
    k = round(0.5 * magnitudes.numel())
    threshold = magnitudes[k - 1]
    redrawn = prune_mod.prune_and_redraw(model, 0.5)
    n_weights_pruned = 0
    for m, (w0, b0) in zip(linears, before, strict=True):
        pruned_w, pruned_b = w0.abs() <= threshold, b0.abs() <= threshold
        n_weights_pruned += int(pruned_w.sum())
        assert torch.equal(m.weight[~pruned_w], w0[~pruned_w]) and torch.equal(m.bias[~pruned_b], b0[~pruned_b])
        assert (m.bias[pruned_b] == 0).all()
        assert (m.weight[pruned_w].abs() <= 1 / math.sqrt(w0.shape[1])).all()
    assert redrawn == n_weights_pruned


def test_prune_reinit_rounds_weights_to_half_precision(trained_mlp, data):
    out = uk.create_method("prune_reinit", epochs=0.5).unlearn(trained_mlp, data)
    for p in out.parameters():
        assert torch.equal(p, p.half().float())


# -- a class request: the three that re-fit on D_r forget the class and keep the rest -------------------------


@pytest.mark.parametrize(
    ("name", "params"),
    [("kookmin", {"layers": "conv_linear"}), ("prune_reinit", {}), ("fanchuan", {})],
)
def test_class_request_forgets_the_class_and_keeps_the_rest(name, params, trained_mlp, digits_class_scenario, data):
    out = uk.unlearn(name, trained_mlp, digits_class_scenario, device="cpu", **params)
    acc = uk.evaluate(out, digits_class_scenario, metrics=["acc_forget", "acc_retain"], device="cpu")
    assert acc["acc_forget"] < 0.5 and acc["acc_retain"] > 0.9, acc
