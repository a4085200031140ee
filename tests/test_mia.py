"""Population membership-inference attacks: features, starting-kit LR, OPTML SVC, bad-teaching SVC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import unlearnkit as uk
from unlearnkit.metrics import mia as _mia  # noqa: F401  (registers the MIA metrics)
from unlearnkit.metrics._base import METRICS, NotComputed, evaluate
from unlearnkit.metrics.functional import mia as Fmia

MIA_METRICS = ["mia_loss_lr", "mia_efficacy", "mia_efficacy_entropy", "mia_efficacy_m_entropy", "mia_entropy_svc"]


def _optml_m_entropy(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """OPTML-Group ``SVC_MIA.m_entropy`` transcribed to numpy (log p for the reverse term, column indexing)."""
    log_prob = np.log(np.where(p > 0, p, 1e-30))
    log_reverse_prob = np.log(np.where(p > 0, p, 1e-30))  # sic: the repo uses p.log() here too
    modified_probs = p.copy()
    modified_probs[:, labels] = (1 - p)[:, labels]
    modified_log_probs = log_reverse_prob.copy()
    modified_log_probs[:, labels] = log_prob[:, labels]
    return -np.sum(modified_probs * modified_log_probs, axis=-1)


def _random_probs(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    z = rng.normal(size=(n, c)) * 2
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# -- features ---------------------------------------------------------------------------------------


def test_modified_entropy_hand_computed_and_differs_from_optml():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    y = np.array([0, 2])
    # row 0 (y=0): −0.3 ln 0.7 − 0.2 ln 0.8 − 0.1 ln 0.9
    r0 = -0.3 * math.log(0.7) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9)
    # row 1 (y=2, p_y=0.3, a wrong prediction): −0.7 ln 0.3 − 0.1 ln 0.9 − 0.6 ln 0.4
    r1 = -0.7 * math.log(0.3) - 0.1 * math.log(0.9) - 0.6 * math.log(0.4)
    got = Fmia.modified_entropy(p, y)
    np.testing.assert_allclose(got, [r0, r1], rtol=1e-12)
    assert got[1] > got[0]  # confidently wrong > confidently right
    # the OPTML form: columns {0, 2} get 1−p in *both* rows, log p everywhere
    optml = _optml_m_entropy(p, y)
    o0 = -(0.3 * math.log(0.7) + 0.2 * math.log(0.2) + 0.9 * math.log(0.1))
    np.testing.assert_allclose(optml[0], o0, rtol=1e-12)
    assert not np.allclose(got, optml, rtol=1e-3)


def test_modified_entropy_extremes_are_finite():
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    got = Fmia.modified_entropy(p, np.array([0, 0]))
    assert np.all(np.isfinite(got))
    assert got[0] == pytest.approx(0.0, abs=1e-12)  # certain and correct
    # certain and wrong: −(1 − 0)·ln(max(0, 1e-30)) − 1·ln(max(1 − 1, 1e-30)) = −2 ln 1e-30
    assert got[1] == pytest.approx(-2 * math.log(1e-30))


def test_features_match_direct_numpy():
    rng = np.random.default_rng(0)
    p = _random_probs(rng, 50, 5)
    y = rng.integers(0, 5, size=50)
    f = Fmia.mia_features(torch.from_numpy(p), torch.from_numpy(y))
    assert set(f) == set(Fmia.FEATURES)
    np.testing.assert_array_equal(f["correctness"], (p.argmax(1) == y).astype(float))
    np.testing.assert_allclose(f["confidence"], p[np.arange(50), y])
    np.testing.assert_allclose(f["entropy"], -(p * np.log(p)).sum(1))
    mentr = np.array(
        [-(1 - p[i, y[i]]) * np.log(p[i, y[i]]) - sum(p[i, j] * np.log(1 - p[i, j]) for j in range(5) if j != y[i])
         for i in range(50)]
    )  # fmt: skip
    np.testing.assert_allclose(f["m_entropy"], mentr, rtol=1e-12)
    np.testing.assert_allclose(f["prob"], p)


def test_features_reject_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        Fmia.mia_features(np.full((2, 3), 1 / 3), np.array([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        Fmia.mia_features(np.full((2, 3), 1 / 3), np.array([0]))


# -- starting-kit logistic regression on losses --------------------------------------------------------


def test_loss_lr_same_distribution_is_chance():
    rng = np.random.default_rng(1)
    forget = rng.exponential(0.5, size=400)
    test = rng.exponential(0.5, size=1500)
    assert Fmia.loss_lr_mia(forget, test, seed=0) == pytest.approx(0.5, abs=0.1)


def test_loss_lr_separated_is_one():
    rng = np.random.default_rng(2)
    forget = rng.uniform(0.0, 0.1, size=200)  # members: low loss
    test = rng.uniform(5.0, 6.0, size=300)
    assert Fmia.loss_lr_mia(forget, test, seed=0) == pytest.approx(1.0)


def test_loss_lr_deterministic_and_seeded():
    rng = np.random.default_rng(3)
    forget, test = rng.exponential(0.3, size=300), rng.exponential(0.6, size=700)
    a = Fmia.loss_lr_mia(forget, test, seed=7)
    assert a == Fmia.loss_lr_mia(forget, test, seed=7)
    assert 0.5 < a <= 1.0


def test_loss_lr_too_small_raises():
    with pytest.raises(Fmia.InsufficientSamplesError, match="per class"):
        Fmia.loss_lr_mia(np.array([0.1, 0.2, 0.3]), np.arange(100.0))
    with pytest.raises(ValueError, match="NaN"):
        Fmia.loss_lr_mia(np.array([np.nan] * 20), np.arange(20.0))


# -- OPTML MIA-Efficacy --------------------------------------------------------------------------------


def test_svc_efficacy_forget_like_test_vs_like_retain():
    rng = np.random.default_rng(4)
    retain = rng.normal(0.95, 0.02, size=500)  # member confidences: high
    test = rng.normal(0.40, 0.05, size=300)
    like_test = rng.normal(0.40, 0.05, size=100)
    like_retain = rng.normal(0.95, 0.02, size=100)
    assert Fmia.svc_mia_efficacy(retain[:300], test, like_test) == pytest.approx(1.0, abs=0.02)
    assert Fmia.svc_mia_efficacy(retain[:300], test, like_retain) == pytest.approx(0.0, abs=0.02)


def _probs_with_confidence(rng: np.random.Generator, conf: np.ndarray, c: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities whose true-class entry is ``conf`` and the rest share 1 − conf unevenly."""
    n = len(conf)
    y = rng.integers(0, c, size=n)
    rest = rng.dirichlet(np.ones(c - 1), size=n) * (1 - conf)[:, None]
    p = np.empty((n, c))
    for i in range(n):
        p[i, np.arange(c) != y[i]] = rest[i]
        p[i, y[i]] = conf[i]
    return p, y


@pytest.mark.parametrize("feature", Fmia.FEATURES)
def test_mia_efficacy_each_feature(feature):
    rng = np.random.default_rng(5)
    pr, yr = _probs_with_confidence(rng, rng.uniform(0.97, 1.0, size=400))
    pt, yt = _probs_with_confidence(rng, rng.uniform(0.05, 0.35, size=200))
    pf_test, yf_test = _probs_with_confidence(rng, rng.uniform(0.05, 0.35, size=80))
    pf_ret, yf_ret = _probs_with_confidence(rng, rng.uniform(0.97, 1.0, size=80))
    like_test = Fmia.mia_efficacy(pr, yr, pt, yt, pf_test, yf_test, feature=feature)
    like_retain = Fmia.mia_efficacy(pr, yr, pt, yt, pf_ret, yf_ret, feature=feature)
    assert 0.0 <= like_retain < like_test <= 1.0
    if feature != "correctness":  # correctness is too coarse for a clean split (argmax may still be y)
        assert like_test > 0.9
        assert like_retain < 0.1


def test_mia_efficacy_unknown_feature():
    p = np.full((4, 2), 0.5)
    y = np.zeros(4, dtype=int)
    with pytest.raises(ValueError, match="unknown MIA feature"):
        Fmia.mia_efficacy(p, y, p, y, p, y, feature="loss")  # type: ignore[arg-type]


def test_svc_cap_is_seeded_and_deterministic():
    rng = np.random.default_rng(6)
    retain, test = rng.normal(0.8, 0.1, size=3000), rng.normal(0.6, 0.1, size=2500)
    target = rng.normal(0.7, 0.1, size=200)
    a = Fmia.svc_mia_efficacy(retain, test, target, max_per_side=500, seed=1)
    assert a == Fmia.svc_mia_efficacy(retain, test, target, max_per_side=500, seed=1)
    assert 0.0 <= a <= 1.0


def test_svc_too_small_raises():
    with pytest.raises(Fmia.InsufficientSamplesError, match="at least 2"):
        Fmia.svc_mia_efficacy(np.array([0.9]), np.array([0.1, 0.2]), np.array([0.5]))
    with pytest.raises(Fmia.InsufficientSamplesError, match="empty"):
        Fmia.svc_mia_efficacy(np.array([0.9, 0.8]), np.array([0.1, 0.2]), np.array([]))


# -- bad-teaching entropy SVC ----------------------------------------------------------------------------


def test_entropy_svc_member_rate_direction():
    rng = np.random.default_rng(8)
    pr, _ = _probs_with_confidence(rng, rng.uniform(0.97, 1.0, size=600))  # low entropy
    pt, _ = _probs_with_confidence(rng, rng.uniform(0.25, 0.4, size=300))  # high entropy
    pf_ret, _ = _probs_with_confidence(rng, rng.uniform(0.97, 1.0, size=60))
    pf_test, _ = _probs_with_confidence(rng, rng.uniform(0.25, 0.4, size=60))
    assert Fmia.entropy_svc_member_rate(pr, pt, pf_ret) > 0.9
    assert Fmia.entropy_svc_member_rate(pr, pt, pf_test) < 0.1
    assert Fmia.entropy_svc_member_rate(pr, pt, pf_test, max_per_side=100, seed=3) == Fmia.entropy_svc_member_rate(
        pr, pt, pf_test, max_per_side=100, seed=3
    )


# -- registered metrics ------------------------------------------------------------------------------------


def test_registered_metadata():
    for name in MIA_METRICS:
        m = METRICS.get(name)
        assert m.higher_is_better is None
        assert m.needs == frozenset({"forget", "retain", "test"})
        assert m.description


@pytest.fixture(scope="module")
def digits_mlp_random(digits_random_scenario) -> torch.nn.Module:
    return uk.train("mlp", digits_random_scenario, config=uk.TrainConfig(epochs=3), device="cpu")


def test_registered_metrics_on_digits(digits_mlp_random, digits_random_scenario):
    out = evaluate(digits_mlp_random, digits_random_scenario, metrics=MIA_METRICS, device="cpu")
    for name in MIA_METRICS:
        v = out[name]
        assert isinstance(v, float), (name, v)
        assert 0.0 <= v <= 1.0, (name, v)
    again = evaluate(digits_mlp_random, digits_random_scenario, metrics=MIA_METRICS, device="cpu")
    assert again == out


def test_registered_metrics_not_computed_on_tiny_forget(digits_mlp_random):
    tiny = uk.Scenario(dataset="digits", forget="random:0.001", seed=0)
    out = evaluate(digits_mlp_random, tiny, metrics=MIA_METRICS, device="cpu")
    assert isinstance(out["mia_loss_lr"], NotComputed)
    assert "per class" in str(out["mia_loss_lr"])
