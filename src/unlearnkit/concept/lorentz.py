"""Lorentz-model geometry for hyperbolic CLIP (MERU, HySAC): pure functions on space components.

K. Desai, M. Nickel, T. Rajpurohit, J. Johnson, R. Vedantam, "Hyperbolic Image-Text Representations",
ICML 2023, arXiv 2304.09172 (MERU), §3; T. Poppi, T. Kasarla, P. Mettes, L. Baraldi, R. Cucchiara,
"Hyperbolic Safety-Aware Vision-Language Models", CVPR 2025, arXiv 2503.12127 (HySAC), §3. Cones after
O.-E. Ganea, G. Bécigneul, T. Hofmann, "Hyperbolic Entailment Cones", ICML 2018.

The hyperboloid of curvature −c (c > 0) is {(x, x_t) ∈ ℝⁿ × ℝ : ⟨x, x⟩_L = −1/c, x_t > 0}. Every point is
stored by its *space components* x ∈ ℝⁿ only; the time component follows:

========================  ==============================================  ====================
 quantity                  formula (MERU §3)                               code
========================  ==============================================  ====================
 time component            x_t = √(1/c + ‖x‖²)                             time_component
 Lorentz inner product     ⟨x, y⟩_L = ⟨x, y⟩ − x_t y_t                     inner, pairwise_inner
 geodesic distance         d(x, y) = (1/√c) · arccosh(−c ⟨x, y⟩_L)         dist, pairwise_dist
 distance to the root O    d(O, x) = (1/√c) · arcsinh(√c ‖x‖)              dist0
 exp map at O (tangent v)  x = sinh(√c ‖v‖) / (√c ‖v‖) · v                 exp0
 log map at O              v = arcsinh(√c ‖x‖) / (√c ‖x‖) · x              log0
 cone half-aperture at x   aper(x) = arcsin(2K / (√c ‖x‖)),  K = 0.1       half_aperture
 exterior angle at x       ext(x, y) = arccos((y_t + x_t c⟨x,y⟩_L) /       exterior_angle
  (triangle O, x, y)                   (‖x‖ √((c⟨x,y⟩_L)² − 1)))
 entailment loss           max(0, ext(x, y) − aper(x))  (x entails y)      entailment_loss
 point at distance r       sinh(√c r)/√c · x/‖x‖  (on x's ray)             at_distance
========================  ==============================================  ====================

A geodesic through the root is a ray of the tangent space at O mapped by exp0, so the geodesic from x to
the root is exp0(t · log0(x)), t ∈ [0, 1] (:func:`path_to_root`, MERU's interpolation), and moving x along it
to distance r keeps its direction x/‖x‖ (:func:`at_distance`).

Clamps (what makes every function finite, with finite gradients, at its edges; the same in float32 and
float64, the values below are the defaults):

* norms in denominators are clamped below at ``EPS`` = 1e-8 (the origin maps to itself);
* exp0 clamps √c‖v‖ to at most ``MAX_SINH_ARG`` = arcsinh(2¹⁵) (space norms stay below 2¹⁵/√c);
* arccosh's argument is clamped below at 1 + ``ACOSH_EPS`` (1e-7), so d(x, x) is ≈ √(2e-7)/√c, not 0, and
  distances shorter than ~1e-3/√c are inexact; :func:`dist0` has a closed form without that floor;
* arcsin's and arccos's arguments are clamped to [−1 + ``ANGLE_EPS``, 1 − ``ANGLE_EPS``] (1e-7): the
  aperture lies in (0, π/2) and an exterior angle of 0 reads as ≈ √(2e-7) ≈ 4.5e-4 rad;
* the exterior angle's denominator is clamped below at ``EPS``.

All functions broadcast over leading dimensions; ``c`` is a positive float or a 0-d tensor (differentiable).
"""

from __future__ import annotations

import math

import torch

EPS = 1e-8
ACOSH_EPS = 1e-7
ANGLE_EPS = 1e-7
MAX_SINH_ARG = math.asinh(2.0**15)
#: MERU's minimum cone radius K: the half-aperture is π/2 at ‖x‖ = 2K/√c and shrinks beyond
MIN_RADIUS = 0.1

Curv = float | torch.Tensor


def _sqrt(c: Curv) -> torch.Tensor | float:
    return c**0.5 if isinstance(c, torch.Tensor) else math.sqrt(c)


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def time_component(x: torch.Tensor, c: Curv) -> torch.Tensor:
    """x_t = √(1/c + ‖x‖²) of space components ``x`` ``[..., n]``; returns ``[...]``."""
    return torch.sqrt(1 / c + (x * x).sum(-1))


def inner(x: torch.Tensor, y: torch.Tensor, c: Curv) -> torch.Tensor:
    """⟨x, y⟩_L = ⟨x, y⟩ − x_t y_t, row by row (broadcast); returns ``[...]``."""
    return (x * y).sum(-1) - time_component(x, c) * time_component(y, c)


def pairwise_inner(x: torch.Tensor, y: torch.Tensor, c: Curv) -> torch.Tensor:
    """⟨x_i, y_j⟩_L for every pair: ``[N, n]`` × ``[M, n]`` → ``[N, M]``."""
    return x @ y.T - time_component(x, c)[:, None] * time_component(y, c)[None, :]


def _acosh_dist(c_inner: torch.Tensor, c: Curv) -> torch.Tensor:
    return torch.acosh(torch.clamp(-c_inner, min=1 + ACOSH_EPS)) / _sqrt(c)


def dist(x: torch.Tensor, y: torch.Tensor, c: Curv) -> torch.Tensor:
    """Geodesic distance d(x, y) = arccosh(−c⟨x, y⟩_L)/√c, row by row (argument clamped at 1 + ACOSH_EPS)."""
    return _acosh_dist(c * inner(x, y, c), c)


def pairwise_dist(x: torch.Tensor, y: torch.Tensor, c: Curv) -> torch.Tensor:
    """d(x_i, y_j) for every pair: ``[N, n]`` × ``[M, n]`` → ``[N, M]``."""
    return _acosh_dist(c * pairwise_inner(x, y, c), c)


def dist0(x: torch.Tensor, c: Curv) -> torch.Tensor:
    """Distance to the root, d(O, x) = arcsinh(√c‖x‖)/√c (exact down to 0); returns ``[...]``."""
    rc = _sqrt(c)
    return torch.asinh(rc * _norm(x).squeeze(-1)) / rc


def exp0(v: torch.Tensor, c: Curv) -> torch.Tensor:
    """Exponential map at the root: tangent vector ``v`` → space components sinh(√c‖v‖)/(√c‖v‖)·v.

    √c‖v‖ is clamped to ``MAX_SINH_ARG`` (beyond it the norm stops growing) and below at ``EPS``.
    """
    rc_norm = _sqrt(c) * _norm(v)
    arg = torch.clamp(rc_norm, min=EPS, max=MAX_SINH_ARG)
    return torch.sinh(arg) / torch.clamp(rc_norm, min=EPS) * v


def log0(x: torch.Tensor, c: Curv) -> torch.Tensor:
    """Logarithmic map at the root: space components → tangent vector arcsinh(√c‖x‖)/(√c‖x‖)·x."""
    rc_norm = torch.clamp(_sqrt(c) * _norm(x), min=EPS)
    return torch.asinh(rc_norm) / rc_norm * x


def half_aperture(x: torch.Tensor, c: Curv, min_radius: float = MIN_RADIUS) -> torch.Tensor:
    """Half-aperture of the entailment cone at ``x``: arcsin(2K/(√c‖x‖)), in (0, π/2) by the clamps."""
    s = 2 * min_radius / torch.clamp(_sqrt(c) * _norm(x).squeeze(-1), min=EPS)
    return torch.asin(torch.clamp(s, min=-1 + ANGLE_EPS, max=1 - ANGLE_EPS))


def exterior_angle(x: torch.Tensor, y: torch.Tensor, c: Curv) -> torch.Tensor:
    """Exterior angle at ``x`` of the triangle O, x, y (π − the angle O-x-y), row by row, in (0, π).

    0 when y lies on the geodesic ray from O through x beyond x; y is inside x's cone iff
    ``exterior_angle(x, y) <= half_aperture(x)``.
    """
    c_xy = c * inner(x, y, c)
    num = time_component(y, c) + time_component(x, c) * c_xy
    den = _norm(x).squeeze(-1) * torch.sqrt(torch.clamp(c_xy**2 - 1, min=EPS))
    cos = num / torch.clamp(den, min=EPS)
    return torch.acos(torch.clamp(cos, min=-1 + ANGLE_EPS, max=1 - ANGLE_EPS))


def entailment_loss(x: torch.Tensor, y: torch.Tensor, c: Curv, aperture_scale: float = 1.0) -> torch.Tensor:
    """MERU's entailment loss, ``x`` entails ``y``: mean over rows of max(0, ext(x, y) − s·aper(x))."""
    return torch.relu(exterior_angle(x, y, c) - aperture_scale * half_aperture(x, c)).mean()


def at_distance(x: torch.Tensor, r: torch.Tensor | float, c: Curv) -> torch.Tensor:
    """The point on the geodesic ray from the root through ``x`` at distance ``r`` from the root:
    space components sinh(√c r)/√c · x/‖x‖ (a zero ``x`` stays at the root)."""
    rc = _sqrt(c)
    r = torch.as_tensor(r, dtype=x.dtype, device=x.device)
    if r.ndim:
        r = r[..., None]
    scale = torch.sinh(torch.clamp(rc * r, max=MAX_SINH_ARG)) / rc
    return scale * x / torch.clamp(_norm(x), min=EPS)


def path_to_root(x: torch.Tensor, c: Curv, steps: int = 10) -> torch.Tensor:
    """MERU's interpolation from ``x`` ``[..., n]`` to the root: exp0(t·log0(x)) for t = 1, …, 0 (``steps``
    points, equally spaced in geodesic distance); returns ``[steps, ..., n]``."""
    if steps < 2:
        raise ValueError(f"a path needs at least 2 steps, got {steps}")
    v = log0(x, c)
    ts = torch.linspace(1.0, 0.0, steps, dtype=x.dtype, device=x.device)
    return torch.stack([exp0(t * v, c) for t in ts])
