"""NeurIPS-2023 forgetting quality: the published scorer's outputs, the loop reference, φ and the final score."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnkit.errors import UnlearnkitError
from unlearnkit.metrics.forget_quality import (
    DELTA,
    ForgetQualityResult,
    _double_setup,
    _epsilon_table,
    _forget_quality_loop,
    _forget_quality_searchsorted,
    _is_peaky,
    _left_edges,
    _left_edges_at,
    _linspace_f32,
    _orient,
    _quadrant_max,
    _rule_epsilons_fast,
    _rule_epsilons_loop,
    final_score,
    forget_quality,
    logit_scaled_confidence,
)

# Copy of /work/shared/fixtures/forget_quality_official.json: outputs of the challenge's metric.py.
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "forget_quality_official.json").read_text())
CASES = FIXTURE["cases"]


# --------------------------------------------------------------------------- the published scorer's outputs


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_matches_official_scorer(case: dict) -> None:
    res = forget_quality(np.array(case["unlearned_conf"]), np.array(case["retrained_conf"]))
    assert res.F == pytest.approx(case["F"], abs=1e-9)
    np.testing.assert_allclose(res.epsilons, case["epsilons"], rtol=0, atol=1e-5)
    assert res.n_models == len(case["unlearned_conf"])
    assert res.F == pytest.approx(res.scores.mean(), abs=1e-12)


def test_fixture_cases_exercise_every_rule() -> None:
    by_name = {c["name"]: c for c in CASES}
    peaky = by_name["peaky_unlearned_N16"]
    res = forget_quality(np.array(peaky["unlearned_conf"]), np.array(peaky["retrained_conf"]))
    assert set(res.rule) == {"peaky"}
    assert (res.epsilons == 50).all() and res.F == 0
    sep = by_name["separated_N16"]
    res = forget_quality(np.array(sep["unlearned_conf"]), np.array(sep["retrained_conf"]))
    assert (res.epsilons == 50).all() and set(res.rule) <= {"single", "double"}
    rules = set()
    for c in CASES:
        rules |= set(forget_quality(np.array(c["unlearned_conf"]), np.array(c["retrained_conf"])).rule)
    assert {"peaky", "single", "double"} <= rules


def test_accepts_torch_and_is_symmetric_in_sides() -> None:
    c = CASES[0]
    u, r = np.array(c["unlearned_conf"]), np.array(c["retrained_conf"])
    a = forget_quality(torch.tensor(u), torch.tensor(r))
    b = forget_quality(r, u)  # swapping sides only flips which one is "positive"
    assert a.F == pytest.approx(c["F"], abs=1e-9)
    np.testing.assert_allclose(b.epsilons, a.epsilons, atol=1e-5)


# --------------------------------------------------------------------------- vectorised == loop reference


def _random_case(rng: np.random.Generator, kind: str, n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    u = rng.normal(size=(n, s))
    r = rng.normal(loc=rng.uniform(-1.5, 1.5), scale=rng.uniform(0.3, 2.0), size=(n, s))
    if kind == "ties":  # dyadic grid: many duplicates, and values landing exactly on grid edges
        u, r = np.round(u * 4) / 4, np.round(r * 4) / 4
    elif kind == "coarse":  # few distinct values, ranges often equal
        u, r = np.round(u), np.round(r)
    elif kind == "peaky":  # some columns with a near-constant side
        u[:, ::2] = 1.0 + 1e-4 * rng.normal(size=u[:, ::2].shape)
    elif kind == "grid":  # values on the single-threshold grid itself: multiples of 3/256 spanning [0, 15/256]
        u, r = rng.integers(0, 6, size=(n, s)) * 3 / 256, rng.integers(0, 6, size=(n, s)) * 3 / 256
        u[0], r[0] = 0.0, 15 / 256  # pooled range 15/256 → ⌈5.86⌉ = 6 float32-exact thresholds k·3/256
    elif kind == "constant":  # constant columns: equal constants (no admissible rule) and distinct ones
        u[:, 0], r[:, 0] = 0.5, 0.5
        u[:, 1], r[:, 1] = 0.5, -0.25
    return u, r


@pytest.mark.parametrize(
    ("kind", "n", "seed"),
    [
        ("normal", 5, 0),
        ("normal", 12, 1),
        ("ties", 6, 2),
        ("ties", 9, 3),
        ("coarse", 7, 4),
        ("peaky", 8, 5),
        ("constant", 4, 6),
        ("normal", 2, 7),
        ("ties", 3, 8),
        ("grid", 5, 9),
        ("grid", 8, 10),
        ("grid", 11, 11),
    ],
)
def test_vectorised_matches_loop(kind: str, n: int, seed: int) -> None:
    u, r = _random_case(np.random.default_rng(seed), kind, n, 4)
    fast, slow = forget_quality(u, r), _forget_quality_loop(u, r)
    np.testing.assert_array_equal(fast.epsilons, slow.epsilons)
    np.testing.assert_array_equal(fast.rule, slow.rule)
    np.testing.assert_array_equal(fast.scores, slow.scores)
    assert fast.F == slow.F


@pytest.mark.parametrize(
    ("kind", "n", "seed"), [("ties", 6, 12), ("grid", 7, 13), ("coarse", 5, 14), ("normal", 9, 15)]
)
def test_every_rule_matches_loop(kind: str, n: int, seed: int) -> None:
    """Stronger than comparing maxima: the ε of each of the ~160k rules, NaN (dropped) included."""
    u, r = _random_case(np.random.default_rng(seed), kind, n, 3)
    pos_all, neg_all = _orient(u, r)
    table = _epsilon_table(n, DELTA)
    for s in range(u.shape[1]):
        pos, neg = pos_all[:, s], neg_all[:, s]
        if _is_peaky(pos, neg):
            continue
        fast_d, fast_s = _rule_epsilons_fast(pos, neg, table)
        slow_d, slow_s = _rule_epsilons_loop(pos, neg, DELTA)
        np.testing.assert_array_equal(fast_s, slow_s)
        np.testing.assert_array_equal(fast_d, slow_d)


@pytest.mark.parametrize(("kind", "n", "seed"), [("normal", 64, 20), ("ties", 48, 21), ("grid", 40, 22),
                                                  ("coarse", 33, 23), ("peaky", 64, 24)])  # fmt: skip
def test_block_search_equals_every_rule_search(kind: str, n: int, seed: int) -> None:
    """The block search skips rules it can bound; at larger N (more levels prune) it still gives what counting
    all ~160k rules per example gives: ε, rule (ties between the families included) and F, bit for bit."""
    u, r = _random_case(np.random.default_rng(seed), kind, n, 40)
    fast, full = forget_quality(u, r), _forget_quality_searchsorted(u, r)
    np.testing.assert_array_equal(fast.epsilons, full.epsilons)
    np.testing.assert_array_equal(fast.rule, full.rule)
    assert fast.F == full.F
    on_cpu = forget_quality(torch.tensor(u), torch.tensor(r), device="cpu")  # the explicit torch device path
    np.testing.assert_array_equal(on_cpu.epsilons, fast.epsilons)


def test_left_edges_formula_is_numpy_linspace_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    right = np.concatenate([rng.normal(scale=3.0, size=300), rng.uniform(-110, 110, size=100), [0.0, 2.0, -2.0]])
    width = float(rng.uniform(0.0, 8.0))
    want = _left_edges(right, width)  # [R, 400] from np.linspace
    base = torch.tensor(right) - width
    start, stop = base - 2.0, base + 2.0
    k = torch.arange(400, dtype=torch.float64)
    got = _left_edges_at(k, start[:, None], stop[:, None], ((stop - start) / 399)[:, None]).numpy()
    np.testing.assert_array_equal(got, want)


def test_quadrant_max_bounds_every_entry_of_its_quadrant() -> None:
    rng = np.random.default_rng(1)
    t = rng.choice([-1.0, 0.0, 0.3, 1.2, 2.5, np.inf], size=(7, 9)).astype(np.float32)
    u = _quadrant_max(t)
    for i in range(7):
        for j in range(9):
            assert u[i, j] == t[i:, j:].max()


def test_single_grid_is_torch_float32_linspace() -> None:
    # The scorer's torch.linspace on float64 0-d tensors runs in the default dtype, float32.
    for a, b in [(-1.3, 2.7), (0.1234567, 0.1534), (-103.6, 103.6)]:
        num = math.ceil((b - a) * 100)
        ours = _linspace_f32(a, b, num)
        theirs = torch.linspace(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), num)
        assert theirs.dtype == torch.float32
        np.testing.assert_array_equal(ours, ours.astype(np.float32))  # float32 values
        np.testing.assert_allclose(ours, theirs.double().numpy(), rtol=0, atol=2e-7 * max(abs(a), abs(b)))
        assert ours[0] == np.float32(a) and ours[-1] == np.float32(b)
    assert _linspace_f32(1.0, 1.0, 0).size == 0 and list(_linspace_f32(0.5, 0.501, 1)) == [0.5]


def test_tie_breaking_follows_the_scorer() -> None:
    u, r = np.array([[0.0], [1.0], [5.0]]), np.array([[-5.0], [1.0], [2.0]])
    pos, _ = _orient(u, r)  # equal medians: the unlearned side is positive (retrained needs a strictly larger one)
    np.testing.assert_array_equal(pos, u)
    a, b = np.array([0.0, 1.0, 2.0]), np.array([5.0, 6.0, 7.0])
    p, _, right, width = _double_setup(a, b)  # equal ranges: the originally negative side is the interval's positive
    np.testing.assert_array_equal(p, b)
    assert width == 2.0 and right[0] == 5.0 and right[-1] == 9.0


def test_edge_cases() -> None:
    same = forget_quality(np.full((5, 1), 0.5), np.full((5, 1), 0.5))  # the scorer's assertion fails here
    assert list(same.rule) == ["none"] and same.epsilons[0] == 0 and same.F == 1.0
    apart = forget_quality(np.full((5, 1), 1.0), np.zeros((5, 1)))  # two different constants: separated
    assert apart.epsilons[0] == 50 and apart.F == 0
    rng = np.random.default_rng(0)
    two = forget_quality(rng.normal(size=(2, 3)), rng.normal(size=(2, 3)))  # N = 2: ⌈ln 1⌉ = 0, no bins
    assert two.F == 0
    res = forget_quality(rng.normal(size=(8, 3)), rng.normal(size=(8, 3)))
    assert isinstance(res, ForgetQualityResult)
    with pytest.raises(ValueError):
        res.epsilons[0] = 1.0  # read-only


def test_identical_distributions_score_well_above_a_shift() -> None:
    rng = np.random.default_rng(0)
    n, s = 64, 24
    same = forget_quality(rng.normal(size=(n, s)), rng.normal(size=(n, s)))
    shifted = forget_quality(rng.normal(size=(n, s)) + 1.5, rng.normal(size=(n, s)))
    assert same.F > 0.1
    assert same.F > 3 * shifted.F
    assert same.epsilons.mean() < shifted.epsilons.mean()


def test_scores_follow_the_bins() -> None:
    c = next(c for c in CASES if c["name"] == "same_distribution_N512")
    res = forget_quality(np.array(c["unlearned_conf"]), np.array(c["retrained_conf"]))
    expected = [0.5 ** math.floor(e / 0.5) if e < math.ceil(math.log(511)) else 0.0 for e in res.epsilons]
    np.testing.assert_array_equal(res.scores, expected)


# --------------------------------------------------------------------------- φ


def test_logit_scaled_confidence_by_hand() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, -1.0]])
    phi = logit_scaled_confidence(logits, np.array([0, 0]))
    expected = [2.0 - math.log(math.e + 1.0), 0.0 - math.log(math.exp(3.0) + math.exp(-1.0))]
    np.testing.assert_allclose(phi, expected, rtol=1e-12)
    assert phi.dtype == np.float64


def test_logit_scaled_confidence_shapes_and_torch() -> None:
    logits = torch.randn(2, 3, 5, dtype=torch.float32)
    labels = torch.randint(0, 5, (2, 3))
    phi = logit_scaled_confidence(logits, labels)
    assert phi.shape == (2, 3)
    p = torch.softmax(logits.double(), -1).numpy()
    py = np.take_along_axis(p, labels.numpy()[..., None], -1)[..., 0]
    np.testing.assert_allclose(phi, np.log(py / (1 - py)), rtol=1e-9, atol=1e-9)


def test_logit_scaled_confidence_is_stable_at_extreme_logits() -> None:
    # A margin of 30 is resolved exactly (p_y = 1 − 9e-14 would lose it as 1 − p_y).
    np.testing.assert_allclose(logit_scaled_confidence(np.array([[30.0, 0.0]]), np.array([0])), [30.0], rtol=1e-12)
    # A margin of 1000: exp(−1000) underflows, the 1e-45 guards bound φ at ±ln(1e45) ≈ 103.6, never inf/nan.
    phi = logit_scaled_confidence(np.array([[1000.0, 0.0], [1000.0, 0.0]]), np.array([0, 1]))
    assert np.isfinite(phi).all()
    np.testing.assert_allclose(phi, [-math.log(1e-45), math.log(1e-45)], rtol=1e-12)


# --------------------------------------------------------------------------- final score


def test_final_score_by_hand_and_uncapped() -> None:
    got = final_score(0.1, [0.9, 0.8], 0.9, np.array([0.8, 0.7]), torch.tensor([0.75]))
    assert got == pytest.approx(0.1 * (0.85 / 0.9) * (0.75 / 0.75))
    assert final_score(0.5, 1.0, 0.5, 1.0, 1.0) == pytest.approx(1.0)  # better than retrain is rewarded
    res = forget_quality(np.array(CASES[0]["unlearned_conf"]), np.array(CASES[0]["retrained_conf"]))
    assert final_score(res, 90.0, 90.0, 80.0, 80.0) == pytest.approx(CASES[0]["F"])  # % works too


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("u", "r", "delta", "match"),
    [
        (np.zeros(8), np.zeros(8), 1e-5, "2-D"),
        (np.zeros((8, 3)), np.zeros((8, 4)), 1e-5, "shape"),
        (np.zeros((1, 3)), np.zeros((1, 3)), 1e-5, "N >= 2"),
        (np.zeros((4, 0)), np.zeros((4, 0)), 1e-5, "at least one"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), np.zeros((2, 2)), 1e-5, "NaN or infinite"),
        (np.zeros((2, 2)), np.array([[0.0, np.inf], [1.0, 2.0]]), 1e-5, "NaN or infinite"),
        (np.zeros((4, 2)), np.ones((4, 2)), 1.5, "delta"),
    ],
)
def test_forget_quality_rejects_bad_input(u: np.ndarray, r: np.ndarray, delta: float, match: str) -> None:
    for fn in (forget_quality, _forget_quality_loop, _forget_quality_searchsorted):
        with pytest.raises(UnlearnkitError, match=match):
            fn(u, r, delta=delta)
    with pytest.raises(UnlearnkitError, match="device"):
        forget_quality(np.zeros((4, 2)), np.ones((4, 2)), device="nodevice")


def test_logit_scaled_confidence_rejects_bad_input() -> None:
    with pytest.raises(UnlearnkitError, match="labels shape"):
        logit_scaled_confidence(np.zeros((3, 4)), np.zeros(2, dtype=int))
    with pytest.raises(UnlearnkitError, match="lie in"):
        logit_scaled_confidence(np.zeros((3, 4)), np.array([0, 1, 4]))
    with pytest.raises(UnlearnkitError, match="integers"):
        logit_scaled_confidence(np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]))
    with pytest.raises(UnlearnkitError, match="NaN or infinite"):
        logit_scaled_confidence(np.array([[np.inf, 0.0]]), np.array([0]))


def test_final_score_rejects_bad_input() -> None:
    with pytest.raises(UnlearnkitError, match="> 0"):
        final_score(0.2, 0.9, 0.0, 0.9, 0.9)
    with pytest.raises(UnlearnkitError, match="ra_u"):
        final_score(0.2, [], 0.9, 0.9, 0.9)
    with pytest.raises(UnlearnkitError, match="forget quality"):
        final_score(float("nan"), 0.9, 0.9, 0.9, 0.9)
