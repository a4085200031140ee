"""Pure metric functions against independent references (scipy, sklearn, hand-computed cases), and the
registered wrappers' not-computed behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy
from sklearn.metrics import accuracy_score

import unlearnkit as uk
from unlearnkit.metrics import NotComputed, evaluate
from unlearnkit.metrics import functional as Fm
from unlearnkit.metrics.functional.divergence import js_per_sample

rng = np.random.default_rng(0)


def _probs(n: int, c: int) -> np.ndarray:
    p = rng.random((n, c)) ** 3
    p[rng.random((n, c)) < 0.2] = 0.0  # exact zeros exercise 0·log 0 = 0
    p[:, 0] += 1e-3
    return p / p.sum(1, keepdims=True)


def test_accuracy_matches_sklearn():
    logits = rng.normal(size=(200, 7))
    labels = rng.integers(0, 7, 200)
    assert Fm.accuracy(logits, labels) == pytest.approx(accuracy_score(labels, logits.argmax(1)))


def test_accuracy_rejects_empty_and_mismatched():
    with pytest.raises(ValueError, match="empty"):
        Fm.accuracy(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(ValueError, match="expected logits"):
        Fm.accuracy(np.zeros((4, 3)), np.zeros(5, int))


def test_entropy_matches_scipy():
    p = _probs(50, 6)
    np.testing.assert_allclose(Fm.entropy(p), scipy_entropy(p, axis=1), rtol=1e-12)


def test_js_matches_scipy_squared_distance():
    p, q = _probs(100, 10), _probs(100, 10)
    expected = np.array([jensenshannon(a, b) ** 2 for a, b in zip(p, q, strict=True)])  # natural log
    np.testing.assert_allclose(js_per_sample(p, q), expected, rtol=1e-9, atol=1e-12)
    assert Fm.js_divergence(p, q) == pytest.approx(expected.mean(), rel=1e-9)


def test_js_bounds_and_symmetry():
    p, q = _probs(30, 4), _probs(30, 4)
    assert Fm.js_divergence(p, p) == pytest.approx(0.0, abs=1e-15)
    assert Fm.js_divergence(p, q) == pytest.approx(Fm.js_divergence(q, p))
    disjoint_a = np.array([[1.0, 0.0]])
    disjoint_b = np.array([[0.0, 1.0]])
    assert Fm.js_divergence(disjoint_a, disjoint_b) == pytest.approx(math.log(2))


def test_activation_distance_by_hand():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    q = np.array([[0.0, 1.0], [0.5, 0.5]])
    assert Fm.activation_distance(p, q) == pytest.approx((math.sqrt(2) + 0.0) / 2)


def test_zrf_is_one_minus_mean_js():
    p, q = _probs(40, 5), _probs(40, 5)
    assert Fm.zrf(p, q) == pytest.approx(1 - Fm.js_divergence(p, q))
    assert Fm.zrf(p, p) == pytest.approx(1.0)


def test_divergences_reject_bad_shapes():
    with pytest.raises(ValueError):
        Fm.js_divergence(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="shape mismatch"):
        Fm.activation_distance(np.ones((2, 3)) / 3, np.ones((3, 3)) / 3)


def test_registered_metrics_need_their_inputs(digits_random_scenario, trained_mlp):
    vals = evaluate(trained_mlp, digits_random_scenario, device="cpu")
    # a random request has no forget-test split; no retrained/random model and no timing were given
    for name, needle in (("acc_forget_test", "no forget_test split"), ("js_divergence", "no retrained model"),
                         ("zrf", "no random model"), ("time_ratio_vs_retrain", "not measured")):  # fmt: skip
        assert isinstance(vals[name], NotComputed), name
        assert needle in vals[name].reason, (name, vals[name].reason)
    assert 0.0 <= vals["acc_test"] <= 1.0


def test_registered_metrics_against_the_functional_core(digits_class_scenario, trained_mlp):
    s = digits_class_scenario
    ref = uk.create_model("mlp", 10, (1, 8, 8))
    vals = evaluate(trained_mlp, s, reference=ref, random_model=ref, timing={"time_s": 2.0, "retrain_time_s": 8.0},
                    device="cpu")  # fmt: skip
    with torch.no_grad():
        x = torch.stack([s.forget_test[i][0] for i in range(len(s.forget_test))])
        p = torch.softmax(trained_mlp(x).double(), 1).numpy()
        q = torch.softmax(ref(x).double(), 1).numpy()
    assert vals["js_divergence"] == pytest.approx(Fm.js_divergence(p, q))
    assert vals["activation_distance"] == pytest.approx(Fm.activation_distance(p, q))
    assert vals["zrf"] == pytest.approx(1 - Fm.js_divergence(p, q))
    assert vals["time_ratio_vs_retrain"] == pytest.approx(0.25)
    assert vals["param_l2_to_retrain"] > 0
    y = s.targets("retain_test")
    xr = torch.stack([s.retain_test[i][0] for i in range(len(s.retain_test))])
    assert vals["acc_retain_test"] == pytest.approx(accuracy_score(y, trained_mlp(xr).argmax(1).numpy()))


def test_unknown_metric_suggests():
    with pytest.raises(uk.UnlearnkitError, match="did you mean 'zrf'"):
        evaluate(torch.nn.Linear(64, 10), uk.Scenario("digits", "class:1", 0), metrics=["zfr"], device="cpu")


def test_store_schema_version_and_corrupt_db(tmp_path):
    from unlearnkit.experiments import ResultsStore
    from unlearnkit.experiments.record import RunRecord

    db = tmp_path / "results.db"
    ResultsStore(db).put(RunRecord(key="k", scenario={"dataset": "digits", "forget": "class:1"}, model="m",
                                   method="retrain", seed=0))  # fmt: skip
    import sqlite3

    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(uk.UnlearnkitError, match="schema version 99"):
        ResultsStore(db)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(uk.UnlearnkitError, match="not a usable unlearnkit results database"):
        ResultsStore(bad)
