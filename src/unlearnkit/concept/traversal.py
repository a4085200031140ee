"""HySAC's safety traversal at inference: move a hyperbolic embedding toward the root into the safe region.

T. Poppi, T. Kasarla, P. Mettes, L. Baraldi, R. Cucchiara, "Hyperbolic Safety-Aware Vision-Language
Models", CVPR 2025, arXiv 2503.12127, §3.3; the path to the root is MERU's interpolation (Desai et al.,
ICML 2023, §5). Pure functions on space components (:mod:`unlearnkit.concept.lorentz`).

After HySAC, safe content lies closer to the root than unsafe content. The *safe region* of a modality is
the ball of radius r around the root, r a quantile of the distances to the root of that modality's safe
embeddings (:func:`safe_radius`; HySAC stores the 95th percentile per modality). A query farther than r
moves along its own geodesic to the root until it is at distance r (:func:`traverse`):

    x' = sinh(√c r)/√c · x/‖x‖      if d(O, x) > r,   else x

(geodesically correct: d(O, x') = r and x' lies on the geodesic from x to O). The released code instead
sets the *Euclidean norm of the space components* to r — a geodesic length used as a coordinate, which
lands at distance arcsinh(√c r)/√c < r, deeper inside the safe region than the bound says; it also widens
the bound by tanh((r − α)/c) + 1 (α = 0.8). ``reference=True`` reproduces both (for comparison only).
"""

from __future__ import annotations

import math

import torch

from unlearnkit.concept import lorentz as L
from unlearnkit.errors import UnlearnkitError

#: the released code's margin parameter α of its widened bound
REFERENCE_ALPHA = 0.8


def safe_radius(safe: torch.Tensor, c: float, quantile: float = 0.95) -> float:
    """The safe region's radius: the ``quantile`` of the distances to the root of ``safe`` embeddings ``[N, D]``."""
    if not 0.0 < quantile <= 1.0:
        raise UnlearnkitError(f"the safe-region quantile must be in (0, 1], got {quantile}")
    if len(safe) == 0:
        raise UnlearnkitError("the safe region needs at least one safe embedding")
    return float(torch.quantile(L.dist0(safe.double(), c), quantile))


def traverse(x: torch.Tensor, radius: float, c: float, *, reference: bool = False) -> torch.Tensor:
    """Move each row of ``x`` ``[N, D]`` farther than ``radius`` from the root back onto the sphere of that
    radius along its geodesic to the root (rows inside are unchanged); see the module doc.

    Args:
        x: hyperbolic embeddings (space components).
        radius: the safe region's radius r (a geodesic distance).
        c: the curvature parameter (curvature −c).
        reference: the released code's behaviour (Euclidean norm set to the widened bound; not geodesic).
    """
    if radius < 0:
        raise UnlearnkitError(f"the safe radius must be non-negative, got {radius}")
    if reference:
        bound = radius + math.tanh((radius - REFERENCE_ALPHA) / c) + 1
        norm = x.norm(dim=-1, keepdim=True)
        far = L.dist0(x, c)[:, None] > bound
        return torch.where(far, bound * x / norm.clamp(min=L.EPS), x)
    far = L.dist0(x, c)[:, None] > radius
    return torch.where(far, L.at_distance(x, radius, c), x)
