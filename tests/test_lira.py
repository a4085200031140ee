"""LiRA / U-LiRA: the Gaussian likelihood ratio, ROC figures, and the shadow-model driver on digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

import unlearnkit as uk
from unlearnkit.data import ArrayDataset, from_torch, load_dataset
from unlearnkit.engine import ModelCache, TrainConfig
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import Method
from unlearnkit.metrics import shadow_attacks as A
from unlearnkit.metrics._base import METRICS, NotComputed
from unlearnkit.metrics.functional.lira import attack_accuracy, lira_scores, roc_auc, tpr_at_fpr
from unlearnkit.protocols import shadows as L


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models train ~50x faster on one thread than on several contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- independent references ---------------------------------------------------------------------------


def _ref_llr(t, ins, outs, fixed=False):
    """Per-example loop with scipy: median, std (ddof 0) + 1e-30; fixed: both σ from all IN values."""
    out = []
    pooled = np.std(np.concatenate([np.asarray(i, float) for i in ins]))
    for j, x in enumerate(t):
        si = (pooled if fixed else np.std(ins[j])) + 1e-30
        so = (pooled if fixed else np.std(outs[j])) + 1e-30
        out.append(norm.logpdf(x, np.median(ins[j]), si) - norm.logpdf(x, np.median(outs[j]), so))
    return np.array(out)


def _ref_roc_points(scores, labels):
    """(FPR, TPR) of every rule "member if score >= t", t over the scores and +inf, by counting."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    pts = []
    for t in np.concatenate([np.unique(s), [np.inf]]):
        pred = s >= t
        pts.append(((pred & ~y).sum() / (~y).sum(), (pred & y).sum() / y.sum()))
    return pts


def _ref_auc(scores, labels):
    """Mann-Whitney: P(member score > non-member score) + ½ P(tie)."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = s[y][:, None], s[~y][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


# -- pure functions -----------------------------------------------------------------------------------


def test_llr_hand_computed_gaussians():
    # IN values {0, 2}: median 1, std 1; OUT values {-3, -1}: median -2, std 1
    ins, outs = np.array([[0.0], [2.0]]), np.array([[-3.0], [-1.0]])
    # at φ = 1: log N(1; 1, 1) − log N(1; −2, 1) = 0 − (−9/2)
    assert lira_scores(np.array([1.0]), ins, outs)[0] == pytest.approx(4.5, abs=1e-12)
    # at φ = −2 the sign flips: −9/2 − 0
    assert lira_scores(np.array([-2.0]), ins, outs)[0] == pytest.approx(-4.5, abs=1e-12)
    # halfway between the medians with equal σ: no evidence either way
    assert lira_scores(np.array([-0.5]), ins, outs)[0] == pytest.approx(0.0, abs=1e-12)
    # scale: equal σ gives ((φ−μ_out)² − (φ−μ_in)²) / 2σ²; doubling both spreads quarters the ratio
    s2 = lira_scores(np.array([1.0]), 2 * ins - 1, 2 * outs + 2)  # medians 1 / −2, std 2
    assert s2[0] == pytest.approx(4.5 / 4, abs=1e-12)


def test_llr_median_not_mean_and_matches_scipy_reference():
    rng = np.random.default_rng(0)
    n, m_in, m_out = 7, 5, 6
    ins, outs = rng.normal(2, 1.5, (m_in, n)), rng.normal(-1, 0.7, (m_out, n))
    ins[0, 0] = 50.0  # an outlier moves the mean, not the median
    t = rng.normal(0, 2, n)
    got = lira_scores(t, ins, outs)
    np.testing.assert_allclose(got, _ref_llr(t, list(ins.T), list(outs.T)), rtol=1e-10)
    mean_version = norm.logpdf(t[0], ins[:, 0].mean(), ins[:, 0].std()) - norm.logpdf(
        t[0], np.median(outs[:, 0]), outs[:, 0].std()
    )
    assert abs(got[0] - mean_version) > 1e-3


def test_llr_masks_lists_and_truncation():
    rng = np.random.default_rng(1)
    phi = rng.normal(size=(8, 5))
    keep = np.zeros((8, 5), bool)
    for j, c in enumerate([2, 3, 4, 5, 6]):  # example j is IN for its first c shadows
        keep[rng.permutation(8)[:c], j] = True
    t = rng.normal(size=5)
    ins = [phi[keep[:, j], j] for j in range(5)]
    outs = [phi[~keep[:, j], j] for j in range(5)]
    # no truncation: every available value, in mask or in list form
    full = lira_scores(t, phi, phi, in_mask=keep, out_mask=~keep, truncate=False)
    np.testing.assert_allclose(full, _ref_llr(t, ins, outs), rtol=1e-10)
    np.testing.assert_allclose(lira_scores(t, ins, outs, truncate=False), full, rtol=1e-12)
    # reference truncation: the first min-count values of each example (IN 2, OUT 2)
    trunc = lira_scores(t, phi, phi, in_mask=keep, out_mask=~keep)
    np.testing.assert_allclose(trunc, _ref_llr(t, [i[:2] for i in ins], [o[:2] for o in outs]), rtol=1e-10)
    assert not np.allclose(trunc, full)


def test_fixed_variance_takes_both_sigmas_from_pooled_in_values():
    ins = np.array([[0.0, 10.0], [2.0, 14.0]])  # per-example std 1 and 2; pooled std of {0,2,10,14}
    outs = np.array([[-5.0, 3.0], [-1.0, 3.5], [-3.0, 2.0]])
    t = np.array([1.5, 4.0])
    pooled = np.std([0.0, 2.0, 10.0, 14.0])
    expected = [
        norm.logpdf(t[j], np.median(ins[:, j]), pooled) - norm.logpdf(t[j], np.median(outs[:, j]), pooled)
        for j in range(2)
    ]
    np.testing.assert_allclose(lira_scores(t, ins, outs, fixed_variance=True), expected, rtol=1e-10)
    np.testing.assert_allclose(
        lira_scores(t, ins, outs, fixed_variance=True), _ref_llr(t, list(ins.T), list(outs.T), fixed=True)
    )


def test_offline_two_sided_and_one_sided():
    outs = np.array([[0.0, 5.0], [2.0, 7.0], [4.0, 6.0]])  # medians 2, 6; std √(8/3), √(2/3)
    t = np.array([-1.0, 6.5])
    mu, sd = np.median(outs, 0), outs.std(0)
    two = lira_scores(t, None, outs, online=False)
    np.testing.assert_allclose(two, -norm.logpdf(t, mu, sd), rtol=1e-12)
    # two-sided: being far *below* the OUT median also looks member-like
    assert lira_scores(np.array([-6.0, 6.0]), None, outs, online=False)[0] > two[0]
    one = lira_scores(t, None, outs, online=False, offline_tail="one_sided")
    np.testing.assert_allclose(one, norm.logcdf(t, mu, sd), rtol=1e-12)
    fixed = lira_scores(t, None, outs, online=False, fixed_variance=True)
    np.testing.assert_allclose(fixed, -norm.logpdf(t, mu, np.std(outs)), rtol=1e-12)


def test_llr_bad_input_is_one_line_error():
    ins, outs = np.zeros((2, 3)), np.ones((2, 3))
    with pytest.raises(UnlearnkitError, match="shape"):
        lira_scores(np.zeros(3), np.zeros((2, 4)), outs)
    with pytest.raises(UnlearnkitError, match="NaN"):
        lira_scores(np.array([0.0, np.nan, 0.0]), ins, outs)
    with pytest.raises(UnlearnkitError, match="no shadow values"):
        lira_scores(np.zeros(3), ins, outs, in_mask=np.array([[True, False, True], [True, False, True]]))
    with pytest.raises(UnlearnkitError, match="boolean"):
        lira_scores(np.zeros(3), ins, outs, in_mask=np.ones((2, 3)))
    with pytest.raises(UnlearnkitError, match="in_phi"):
        lira_scores(np.zeros(3), None, outs)
    with pytest.raises(UnlearnkitError, match="one 1-D sample per example"):
        lira_scores(np.zeros(3), [np.zeros(2)] * 2, outs)


def test_roc_figures_match_sklearn_and_brute_force():
    rng = np.random.default_rng(2)
    y = rng.random(300) < 0.4
    s = rng.normal(size=300) + 0.8 * y
    s[:20] = np.round(s[:20])  # some ties
    assert roc_auc(s, y) == pytest.approx(_ref_auc(s, y), abs=1e-12)
    pts = _ref_roc_points(s, y)
    for target in (0.0, 0.01, 0.05, 0.3, 1.0):
        assert tpr_at_fpr(s, y, target) == pytest.approx(max(t for f, t in pts if f <= target + 1e-15), abs=1e-12)
    assert attack_accuracy(s, y) == pytest.approx(max(1 - (f + 1 - t) / 2 for f, t in pts), abs=1e-12)
    # perfect separation and chance
    y2 = np.array([1, 1, 0, 0])
    assert roc_auc([3.0, 4.0, 1.0, 2.0], y2) == 1.0
    assert tpr_at_fpr([3.0, 4.0, 1.0, 2.0], y2, 0.01) == 1.0
    assert attack_accuracy([3.0, 4.0, 1.0, 2.0], y2) == 1.0
    assert roc_auc([1.0, 1.0, 1.0, 1.0], y2) == 0.5
    with pytest.raises(UnlearnkitError, match="both"):
        roc_auc([1.0, 2.0], [1, 1])


# -- the shadow-model driver --------------------------------------------------------------------------

TINY = TrainConfig(epochs=2, lr=3e-3, batch_size=64, weight_decay=0.0)


@pytest.fixture(scope="module")
def tiny():
    """digits random:0.1, a tiny MLP trained 2 epochs, 4 shadows (a few seconds)."""
    s = uk.Scenario(dataset="digits", forget="random:0.1", seed=0)
    original = uk.train("mlp", s, config=TINY, device="cpu", hidden=32)
    bank = L.ShadowBank.build(s, "mlp", TINY, 4, device="cpu", seed=0, model_kwargs={"hidden": 32})
    return s, original, bank


def test_keep_mask_is_balanced(tiny):
    s, _, bank = tiny
    k = len(bank.scored) // 2
    assert k == min(len(s.forget_idx), len(s.test_idx)) == len(s.forget_idx)
    keep = bank.keep[:, bank.scored]
    assert (keep.sum(axis=0) == 2).all()  # every scored example IN for exactly M/2 = 2 shadows
    assert (keep.sum(axis=1) == k).all()  # every shadow trains on exactly k of the 2k scored examples
    assert abs(bank.keep.sum(axis=1) - bank.keep.shape[1] / 2).max() <= 1  # half the pool each
    assert bank.is_member.sum() == k and (bank.pool_labels[bank.scored[:k]] == s.targets("forget")).all()
    for m in range(4):  # U-LiRA forget sets: |D_f| examples from the shadow's own half
        f = bank.forget_set(m)
        assert len(f) == len(s.forget_idx) and bank.keep[m, f].all()


def test_shadows_are_deterministic_and_cached(tiny, tmp_path):
    s, original, bank = tiny
    phi = bank.base_phi()
    cache = ModelCache(tmp_path)
    again = L.ShadowBank.build(s, "mlp", TINY, 4, device="cpu", seed=0, cache=cache, model_kwargs={"hidden": 32})
    np.testing.assert_array_equal(again.keep, bank.keep)
    np.testing.assert_allclose(again.base_phi(), phi, rtol=0, atol=1e-6)
    assert len(list(tmp_path.glob("*.safetensors"))) == 4
    loaded = L.ShadowBank.build(s, "mlp", TINY, 4, device="cpu", seed=0, cache=cache, model_kwargs={"hidden": 32})
    np.testing.assert_array_equal(loaded.base_phi(), again.base_phi())  # read back, not retrained
    assert bank.lira(original) == loaded.lira(original)
    other = L.ShadowBank.build(s, "mlp", TINY, 4, device="cpu", seed=1, model_kwargs={"hidden": 32})
    assert not np.array_equal(other.keep, bank.keep)


def test_lira_and_ulira_end_to_end(tiny):
    s, original, bank = tiny
    out = bank.lira(original)
    assert set(out) == set(A.LIRA_METRICS)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out.values())
    unlearned = uk.unlearn("finetune", original, s, device="cpu", epochs=1)
    u1 = bank.ulira("finetune", unlearned, params={"epochs": 1})
    assert set(u1) == set(A.ULIRA_METRICS)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in u1.values())
    assert bank.ulira("finetune", unlearned, params={"epochs": 1}) == u1  # same seed, same figures
    u2 = L.run_ulira(s, "neggrad", {"epochs": 1}, "mlp", TINY, 4, target_model=unlearned, device="cpu",
                     seed=0, model_kwargs={"hidden": 32}, bank=bank)  # fmt: skip
    assert all(isinstance(v, float) for v in u2.values())


def test_not_computed_reasons(tiny):
    s, original, bank = tiny
    for n, what in ((0, "off"), (3, "too few shadow models")):
        got = L.run_lira(s, "mlp", TINY, n, target_model=original, device="cpu")
        assert set(got) == set(A.LIRA_METRICS)
        assert all(isinstance(v, NotComputed) and what in v.reason for v in got.values())
        got = L.run_ulira(s, "finetune", None, "mlp", TINY, n, target_model=original, device="cpu")
        assert all(isinstance(v, NotComputed) and what in str(v) for v in got.values())
        assert str(next(iter(got.values()))).startswith("not computed: ")
    got = L.run_lira(s, "mlp", TINY, 4, target_model=original, device="cpu", nonmember_split="forget_test")
    assert all("no forget_test examples" in v.reason for v in got.values())

    class ClassOnly(Method):  # an unregistered method that refuses random requests
        name = "class_only"
        requests = frozenset({"class"})

        def __init__(self) -> None:
            pass

    got = bank.ulira(ClassOnly(), original)
    assert all(isinstance(v, NotComputed) and "does not support random" in v.reason for v in got.values())

    broken = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        broken[1].bias.fill_(float("nan"))
    got = bank.lira(broken)
    assert all(isinstance(v, NotComputed) and "target model" in v.reason for v in got.values())


def test_bad_input_raises_before_work(tiny):
    s, original, _ = tiny
    with pytest.raises(UnlearnkitError, match="n_shadows"):
        L.run_lira(s, "mlp", TINY, -1, target_model=original, device="cpu")
    with pytest.raises(UnlearnkitError, match="n_shadows"):
        L.run_lira(s, "mlp", TINY, 4.0, target_model=original, device="cpu")
    with pytest.raises(UnlearnkitError, match="nonmember_split"):
        L.run_lira(s, "mlp", TINY, 4, target_model=original, device="cpu", nonmember_split="train")
    with pytest.raises(UnlearnkitError):
        L.run_lira(s, "no_such_model", TINY, 4, target_model=original, device="cpu")
    with pytest.raises(UnlearnkitError):
        L.run_ulira(s, "no_such_method", None, "mlp", TINY, 4, target_model=original, device="cpu")
    with pytest.raises(UnlearnkitError, match="lr"):
        L.run_ulira(s, "finetune", {"lr": -1.0}, "mlp", TINY, 4, target_model=original, device="cpu")
    with pytest.raises(UnlearnkitError, match="target_model"):
        L.run_lira(s, "mlp", TINY, 4, target_model="model.pt", device="cpu")


def test_metric_names_registered_as_match_retrain():
    for name in A.LIRA_METRICS + A.ULIRA_METRICS:
        assert METRICS.get(name).higher_is_better is None
    assert A.HIGHER_IS_BETTER == dict.fromkeys(A.LIRA_METRICS + A.ULIRA_METRICS)


# -- does the attack detect membership? ---------------------------------------------------------------


def _noisy_digits(n_train: int, noise: float, seed: int = 0):
    """digits with a fraction of labels flipped, so a model must memorise its training examples."""
    b = load_dataset("digits")
    rng = np.random.default_rng(seed)

    def flip(ds: ArrayDataset, n: int) -> ArrayDataset:
        y = ds.y[:n].clone().numpy()
        f = rng.random(len(y)) < noise
        y[f] = (y[f] + rng.integers(1, 10, f.sum())) % 10
        return ArrayDataset(ds.x[:n], y)

    return from_torch(flip(b.train, n_train), flip(b.test, 10**6), num_classes=10, name="noisy_digits")


@pytest.fixture(scope="module")
def overfit():
    """An MLP that memorises noisy labels: its training members are detectable (~15 s on 2 cores)."""
    s = uk.Scenario(dataset=_noisy_digits(500, 0.2), forget="random:0.2", seed=0)
    cfg = TrainConfig(epochs=50, lr=5e-3, weight_decay=0.0)
    original = uk.train("mlp", s, config=cfg, device="cpu")
    retrained = uk.train("mlp", s, on="retain", config=cfg, device="cpu")
    bank = L.ShadowBank.build(s, "mlp", cfg, 6, device="cpu", seed=0)
    return original, retrained, bank


def test_lira_detects_members_of_an_overfit_model_but_not_of_the_retrained_one(overfit):
    original, retrained, bank = overfit
    orig = bank.lira(original, fixed_variance=True)
    retr = bank.lira(retrained, fixed_variance=True)
    # the retrained model never saw D_f: its forget examples and test examples are exchangeable
    assert abs(retr["lira_auc"] - 0.5) < 0.12
    assert orig["lira_auc"] > 0.62 and orig["lira_auc"] > retr["lira_auc"] + 0.1
    assert orig["lira_tpr_at_1pct_fpr"] > retr["lira_tpr_at_1pct_fpr"]
    assert bank.lira(original)["lira_auc"] > 0.58  # per-example variances too
    assert math.isfinite(bank.lira(retrained, online=False)["lira_auc"])


def test_ulira_tells_a_method_that_keeps_members_from_retraining(overfit):
    original, retrained, bank = overfit
    s = bank.scenario
    # retraining on D_r is the ideal unlearner: its shadows' IN and OUT distributions coincide
    ideal = bank.ulira("retrain", retrained)
    assert abs(ideal["ulira_auc"] - 0.5) < 0.12
    # two epochs of fine-tuning on D_r barely move a model that memorised D_f
    ft = uk.unlearn("finetune", original, s, device="cpu", epochs=2)
    got = bank.ulira("finetune", ft, params={"epochs": 2})
    assert got["ulira_auc"] > ideal["ulira_auc"] + 0.1
