"""The field's strongest methods, each on its defining behaviour on a tiny problem (digits, an MLP).

SSD dampens only entries whose forget importance dominates and leaves the rest bit-identical; SalUn moves
only its salient weights; SISA retrains only the shards the forget set touches and equals SISA trained
from scratch on D_r; the ℓ1 penalty decays linearly; SCRUB's max-steps push the student away from the
teacher on D_f; the bad teacher's random copy is really re-initialised; Fisher forgetting refuses big
models and its Fisher matches a brute-force one.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Subset

import unlearnkit as uk
from unlearnkit.engine import TrainConfig, iterate
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import UnlearnData
from unlearnkit.methods import bad_teacher as bad_teacher_mod
from unlearnkit.methods import fisher_forgetting as fisher_mod
from unlearnkit.methods import l1_sparse as l1_mod
from unlearnkit.methods import salun as salun_mod
from unlearnkit.methods import scrub as scrub_mod
from unlearnkit.methods import sisa as sisa_mod
from unlearnkit.methods import ssd as ssd_mod
from unlearnkit.scenario import ForgetRequest


@pytest.fixture(scope="module")
def data(digits_class_scenario) -> UnlearnData:
    return UnlearnData.from_scenario(digits_class_scenario, device="cpu")


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _reference_importance(model: nn.Module, dataset, batch_size: int) -> dict[str, torch.Tensor]:
    """Mean over batches of squared batch-mean CE gradients, with plain ``backward`` (independent of ssd.py)."""
    m = copy.deepcopy(model).eval()
    acc = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    batches = 0
    for xb, yb in iterate(dataset, batch_size):
        m.zero_grad()
        F.cross_entropy(m(xb), yb).backward()
        for n, p in m.named_parameters():
            acc[n] += p.grad**2
        batches += 1
    return {n: a / batches for n, a in acc.items()}


# -- SSD -----------------------------------------------------------------------------------------------------


def _reference_per_sample_importance(model: nn.Module, dataset) -> dict[str, torch.Tensor]:
    """Mean over examples of squared single-example CE gradients, one plain ``backward`` each."""
    m = copy.deepcopy(model).eval()
    acc = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    for i in range(len(dataset)):
        x, y = dataset[i]
        m.zero_grad()
        F.cross_entropy(m(x.unsqueeze(0)), torch.tensor([int(y)])).backward()
        for n, p in m.named_parameters():
            acc[n] += p.grad**2
    return {n: a / len(dataset) for n, a in acc.items()}


@pytest.mark.parametrize("importance", ["batch", "per_sample"])
def test_ssd_dampens_exactly_the_selected_entries(trained_mlp, digits_class_scenario, data, importance):
    alpha, lam, bs = 3.0, 0.5, 64
    method = ssd_mod.SelectiveSynapticDampening(
        selection_weighting=alpha, dampening_constant=lam, batch_size=bs, importance=importance
    )
    out = method.unlearn(trained_mlp, data)
    scn = digits_class_scenario
    full = ConcatDataset([scn.retain, scn.forget])
    if importance == "batch":
        i_f, i_d = _reference_importance(trained_mlp, scn.forget, bs), _reference_importance(trained_mlp, full, bs)
    else:
        i_f, i_d = (
            _reference_per_sample_importance(trained_mlp, scn.forget),
            _reference_per_sample_importance(trained_mlp, full),
        )
    after, before = dict(out.named_parameters()), _params(trained_mlp)
    n_selected = 0
    for name, p0 in before.items():
        sel = i_f[name] > alpha * i_d[name]
        n_selected += int(sel.sum())
        p1 = after[name].detach()
        assert torch.equal(p1[~sel], p0[~sel]), f"{name}: an unselected entry changed"
        beta = (lam * i_d[name] / i_f[name]).clamp(max=1.0)
        torch.testing.assert_close(p1[sel], p0[sel] * beta[sel], rtol=1e-4, atol=1e-7)
        assert (p1[sel].abs() <= p0[sel].abs()).all(), "dampening never grows a weight"
    assert 0 < n_selected == method.report_["ssd_dampened"]


def test_ssd_per_sample_ratio_respects_the_bound(trained_mlp, digits_class_scenario):
    """Per-sample importances obey I_f/I_D <= |D|/|D_f| (the batch estimate need not)."""
    scn = digits_class_scenario
    full = ConcatDataset([scn.retain, scn.forget])
    dev = torch.device("cpu")
    i_f = ssd_mod.per_sample_importance(trained_mlp, scn.forget, 64, dev, "f")
    i_d = ssd_mod.per_sample_importance(trained_mlp, full, 64, dev, "d")
    bound = len(full) / len(scn.forget)
    worst = max(float((i_f[n] / i_d[n].clamp_min(1e-30))[i_d[n] > 0].max()) for n in i_f)
    assert bound * 0.5 < worst <= bound * (1 + 1e-4)


def test_ssd_calibrated_alpha_is_the_mildest_that_forgets(trained_mlp, digits_class_scenario, data):
    """α=None scans down from the bound |D|/|D_f| and keeps the first α that drives D_f's accuracy to 0 (a class
    request) while held-out retain accuracy stays within the tolerance."""
    from unlearnkit.methods._losses import accuracy_on

    scn, cpu = digits_class_scenario, torch.device("cpu")
    m = ssd_mod.SelectiveSynapticDampening()
    out = m.unlearn(trained_mlp, data)
    alpha, steps = m.report_["ssd_alpha"], m.report_["ssd_calibration_steps"]
    cands = ssd_mod.alpha_candidates(len(scn.retain) + len(scn.forget), len(scn.forget))
    assert cands[0] == pytest.approx((len(scn.retain) + len(scn.forget)) / len(scn.forget)) and cands[-1] == 1.0
    assert all(a > b for a, b in itertools.pairwise(cands))
    assert m.resolved_params(data) == {"selection_weighting": alpha, "selection_weighting_paper": ssd_mod.PAPER_ALPHA}
    held_out = Subset(scn.val, [i for i in range(len(scn.val)) if int(scn.val[i][1]) not in scn.forget_classes])
    floor = accuracy_on(trained_mlp, held_out, cpu) - m.retain_tolerance

    def at(a: float) -> nn.Module:
        return ssd_mod.SelectiveSynapticDampening(selection_weighting=a).unlearn(trained_mlp, data)

    def ok(model: nn.Module) -> bool:  # within the retain tolerance and forgotten
        return accuracy_on(model, held_out, cpu) >= floor and accuracy_on(model, scn.forget, cpu) == 0.0

    assert accuracy_on(out, held_out, cpu) >= floor
    if accuracy_on(out, scn.forget, cpu) == 0.0:  # forgotten: no milder candidate forgot within the tolerance
        assert alpha == cands[steps - 1] and not any(ok(at(a)) for a in cands[: steps - 1])
    else:  # nothing forgot within the tolerance: every candidate was scanned
        assert steps == len(cands) and not any(ok(at(a)) for a in cands)
    fixed = ssd_mod.SelectiveSynapticDampening(selection_weighting=5.0)
    fixed.unlearn(trained_mlp, data)
    assert fixed.report_["ssd_calibration_steps"] == 0 and fixed.resolved_params(data) == {}


def test_ssd_selects_less_as_alpha_grows(trained_mlp, data):
    counts = []
    for alpha in (2.0, 4.0, 1e6):
        m = ssd_mod.SelectiveSynapticDampening(selection_weighting=alpha)
        out = m.unlearn(trained_mlp, data)
        counts.append(m.report_["ssd_dampened"])
    assert counts[0] > counts[1] > counts[2] == 0
    assert all(
        torch.equal(a, b) for a, b in zip(out.state_dict().values(), trained_mlp.state_dict().values(), strict=True)
    )


# -- SalUn -----------------------------------------------------------------------------------------------------


def test_salun_moves_only_salient_weights(trained_mlp, digits_class_scenario, data):
    method = salun_mod.SalUn(saliency_fraction=0.3, epochs=1)
    out = method.unlearn(trained_mlp, data)
    mask = method.mask_
    total = sum(m.numel() for m in mask.values())
    assert sum(int(m.sum()) for m in mask.values()) == int(0.3 * total)
    # the mask is the top 30% of |∇ CE(D_f)| (gradient summed over batches, recomputed independently)
    ref = copy.deepcopy(trained_mlp).eval()
    for xb, yb in iterate(digits_class_scenario.forget, method.batch_size):
        F.cross_entropy(ref(xb), yb).backward()  # grads accumulate over batches
    g = {n: p.grad.abs() for n, p in ref.named_parameters()}
    inside = torch.cat([g[n][mask[n]] for n in g])
    outside = torch.cat([g[n][~mask[n]] for n in g])
    assert inside.min() >= outside.max() * (1 - 1e-6)
    before, moved = _params(trained_mlp), 0
    for name, p in out.named_parameters():
        assert torch.equal(p.detach()[~mask[name]], before[name][~mask[name]]), f"{name}: a non-salient weight moved"
        moved += int((p.detach()[mask[name]] != before[name][mask[name]]).sum())
    assert moved > 0.5 * int(0.3 * total)


# -- SISA -------------------------------------------------------------------------------------------------------


def _sisa_data(base, forget_ids, retain_ids) -> UnlearnData:
    return UnlearnData(
        request=ForgetRequest("random", count=max(1, len(forget_ids))), num_classes=10, in_shape=(1, 8, 8),
        _forget=Subset(base, sorted(forget_ids)), _retain=Subset(base, sorted(retain_ids)),
        make_model=lambda: uk.create_model("mlp", 10, (1, 8, 8), hidden=32),
        train_config=TrainConfig(epochs=2, scheduler="none"), seed=3,
    )  # fmt: skip


def test_sisa_retrains_only_affected_shards_and_equals_retraining(digits_class_scenario):
    scn = digits_class_scenario
    base = scn.bundle.train
    ids = np.asarray(scn.train_idx[:400], dtype=np.int64)
    shards, slices = 3, 3
    shard_of, slice_of = sisa_mod.assign(ids, len(base), shards, slices, seed=3)
    forget = ids[(shard_of == 1) & (slice_of == 2)][:5]  # all in shard 1, last slice
    retain = np.setdiff1d(ids, forget)
    sisa_mod.SISA.clear_cache()

    method = sisa_mod.SISA(shards=shards, slices=slices)
    out = method.unlearn(nn.Linear(1, 1), _sisa_data(base, forget.tolist(), retain.tolist()))
    original = list(sisa_mod.SISA._CACHE.values())[-1]  # SISA trained on D = D_f ∪ D_r
    rep = method.report_
    assert rep["sisa_trained_now"] == 1 and rep["sisa_shards_retrained"] == 1
    assert rep["sisa_samples_retrained"] == int((shard_of == 1).sum()) - len(forget)
    assert 0 < rep["sisa_unlearn_cost_vs_full"] < 0.5  # one shard, one slice of three: a fraction of full retraining
    for s in (0, 2):  # untouched shards are the originals, bit for bit
        for k, v in out.shards[s].state_dict().items():
            assert torch.equal(v, original.checkpoints[s][-1][k])
    assert any(not torch.equal(v, original.checkpoints[1][-1][k]) for k, v in out.shards[1].state_dict().items())

    # exactness: SISA trained from scratch on D_r alone (empty forget set) is the same model
    scratch = sisa_mod.SISA(shards=shards, slices=slices).unlearn(
        nn.Linear(1, 1), _sisa_data(base, [], retain.tolist())
    )
    for (k, a), b in zip(out.state_dict().items(), scratch.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # a second request on the same D reuses the cached training
    again = sisa_mod.SISA(shards=shards, slices=slices)
    again.unlearn(nn.Linear(1, 1), _sisa_data(base, forget.tolist(), retain.tolist()))
    assert again.report_["sisa_trained_now"] == 0


def test_sisa_ensemble_averages_softmax():
    torch.manual_seed(0)
    members = [nn.Linear(4, 3) for _ in range(3)]
    x = torch.randn(5, 4)
    out = sisa_mod.SISAEnsemble(members)(x)
    expected = torch.stack([m(x).softmax(-1) for m in members]).mean(0)
    torch.testing.assert_close(out.softmax(-1), expected)
    torch.testing.assert_close(out.exp(), expected)


def test_sisa_stage_epochs_follow_the_schedule():
    assert sisa_mod.stage_epochs(30, 4) == [12, 12, 12, 12]
    assert sisa_mod.stage_epochs(10, 4) == [4, 4, 4, 4]
    assert sisa_mod.stage_epochs(1, 4) == [1, 1, 1, 1]  # every slice trains at least once


# -- l1-sparse ---------------------------------------------------------------------------------------------------


def test_l1_schedule_decays_linearly_to_zero():
    assert l1_mod.l1_schedule(1.0, 5) == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert l1_mod.l1_schedule(0.3, 5, no_l1_epochs=2) == pytest.approx([0.3, 0.2, 0.1, 0.0, 0.0])


def test_l1_sparse_applies_the_schedule_and_shrinks_weights(trained_mlp, data):
    with_l1 = l1_mod.L1Sparse(epochs=3, alpha=1e-3)
    a = with_l1.unlearn(trained_mlp, data)
    assert [h[0] for h in with_l1.history_] == pytest.approx(l1_mod.l1_schedule(1e-3, 3))
    b = l1_mod.L1Sparse(epochs=3, alpha=0.0).unlearn(trained_mlp, data)
    with torch.no_grad():
        assert float(l1_mod.l1_norm(a)) < float(l1_mod.l1_norm(b)) < float(l1_mod.l1_norm(trained_mlp)) * 1.5
    with pytest.raises(UnlearnkitError, match="no_l1_epochs"):
        l1_mod.L1Sparse(epochs=2, no_l1_epochs=2).unlearn(trained_mlp, data)


# -- SCRUB -------------------------------------------------------------------------------------------------------


def _forget_kl(student: nn.Module, teacher: nn.Module, dataset, temperature: float) -> float:
    with torch.no_grad():
        xs = torch.cat([xb for xb, _ in iterate(dataset, 512)])
        return float(scrub_mod.distill_kl(student(xs), teacher(xs), temperature))


def test_scrub_max_steps_raise_the_forget_kl(trained_mlp, digits_class_scenario, data):
    kw = {"epochs": 1, "batch_size": 64}
    with_max = scrub_mod.Scrub(msteps=1, **kw)
    out_max = with_max.unlearn(trained_mlp, data)
    out_min = scrub_mod.Scrub(msteps=0, **kw).unlearn(trained_mlp, data)
    kl_max = _forget_kl(out_max, trained_mlp, digits_class_scenario.forget, 2.0)
    kl_min = _forget_kl(out_min, trained_mlp, digits_class_scenario.forget, 2.0)
    assert kl_max > 5 * kl_min and kl_max > 0.1
    assert with_max.history_[0][0] < 0  # the max-step minimised −KL


# -- Bad Teacher -------------------------------------------------------------------------------------------------


def test_bad_teacher_random_copy_is_reinitialised(trained_mlp):
    a, b, c = (bad_teacher_mod.random_copy(trained_mlp, s) for s in (1, 1, 2))
    for (n, p), q, r, p0 in zip(
        a.named_parameters(), b.parameters(), c.parameters(), trained_mlp.parameters(), strict=True
    ):
        assert torch.equal(p, q) and not torch.equal(p, r) and not torch.equal(p, p0), n

    class Bare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.pos = nn.Parameter(torch.zeros(2))

    with pytest.raises(UnlearnkitError, match="pos"):
        bad_teacher_mod.random_copy(Bare(), 0)


def test_bad_teacher_forgets_the_class_and_keeps_the_rest(trained_mlp, digits_class_scenario, data):
    from unlearnkit.methods._losses import accuracy_on

    out = bad_teacher_mod.BadTeacher(epochs=2).unlearn(trained_mlp, data)
    cpu = torch.device("cpu")
    before_f = accuracy_on(trained_mlp, digits_class_scenario.forget, cpu)
    before_r = accuracy_on(trained_mlp, digits_class_scenario.retain, cpu)
    after_f = accuracy_on(out, digits_class_scenario.forget, cpu)
    after_r = accuracy_on(out, digits_class_scenario.retain, cpu)
    assert before_f > 0.8 and after_f < 0.5 * before_f
    assert after_r > before_r - 0.05


# -- Fisher forgetting -------------------------------------------------------------------------------------------


def test_fisher_refuses_big_models(trained_mlp, data):
    with pytest.raises(UnlearnkitError, match="small models"):
        fisher_mod.FisherForgetting(max_params=100).unlearn(trained_mlp, data)


def test_fisher_information_matches_brute_force(trained_mlp, digits_class_scenario):
    ds = Subset(digits_class_scenario.retain, list(range(6)))
    got = fisher_mod.diagonal_fisher(copy.deepcopy(trained_mlp), ds, 4, torch.device("cpu"))
    m = copy.deepcopy(trained_mlp).eval()
    ref = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    for xb, _ in iterate(ds, 1):
        prob = m(xb).softmax(1).detach()[0]
        for c in range(10):
            m.zero_grad()
            F.cross_entropy(m(xb), torch.tensor([c])).backward()
            for n, p in m.named_parameters():
                ref[n] += prob[c] * p.grad**2
    for n in ref:
        torch.testing.assert_close(got[n], ref[n] / 6, rtol=1e-4, atol=1e-10)


def test_fisher_zeroes_the_forgotten_head_row(trained_mlp, data):
    out = fisher_mod.FisherForgetting(alpha=1e-12).unlearn(trained_mlp, data)
    head_w, head_b = out[-1].weight.detach(), out[-1].bias.detach()
    assert head_w[3].abs().max() < 0.2 and head_b[3].abs() < 0.2  # mean 0, std √(1e-3)
    keep = [i for i in range(10) if i != 3]
    torch.testing.assert_close(head_w[keep], trained_mlp[-1].weight[keep], atol=1e-3, rtol=0)
