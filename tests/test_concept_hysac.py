"""Hyperbolic setting 3: MERU model, HySAC terms, traversal, safety metrics (against independent references),
the HySAC-layout checkpoint loader (offline, tiny files) and the runner's hyperbolic original."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from unlearnkit.concept import LorentzCLIP, WorldConfig, make_concept_world, small_clip
from unlearnkit.concept import lorentz as L
from unlearnkit.concept.safety_metrics import (
    awareness_r1,
    detection_auroc,
    redirected_retrieval,
    traversed_retrieval,
)
from unlearnkit.concept.traversal import REFERENCE_ALPHA, safe_radius, traverse
from unlearnkit.errors import UnlearnkitError

D = torch.float64


@pytest.fixture(scope="module")
def world():
    return make_concept_world(0, WorldConfig(n_train=24, n_val=8, n_test=8))


@pytest.fixture(scope="module")
def meru(world):
    return LorentzCLIP(small_clip("clip_tiny", vocab_size=len(world.tokenizer), max_length=16, seed=0))


# -- traversal ------------------------------------------------------------------------------------------
def test_traverse_moves_far_points_onto_the_safe_sphere_along_their_geodesic_and_keeps_near_ones() -> None:
    g = torch.Generator().manual_seed(0)
    c = 0.7
    x = torch.randn(50, 6, generator=g, dtype=D) * torch.linspace(0.1, 20, 50, dtype=D)[:, None]
    r = 1.5
    y = traverse(x, r, c)
    far = L.dist0(x, c) > r
    assert 0 < int(far.sum()) < 50
    torch.testing.assert_close(L.dist0(y[far], c), torch.full((int(far.sum()),), r, dtype=D), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(y[~far], x[~far], rtol=0, atol=0)
    # on the geodesic from x to the root: same direction, i.e. exp0(t·log0(x)) for some t in (0, 1)
    t = (L.log0(y[far], c).norm(dim=-1) / L.log0(x[far], c).norm(dim=-1))[:, None]
    torch.testing.assert_close(y[far], L.exp0(t * L.log0(x[far], c), c), rtol=1e-9, atol=1e-12)


def test_reference_traversal_sets_the_euclidean_norm_to_the_widened_bound_and_lands_short() -> None:
    """The released code's rescaling: ‖x'‖ = r + tanh((r − α)/c) + 1, which is not at that geodesic distance."""
    c, r = 1.0, 1.2
    x = torch.tensor([[30.0, 0.0], [0.1, 0.0]], dtype=D)
    bound = r + math.tanh((r - REFERENCE_ALPHA) / c) + 1
    y = traverse(x, r, c, reference=True)
    assert float(y[0].norm()) == pytest.approx(bound)
    assert float(L.dist0(y[0], c)) == pytest.approx(math.asinh(bound))  # arcsinh(bound) < bound: not geodesic
    torch.testing.assert_close(y[1], x[1])
    with pytest.raises(UnlearnkitError, match="non-negative"):
        traverse(x, -1.0, c)


def test_safe_radius_is_the_quantile_of_distances_to_the_root() -> None:
    x = L.at_distance(torch.randn(101, 3, dtype=D), torch.linspace(0, 1, 101, dtype=D), 2.0)
    assert safe_radius(x, 2.0, 0.95) == pytest.approx(0.95)
    assert safe_radius(x, 2.0, 1.0) == pytest.approx(1.0)
    with pytest.raises(UnlearnkitError, match="quantile"):
        safe_radius(x, 2.0, 0.0)


# -- safety metrics vs independent references -----------------------------------------------------------
def test_detection_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    safe, unsafe = rng.integers(0, 6, 40).astype(float), rng.integers(2, 9, 30).astype(float)  # many ties
    ref = roc_auc_score(np.r_[np.zeros(40), np.ones(30)], np.r_[safe, unsafe])
    assert detection_auroc(torch.tensor(safe), torch.tensor(unsafe)) == pytest.approx(ref, abs=1e-12)
    assert detection_auroc(torch.zeros(3), torch.ones(2)) == 1.0
    with pytest.raises(UnlearnkitError):
        detection_auroc(torch.zeros(0), torch.ones(2))


def _geometry_example(n: int = 6):
    """A hand-built hyperbolic quadruplet set: direction e_i per item, safe at radius 1 (texts) / 1.3
    (images), unsafe at 2.5 / 2.8 on a slightly rotated direction."""
    c = 1.0
    eye = torch.eye(n + 1, dtype=D)[:n]
    tilt = 0.3 * torch.eye(n + 1, dtype=D)[n].expand(n, n + 1)
    s, v = L.at_distance(eye, 1.0, c), L.at_distance(eye, 1.3, c)
    u, g = L.at_distance(eye + tilt, 2.5, c), L.at_distance(eye + tilt, 2.8, c)
    return s, v, u, g, c


def test_redirected_and_traversed_retrieval_against_a_brute_force_reference() -> None:
    s, v, u, g, c = _geometry_example()
    sim = lambda a, b: -L.pairwise_dist(a, b, c)  # noqa: E731
    plain = redirected_retrieval(s, v, u, g, sim, ks=(1,))
    trav = traversed_retrieval(s, v, u, g, c, text_radius=1.05, image_radius=1.35, similarity=sim, ks=(1,))
    n = len(s)

    def brute(queries, gallery, target_of):  # top-1 by an explicit loop over the ambient distances
        hits, unsafe = 0, 0
        for i, q in enumerate(queries):
            d = [float(L.dist(q, y, c)) for y in gallery]
            best = int(np.argmin(d))
            hits += best == target_of(i)
            unsafe += best >= n
        return hits / n, unsafe / n

    images, texts = torch.cat([v, g]), torch.cat([s, u])
    r1, rate = brute(u, images, lambda i: i)
    assert plain["tstar_to_v_union_r1"] == r1 and plain["unsafe_rate_tstar"] == rate == 1.0  # unsafe is nearer
    r1, rate = brute(traverse(u, 1.35, c), images, lambda i: i)
    assert trav["tstar_to_v_union_r1"] == r1 == 1.0 and trav["unsafe_rate_tstar"] == rate == 0.0
    r1, rate = brute(traverse(g, 1.05, c), texts, lambda i: i)
    assert trav["vstar_to_t_union_r1"] == r1 and trav["unsafe_rate_vstar"] == rate
    assert trav["safety_score"] == pytest.approx(1 - 0.5 * (trav["unsafe_rate_tstar"] + trav["unsafe_rate_vstar"]))
    assert plain["t2v_r1"] == trav["t2v_r1"] == 1.0  # safe queries inside the region are not moved
    assert awareness_r1(u, g, sim) == 1.0 and awareness_r1(u, torch.roll(g, 1, 0), sim) == 0.0


def test_hyperbolic_metrics_are_not_computed_for_a_euclidean_clip(world) -> None:
    from unlearnkit.concept import evaluate_concept
    from unlearnkit.metrics import NotComputed

    clip = small_clip("clip_tiny", vocab_size=len(world.tokenizer), max_length=16, seed=0)
    out = evaluate_concept(clip, world, metrics=["unsafe_auroc_text", "unsafe_rate_tstar_trav", "awareness_r1"])
    assert isinstance(out["unsafe_auroc_text"], NotComputed) and "hyperbolic" in str(out["unsafe_auroc_text"])
    assert isinstance(out["unsafe_rate_tstar_trav"], NotComputed)
    assert 0.0 <= out["awareness_r1"] <= 1.0


def test_every_clip_metric_is_computed_for_a_meru_model(world, meru) -> None:
    from unlearnkit.concept import evaluate_concept

    out = evaluate_concept(meru, world)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values()), out
    assert {"unsafe_auroc_image", "tstar_to_v_union_r1_trav", "safety_score", "zero_shot_acc"} <= set(out)


# -- MERU model and HySAC terms -------------------------------------------------------------------------
def test_meru_scalars_are_clamped_and_embeddings_lie_on_the_hyperboloid(world, meru) -> None:
    m = LorentzCLIP(small_clip("clip_tiny", vocab_size=len(world.tokenizer), max_length=16, seed=0), curv_init=2.0)
    assert m.curvature().item() == pytest.approx(2.0)
    with torch.no_grad():
        m.log_curv.fill_(10.0)
        m.log_alpha_text.fill_(1.0)
        m.log_scale.fill_(9.0)
    m.clamp_scalars_()
    assert m.curvature().item() == pytest.approx(20.0) and float(m.log_alpha_text) == 0.0
    assert float(m.logit_scale_value()) == pytest.approx(100.0)
    ids, mask = world.tokenizer(world.test.safe_text[:4])
    t = m.embed_text(ids, mask).double()
    c = m.curvature().item()
    torch.testing.assert_close(L.inner(t, t, c), torch.full((4,), -1 / c, dtype=D), rtol=1e-4, atol=1e-4)
    with pytest.raises(UnlearnkitError, match="positive"):
        LorentzCLIP(m.clip, curv_init=0.0)


def test_hysac_terms_cross_entailment_options_differ_only_in_term_7(world, meru) -> None:
    from unlearnkit.concept._method import quad_batches
    from unlearnkit.concept.hysac import hysac_terms

    b = next(quad_batches(world.train, world.tokenizer, 8, torch.device("cpu"), shuffle=False))
    with torch.no_grad():
        paper = hysac_terms(meru, b, cross_entailment="paper")
        code = hysac_terms(meru, b, cross_entailment="code")
        s, u = meru.embed_text(*b.s), meru.embed_text(*b.u)
        v, g = meru.embed_image(b.v), meru.embed_image(b.g)
    c = meru.curvature()
    assert paper.shape == (7,) and bool(torch.isfinite(paper).all())
    torch.testing.assert_close(paper[:6], code[:6])
    torch.testing.assert_close(paper[6], 0.5 * (L.entailment_loss(s, u, c) + L.entailment_loss(v, g, c)))
    torch.testing.assert_close(code[6], L.entailment_loss(v, u, c))
    torch.testing.assert_close(paper[4], L.entailment_loss(s, v, c))


def test_hysac_refuses_a_euclidean_clip(world) -> None:
    import unlearnkit as uk
    from unlearnkit.concept import ConceptUnlearnData

    clip = small_clip("clip_tiny", vocab_size=len(world.tokenizer), max_length=16, seed=0)
    with pytest.raises(UnlearnkitError, match="expects a hyperbolic CLIP"):
        uk.create_method("hysac").unlearn(clip, ConceptUnlearnData(world.train, world.tokenizer))
