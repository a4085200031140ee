"""Property tests of the Lorentz geometry (float64; tolerances and norm ranges stated per test).

The reference for distances and maps is an independent NumPy computation in the ambient Minkowski space
ℝ^{n+1} (points as (x_t, x)), not the module's own formulas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearnkit.concept import lorentz as L

D = torch.float64


def _points(n: int, dim: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    """``n`` random directions with norms log-uniform in [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(n, dim, generator=g, dtype=D), dim=-1)
    r = torch.exp(torch.empty(n, 1, dtype=D).uniform_(math.log(lo), math.log(hi), generator=g))
    return d * r


def _minkowski(x: np.ndarray, c: float) -> np.ndarray:
    return np.concatenate([np.sqrt(1 / c + (x**2).sum(-1, keepdims=True)), x], -1)


@pytest.mark.parametrize("c", [0.1, 1.0, 3.0])
def test_distance_and_exp_map_match_an_ambient_minkowski_reference(c: float) -> None:
    """Norms in [1e-2, 10] (exp map: tangent norms in [1e-2, 8/√c]); relative tolerance 1e-9."""
    x, y = _points(64, 8, 1e-2, 10, 0).numpy(), _points(64, 8, 1e-2, 10, 1).numpy()
    X, Y = _minkowski(x, c), _minkowski(y, c)
    lor = -X[:, 0] * Y[:, 0] + (X[:, 1:] * Y[:, 1:]).sum(-1)
    ref = np.arccosh(np.maximum(-c * lor, 1.0)) / math.sqrt(c)
    got = L.dist(torch.from_numpy(x), torch.from_numpy(y), c).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    pair = L.pairwise_dist(torch.from_numpy(x), torch.from_numpy(y), c).numpy()
    np.testing.assert_allclose(np.diag(pair), ref, rtol=1e-9)
    # exp0 of v: the point cosh(√c|v|)/√c · e_t + sinh(√c|v|)/√c · v/|v| (the geodesic from the root)
    v = _points(64, 8, 1e-2, 8 / math.sqrt(c), 9).numpy()  # below exp0's sinh clamp
    nv = np.linalg.norm(v, axis=-1, keepdims=True)
    ref_exp = np.sinh(math.sqrt(c) * nv) / math.sqrt(c) * v / nv
    np.testing.assert_allclose(L.exp0(torch.from_numpy(v), c).numpy(), ref_exp, rtol=1e-9)
    # every mapped point lies on the hyperboloid: ⟨x, x⟩_L = −1/c (up to cancellation: 1e-15 · x_t²)
    e = L.exp0(torch.from_numpy(v), c)
    on = L.inner(e, e, c).numpy()
    np.testing.assert_allclose(on, -1 / c, atol=float(1e-15 * L.time_component(e, c).max() ** 2) + 1e-12)


@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_log0_inverts_exp0_and_distance_to_root_is_tangent_norm(c: float) -> None:
    """Tangent norms in [1e-6, 8/√c] (below the sinh clamp); tolerance 1e-9 relative."""
    v = _points(256, 16, 1e-6, 8 / math.sqrt(c), 2)
    x = L.exp0(v, c)
    torch.testing.assert_close(L.log0(x, c), v, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(L.dist0(x, c), v.norm(dim=-1), rtol=1e-9, atol=1e-12)
    # the generic distance from the root agrees where the arccosh clamp does not bite (|v| >= 1e-2)
    big = v.norm(dim=-1) >= 1e-2
    origin = torch.zeros_like(v)
    torch.testing.assert_close(L.dist(origin, x, c)[big], v.norm(dim=-1)[big], rtol=1e-6, atol=1e-9)


def test_half_aperture_is_inside_zero_and_right_angle_over_a_wide_range() -> None:
    """Norms in [0, 1e8] (zero included): 0 < aper < π/2, non-increasing in the norm."""
    x = torch.cat([torch.zeros(1, 4, dtype=D), _points(200, 4, 1e-8, 1e8, 3)])
    x = x[x.norm(dim=-1).argsort()]
    for c in (0.1, 1.0, 10.0):
        a = L.half_aperture(x, c)
        assert bool((a > 0).all()) and bool((a < math.pi / 2).all())
        assert bool((a[1:] <= a[:-1] + 1e-15).all())


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_exterior_angle_is_zero_on_the_ray_beyond_and_large_behind(c: float) -> None:
    """x with norms in [0.05, 50], y = t·x with t in [1.05, 20]: ext < 1e-3 rad (the arccos clamp floor is
    ≈ 4.5e-4); y toward the root (t = 0.5) or opposite (t = −1) gives an angle near π."""
    x = _points(100, 6, 0.05, 50, 4)
    t = torch.empty(100, 1, dtype=D).uniform_(1.05, 20, generator=torch.Generator().manual_seed(5))
    assert float(L.exterior_angle(x, t * x, c).max()) < 1e-3
    assert float(L.exterior_angle(x, 0.5 * x, c).min()) > math.pi - 1e-3
    assert float(L.exterior_angle(x, -x, c).min()) > math.pi - 1e-3
    # the entailment loss is zero for points inside the cone and positive for a point off to the side
    assert float(L.entailment_loss(x, t * x, c)) == 0.0
    side = torch.roll(x, 1, dims=-1) * 3
    assert float(L.entailment_loss(x, side, c)) > 0


def test_exterior_angle_matches_a_hyperbolic_law_of_cosines_reference() -> None:
    """Independent reference: the angle at x of triangle O-x-y from the hyperbolic law of cosines (c = 1);
    norms in [0.1, 5]; tolerance 1e-6 rad."""
    x, y = _points(50, 5, 0.1, 5, 6), _points(50, 5, 0.1, 5, 7)
    a, b, o = L.dist(x, y, 1.0), L.dist0(x, 1.0), L.dist0(y, 1.0)  # sides x-y, O-x, O-y
    cos_at_x = (torch.cosh(a) * torch.cosh(b) - torch.cosh(o)) / (torch.sinh(a) * torch.sinh(b))
    ref = math.pi - torch.acos(cos_at_x.clamp(-1, 1))
    torch.testing.assert_close(L.exterior_angle(x, y, 1.0), ref, rtol=0, atol=1e-6)


def test_triangle_inequality_on_random_points() -> None:
    """Norms in [1e-3, 20], 3 curvatures; slack 1e-6 (the arccosh clamp adds up to √(2e-7)/√c per side)."""
    for c in (0.1, 1.0, 10.0):
        x, y, z = (_points(500, 8, 1e-3, 20, s) for s in (10, 11, 12))
        lhs = L.dist(x, z, c)
        rhs = L.dist(x, y, c) + L.dist(y, z, c)
        assert bool((lhs <= rhs + 1e-6).all())
        torch.testing.assert_close(L.dist(x, y, c), L.dist(y, x, c))


def test_gradients_are_finite_at_the_clamps() -> None:
    """The root, coincident points, tiny and huge norms, and points on the ray (cos clamp) for every function."""
    cases = [torch.zeros(2, 3, dtype=D), torch.full((2, 3), 1e-12, dtype=D), torch.full((2, 3), 1e6, dtype=D)]
    for base in cases:
        c = torch.tensor(1.3, dtype=D, requires_grad=True)
        x = base.clone().requires_grad_(True)
        y = (2 * base).clone().requires_grad_(True)
        total = (L.exp0(x, c).sum() + L.log0(x, c).sum() + L.dist0(x, c).sum() + L.dist(x, x, c).sum()
                 + L.pairwise_dist(x, y, c).sum() + L.half_aperture(x, c).sum() + L.exterior_angle(x, y, c).sum()
                 + L.entailment_loss(x, y, c) + L.at_distance(x, 1.0, c).sum())  # fmt: skip
        total.backward()
        for t in (x, y, c):
            assert t.grad is not None and bool(torch.isfinite(t.grad).all()), base[0, 0]
    # exp0 beyond its clamp stays finite (no overflow), in float32 too
    v = torch.full((1, 4), 1e4, requires_grad=True)
    out = L.exp0(v, 1.0)
    out.sum().backward()
    assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(v.grad).all())


def test_at_distance_and_path_to_root_follow_the_geodesic() -> None:
    """at_distance puts x at exactly r from the root on its own ray; the path has equal geodesic steps from x
    to the root and every point lies on x's ray (tolerance 1e-9)."""
    c = 0.8
    x = _points(20, 4, 0.1, 10, 8)
    r = torch.linspace(0.1, 3, 20, dtype=D)
    y = L.at_distance(x, r, c)
    torch.testing.assert_close(L.dist0(y, c), r, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(torch.nn.functional.normalize(y, dim=-1), torch.nn.functional.normalize(x, dim=-1))
    path = L.path_to_root(x, c, steps=5)
    assert path.shape == (5, 20, 4)
    torch.testing.assert_close(path[0], x, rtol=1e-9, atol=1e-12)
    assert float(path[-1].abs().max()) == 0.0
    d = torch.stack([L.dist0(p, c) for p in path])
    torch.testing.assert_close(d[:-1] - d[1:], (d[0] / 4).expand(4, 20), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError):
        L.path_to_root(x, c, steps=1)
