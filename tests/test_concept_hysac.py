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
    # every query goes to the smaller radius (the safe texts' here)
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
    r1, rate = brute(traverse(u, 1.05, c), images, lambda i: i)
    assert trav["tstar_to_v_union_r1"] == r1 == 1.0 and trav["unsafe_rate_tstar"] == rate == 0.0
    r1, rate = brute(traverse(g, 1.05, c), texts, lambda i: i)
    assert trav["vstar_to_t_union_r1"] == r1 == 1.0 and trav["unsafe_rate_vstar"] == rate == 0.0
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
    from unlearnkit.metrics import METRICS
    from unlearnkit.protocols import RESOURCES

    out = evaluate_concept(meru, world)  # no resource builder: metrics that need a built resource say so
    built = set(RESOURCES.list())
    direct = {k: v for k, v in out.items() if not METRICS.get(k).needs & built}
    assert all(isinstance(v, float) and math.isfinite(v) for v in direct.values()), direct
    assert all("resource builder" in str(v) for k, v in out.items() if k not in direct)
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


def test_hysac_retention_term_is_zero_at_the_original_and_keeps_safe_embeddings_near_it(world, meru) -> None:
    """Our retention option: ℓ_ret = 0 for the model itself, > 0 once it moved; with a large λ_ret the safe
    test embeddings stay much nearer the original's than without it (same seed, same schedule)."""
    import unlearnkit as uk
    from unlearnkit.concept import ConceptUnlearnData
    from unlearnkit.concept._method import quad_batches
    from unlearnkit.concept.hysac import retention_term
    from unlearnkit.concept.meru import lorentz_images, lorentz_texts

    b = next(quad_batches(world.train, world.tokenizer, 8, torch.device("cpu"), shuffle=False))
    with torch.no_grad():
        s, v = meru.embed_text(*b.s), meru.embed_image(b.v)
        assert float(retention_term(meru, meru, b, s, v)) < 1e-2
        # "direction" ignores depth (a point moved along its ray to the root costs nothing), "geodesic" does not
        assert float(retention_term(meru, meru, b, 0.5 * s, 0.5 * v, "direction")) < 1e-6
        assert float(retention_term(meru, meru, b, 0.5 * s, 0.5 * v, "geodesic")) > 0.05
        turned = torch.roll(s, 1, dims=-1), torch.roll(v, 1, dims=-1)
        assert float(retention_term(meru, meru, b, *turned, "direction")) > 0.05
    q = world.test

    def drift(lambda_retain: float) -> float:
        method = uk.create_method(
            "hysac", epochs=3, batch_size=8, lr=2e-2, lora_alpha=16.0, restore="last", lambda_retain=lambda_retain
        )
        out = method.unlearn(meru, ConceptUnlearnData(world.train, world.tokenizer))
        c, tok = float(out.curvature().detach()), world.tokenizer
        d_text = L.dist(lorentz_texts(out, tok, q.safe_text), lorentz_texts(meru, tok, q.safe_text), c)
        d_img = L.dist(lorentz_images(out, q.safe_image), lorentz_images(meru, q.safe_image), c)
        return float(0.5 * (d_text.mean() + d_img.mean()))

    free, kept = drift(0.0), drift(50.0)
    assert free > 0.05 and kept < 0.5 * free
    with pytest.raises(Exception, match="lambda_retain"):
        uk.create_method("hysac", lambda_retain=-1.0).unlearn(meru, ConceptUnlearnData(world.train, world.tokenizer))


def test_hysac_refuses_a_euclidean_clip(world) -> None:
    import unlearnkit as uk
    from unlearnkit.concept import ConceptUnlearnData

    clip = small_clip("clip_tiny", vocab_size=len(world.tokenizer), max_length=16, seed=0)
    with pytest.raises(UnlearnkitError, match="expects a hyperbolic CLIP"):
        uk.create_method("hysac").unlearn(clip, ConceptUnlearnData(world.train, world.tokenizer))


# -- the one run path: a MERU original beside the Euclidean one, each method under its own ---------------
TINY = {
    "name": "tiny-hysac", "setting": 3, "dataset": "concept_world",
    "world": {"n_train": 32, "n_val": 8, "n_test": 16},
    "clip": {"config": "clip_tiny"}, "pretrain": {"epochs": 1, "batch_size": 16},
    "methods": {"unsafe_projection": {}, "hysac": {"epochs": 1, "batch_size": 16, "lr": 1e-3}},
    "seeds": [0], "device": "cpu",
}  # fmt: skip


def test_plan_pairs_hysac_with_a_meru_original_and_keeps_euclidean_keys() -> None:
    from unlearnkit.experiments.config import parse_concept_config
    from unlearnkit.experiments.runner import plan_concept

    cells = plan_concept(parse_concept_config(TINY))
    assert [(c.method, c.model, (c.concept or {}).get("geometry")) for c in cells] == [
        ("original", "clip_tiny", None), ("unsafe_projection", "clip_tiny", None),
        ("original", "clip_tiny-meru", "lorentz"), ("hysac", "clip_tiny-meru", "lorentz"),
    ]  # fmt: skip
    assert "lorentz_checkpoint" not in cells[0].concept["clip"]  # Euclidean run keys as before
    only = plan_concept(parse_concept_config({**TINY, "methods": {"hysac": {"epochs": 1}}}))
    assert [(c.method, c.model) for c in only] == [("original", "clip_tiny-meru"), ("hysac", "clip_tiny-meru")]
    # pretrain.meru_epochs: only the MERU cells train (and key) their original with it
    longer = plan_concept(parse_concept_config({**TINY, "pretrain": {**TINY["pretrain"], "meru_epochs": 3}}))
    assert [c.key for c in longer[:2]] == [c.key for c in cells[:2]]
    assert [c.concept["pretrain"]["epochs"] for c in longer] == [1, 1, 3, 3]
    assert longer[2].key != cells[2].key and "meru_epochs" not in longer[2].concept["pretrain"]


@pytest.mark.slow
def test_runner_runs_hysac_beside_its_meru_original_and_reports_the_safety_table(tmp_path) -> None:
    import json

    from unlearnkit.experiments import ResultsStore, run_benchmark
    from unlearnkit.experiments.config import parse_concept_config

    cfg = parse_concept_config({**TINY, "cache_dir": str(tmp_path / "cache")})
    res = run_benchmark(cfg, tmp_path / "out")
    assert (res.ran, res.failed, res.trained_models) == (4, 0, 2)
    runs = {(r["method"], r["model"]): r for r in ResultsStore(tmp_path / "out" / "results.db").runs()}
    hy = runs[("hysac", "clip_tiny-meru")]["metrics"]
    assert 0 <= hy["unsafe_rate_tstar_trav"] <= 1 and 0 <= hy["unsafe_auroc_text"] <= 1
    assert "curvature" in hy and "time_s" in hy
    assert 0 <= runs[("original", "clip_tiny-meru")]["metrics"]["awareness_r1"] <= 1
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Safety awareness in CLIP (setting 3)" in md and "### concept_world · clip_tiny-meru" in md
    assert json.loads((tmp_path / "out" / "report.json").read_text())["runs"]


def test_a_hyperbolic_method_on_pretrained_towers_needs_a_lorentz_checkpoint(tmp_path) -> None:
    from unlearnkit.errors import ConfigError
    from unlearnkit.experiments.config import parse_concept_config
    from unlearnkit.experiments.runner import validate_concept_config

    base = {"setting": 3, "dataset": "visu", "visu": {"train": "a.csv", "test": "b.csv", "coco_dir": "c"},
            "clip": {"from_pretrained": "openai/clip-vit-large-patch14"}, "methods": ["hysac"],
            "device": "cpu"}  # fmt: skip
    with pytest.raises(ConfigError, match=r"give clip\.lorentz_checkpoint"):
        validate_concept_config(parse_concept_config(base))
    with pytest.raises(UnlearnkitError, match=r"must be a \.safetensors file"):
        validate_concept_config(parse_concept_config({**base, "clip": {**base["clip"], "lorentz_checkpoint": "x.pth"}}))
    with pytest.raises(ConfigError, match=r"lorentz_checkpoint needs clip\.from_pretrained"):
        parse_concept_config({**TINY, "clip": {"config": "clip_tiny", "lorentz_checkpoint": "x.safetensors"}})


# -- HySAC-layout checkpoints (offline, tiny files written by peft itself) ------------------------------
def _hysac_layout_file(tmp_path, world):
    """A tiny HySAC-layout checkpoint: the towers as peft LoRA models (random B), their state dicts under
    ``textual.``/``visual.``, and the four log-scalars; returns (file, towers dir, merged reference towers)."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    clip = small_clip("clip_tiny", vocab_size=len(world.tokenizer), max_length=16, seed=0)
    towers = tmp_path / "towers"
    clip.save_pretrained(towers)
    tcfg, vcfg = clip.config.text_config, clip.config.vision_config
    tcfg.projection_dim = vcfg.projection_dim = clip.config.projection_dim
    text, vision = CLIPTextModelWithProjection(tcfg), CLIPVisionModelWithProjection(vcfg)
    text.text_model.load_state_dict(clip.text_model.state_dict())
    text.text_projection.load_state_dict(clip.text_projection.state_dict())
    vision.vision_model.load_state_dict(clip.vision_model.state_dict())
    vision.visual_projection.load_state_dict(clip.visual_projection.state_dict())
    lora = LoraConfig(r=4, lora_alpha=1, target_modules=["k_proj", "v_proj", "out_proj", "fc1", "fc2",
                                                           "patch_embedding"], lora_dropout=0.0)  # fmt: skip
    pt, pv = get_peft_model(text, lora), get_peft_model(vision, lora)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in [*pt.named_parameters(), *pv.named_parameters()]:
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    state = {**{f"textual.{k}": v.contiguous() for k, v in pt.state_dict().items()},
             **{f"visual.{k}": v.contiguous() for k, v in pv.state_dict().items()},
             "curv": torch.tensor(math.log(1.3)), "textual_alpha": torch.tensor(-1.0),
             "visual_alpha": torch.tensor(-2.0), "logit_scale": torch.tensor(math.log(30.0)),
             "pixel_mean": torch.zeros(3, 1, 1), "pixel_std": torch.ones(3, 1, 1)}  # fmt: skip
    path = tmp_path / "hysac.safetensors"
    save_file(state, str(path))
    return path, towers, pt.merge_and_unload(), pv.merge_and_unload()


def test_hysac_layout_checkpoint_loads_with_lora_merged_as_peft_merges_it(tmp_path, world) -> None:
    from unlearnkit.concept.clip import image_features, text_features
    from unlearnkit.concept.hysac_checkpoint import load_lorentz_checkpoint, save_lorentz_checkpoint

    path, towers, ref_text, ref_vision = _hysac_layout_file(tmp_path, world)
    m = load_lorentz_checkpoint(path, towers, lora_scale=1 / 4)  # α/r of the file's LoRA
    assert m.curvature().item() == pytest.approx(1.3) and m.logit_scale_value().item() == pytest.approx(30.0)
    assert float(m.log_alpha_image) == -2.0
    ids, mask = world.tokenizer(world.test.safe_text[:3])
    px = world.test.safe_image.batch([0, 1])
    with torch.no_grad():
        ours_t, ours_v = text_features(m.clip, ids, mask), image_features(m.clip, px)
        ref_t = ref_text(input_ids=ids, attention_mask=mask).text_embeds
        ref_v = ref_vision(pixel_values=px).image_embeds
    torch.testing.assert_close(ours_t, ref_t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours_v, ref_v, rtol=1e-4, atol=1e-5)
    # our export writes the same layout (no LoRA): it loads back to the same model
    again = load_lorentz_checkpoint(save_lorentz_checkpoint(m, tmp_path / "ours.safetensors"), towers)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values(), strict=True))


def test_hysac_layout_loader_refuses_pickles_and_foreign_files(tmp_path, world) -> None:
    from safetensors.torch import load_file, save_file

    from unlearnkit.concept.hysac_checkpoint import load_lorentz_checkpoint

    path, towers, _, _ = _hysac_layout_file(tmp_path, world)
    pth = tmp_path / "hysac_model.pth"
    pth.write_bytes(b"not read")
    with pytest.raises(UnlearnkitError, match="pickles are never loaded"):
        load_lorentz_checkpoint(pth, towers)
    state = load_file(str(path))
    for drop, msg in [("curv", "no 'log_curv' scalar"), ("visual.base_model.model.visual_projection.weight", "lacks")]:
        broken = {k: v for k, v in state.items() if k != drop}
        if drop != "curv":  # a missing tower weight other than the projection: drop a whole encoder layer
            broken = {k: v for k, v in state.items() if ".vision_model.encoder." not in k}
        save_file(broken, str(tmp_path / "b.safetensors"))
        with pytest.raises(UnlearnkitError, match=msg):
            load_lorentz_checkpoint(tmp_path / "b.safetensors", towers)
    save_file({**state, "extra.weight": torch.zeros(1)}, str(tmp_path / "c.safetensors"))
    with pytest.raises(UnlearnkitError, match=r"unexpected key 'extra\.weight'"):
        load_lorentz_checkpoint(tmp_path / "c.safetensors", towers)
    (tmp_path / "d.safetensors").write_bytes(b"garbage")
    with pytest.raises(UnlearnkitError, match="cannot read"):
        load_lorentz_checkpoint(tmp_path / "d.safetensors", towers)


def test_a_hyperbolic_export_loads_back_through_the_checkpoint_path(tmp_path, world, meru) -> None:
    """save_models for a MERU/HySAC row: the towers (save_pretrained) and lorentz.safetensors beside them are
    exactly what clip.from_pretrained + clip.lorentz_checkpoint read."""
    from unlearnkit.concept.hysac_checkpoint import load_lorentz_checkpoint
    from unlearnkit.concept.sources import export_clip

    export_clip(meru, world, tmp_path / "m")
    back = load_lorentz_checkpoint(tmp_path / "m" / "lorentz.safetensors", tmp_path / "m")
    assert (tmp_path / "m" / "word_tokenizer.json").is_file()
    assert all(torch.equal(a, b) for a, b in zip(meru.state_dict().values(), back.state_dict().values(), strict=True))
