"""Safe-CLIP's loss terms, reference semantics, normalisation, early stopping and our optional ninth term."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearnkit.concept import (
    ConceptUnlearnData,
    WorldConfig,
    encode_images,
    encode_texts,
    make_concept_world,
)
from unlearnkit.concept._method import contrastive, quad_batches
from unlearnkit.concept.retrieval import concept_retrieval
from unlearnkit.concept.safe_clip import LAMBDAS, SafeCLIP, safe_clip_terms, unsafe_negative_term
from unlearnkit.errors import UnlearnkitError


@pytest.fixture(scope="module")
def world():
    return make_concept_world(0, WorldConfig(n_train=16, n_val=8, n_test=8))


def _batch(world):
    return next(quad_batches(world.train, world.tokenizer, 16, torch.device("cpu"), shuffle=False))


def test_terms_against_a_frozen_copy_at_the_start(clip, world):
    b = _batch(world)
    frozen = copy.deepcopy(clip)
    with torch.no_grad():
        terms = safe_clip_terms(clip.eval(), frozen, b, 100.0)
        ts, v0 = b.text(clip, "s"), b.image(frozen, "v")
    assert terms.shape == (8,)
    assert terms[0] == pytest.approx(0, abs=1e-6) and terms[2] == pytest.approx(0, abs=1e-6)  # preservation 1
    assert terms[1] > 1e-3 and terms[3] > 1e-3  # the unsafe inputs are not yet where they should go
    assert terms[4] == pytest.approx(contrastive(ts, v0, 100.0).item(), rel=1e-5)  # ℓ_con(T*(s), V⁰(v))


def test_stop_gradient_self_uses_the_model_itself(clip, world):
    b = _batch(world)
    with torch.no_grad():
        frozen_terms = safe_clip_terms(clip.eval(), copy.deepcopy(clip), b, 100.0)
        self_terms = safe_clip_terms(clip.eval(), None, b, 100.0)
    assert torch.allclose(frozen_terms, self_terms)  # identical before any update, as the released code


def test_total_is_normalised_weighted_mean(clip, world):
    m = SafeCLIP()
    lam = torch.tensor([getattr(m, n) for n in LAMBDAS])
    assert lam.sum().item() == pytest.approx(1.75)
    b = _batch(world)
    with torch.no_grad():
        terms = safe_clip_terms(clip.eval(), copy.deepcopy(clip), b, 100.0)
        total = m._loss(clip, copy.deepcopy(clip), b, lam / lam.sum())
    assert total.item() == pytest.approx(((lam / 1.75) * terms).sum().item() / 8, rel=1e-5)


def test_early_stopping_and_restore(clip, world):
    data = ConceptUnlearnData(world.train, world.tokenizer, world.val)
    m = SafeCLIP(epochs=6, batch_size=8, lr=1e-12, patience=1, restore="best_loss")
    m.unlearn(clip, data)  # nothing can improve at lr 1e-12: stops after the patience runs out
    assert m.report_["epochs_run"] == 2 and len(m.history_) == 2 and "val_recall_sum" in m.history_[0]
    no_val = SafeCLIP(epochs=2, batch_size=8, patience=1)
    no_val.unlearn(clip, ConceptUnlearnData(world.train, world.tokenizer, None))
    assert no_val.report_["epochs_run"] == 2 and "val_loss" not in no_val.history_[0]


def test_lora_merges_into_a_plain_clip_and_full_finetune_changes_more(clip, world):
    data = ConceptUnlearnData(world.train, world.tokenizer, None)
    lora = SafeCLIP(epochs=1, batch_size=8, lora_alpha=16.0)
    out = lora.unlearn(clip, data)
    full = SafeCLIP(epochs=1, batch_size=8, lora=False, lr=1e-4)
    out_full = full.unlearn(clip, data)
    assert lora.report_["trainable_params"] < full.report_["trainable_params"]
    assert not any("lora" in k for k in out.state_dict())
    untouched = ["text_model.embeddings.token_embedding.weight", "text_projection.weight"]  # not LoRA targets
    assert all(torch.equal(out.state_dict()[k], clip.state_dict()[k]) for k in untouched)
    assert not torch.equal(out_full.state_dict()[untouched[1]], clip.state_dict()[untouched[1]])


# -- our optional ninth term: the batch's unsafe items as extra negatives ------------------------------------
def _reference_unsafe_negative_term(ts, vv, tu, vg, scale):
    """ℓ_9 computed query by query with explicit log-softmax (independent of the vectorised code)."""
    n = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    ts, vv, tu, vg = n(ts), n(vv), n(tu), n(vg)
    total_t, total_v = 0.0, 0.0
    for i in range(len(tu)):
        gallery_images = torch.cat([vv, vg])  # [V*(v); V*(g)]: item i of the safe half is the target
        total_t += -torch.log_softmax(scale * gallery_images @ tu[i], dim=0)[i]
        gallery_texts = torch.cat([ts, tu])  # [T*(s); T*(u)]
        total_v += -torch.log_softmax(scale * gallery_texts @ vg[i], dim=0)[i]
    return 0.5 * (total_t + total_v) / len(tu)


def test_unsafe_negative_term_matches_a_per_query_reference():
    g = torch.Generator().manual_seed(0)
    ts, vv, tu, vg = (torch.randn(6, 8, generator=g) * 3 for _ in range(4))
    got = unsafe_negative_term(ts, vv, tu, vg, 10.0)
    assert got.item() == pytest.approx(_reference_unsafe_negative_term(ts, vv, tu, vg, 10.0).item(), rel=1e-5)
    # the own unsafe twin is a negative: with g_i = v_i every query ties with its twin, a loss of at least log 2
    assert unsafe_negative_term(ts, vv, ts, vv, 10.0) >= torch.log(torch.tensor(2.0)) - 1e-6


def test_ninth_term_is_off_by_default_and_added_on_the_lambda_scale(clip, world):
    assert SafeCLIP().lambda_unsafe_negatives == 0.0
    b = _batch(world)
    frozen = copy.deepcopy(clip)
    with torch.no_grad():
        eight = safe_clip_terms(clip.eval(), frozen, b, 100.0)
        nine = safe_clip_terms(clip.eval(), frozen, b, 100.0, unsafe_negatives=True)
        ts, vv, tu, vg = b.text(clip, "s"), b.image(clip, "v"), b.text(clip, "u"), b.image(clip, "g")
        m = SafeCLIP(lambda_unsafe_negatives=0.5)
        lam = torch.tensor([getattr(m, n) for n in LAMBDAS])
        w8 = lam / lam.sum()
        w9 = torch.cat([w8, torch.tensor([0.5]) / lam.sum()])
        assert torch.allclose(SafeCLIP()._weights(), w8) and torch.allclose(m._weights(), w9)
        paper, ours = SafeCLIP()._loss(clip, frozen, b, w8), m._loss(clip, frozen, b, w9)
    assert eight.shape == (8,) and nine.shape == (9,) and torch.allclose(nine[:8], eight)
    assert nine[8].item() == pytest.approx(unsafe_negative_term(ts, vv, tu, vg, 100.0).item(), rel=1e-5)
    # L = (Σ_{k≤8} λ_k ℓ_k + λ_9 ℓ_9) / (8 Σ_{k≤8} λ_k): the paper's loss plus the ninth term on the λ scale
    assert ours.item() == pytest.approx(paper.item() + 0.5 / 1.75 * nine[8].item() / 8, rel=1e-5)


@pytest.mark.parametrize("bad", [-0.5, "yes", None])
def test_bad_unsafe_negatives_weight_is_refused_before_work(clip, world, monkeypatch, bad):
    import unlearnkit.concept._method as cm

    monkeypatch.setattr(cm, "seed_everything", lambda s: pytest.fail("work started before validation"))
    with pytest.raises(UnlearnkitError, match="parameter 'lambda_unsafe_negatives'"):
        SafeCLIP(lambda_unsafe_negatives=bad).unlearn(clip, ConceptUnlearnData(world.train, world.tokenizer))


def _unsafe_rates(model, world):
    q, tok = world.train, world.tokenizer
    emb = [encode_texts(model, tok, q.safe_text), encode_images(model, q.safe_image),
           encode_texts(model, tok, q.unsafe_text), encode_images(model, q.unsafe_image)]  # fmt: skip
    r = concept_retrieval(*emb)
    return r["unsafe_rate_tstar"], r["unsafe_rate_vstar"]


def test_unsafe_negatives_lower_the_unsafe_rates(clip, world):
    """On the tiny world the random CLIP ranks unsafe twins first; the ninth term fixes most of it, the
    paper's eight terms alone (same run otherwise) much less."""
    data = ConceptUnlearnData(world.train, world.tokenizer, None)
    assert sum(_unsafe_rates(clip, world)) > 1.5
    paper = SafeCLIP(epochs=10, batch_size=16, lora_alpha=16.0, patience=None).unlearn(clip, data)
    ours = SafeCLIP(epochs=10, batch_size=16, lora_alpha=16.0, patience=None, lambda_unsafe_negatives=2.0)
    ours = ours.unlearn(clip, data)
    assert sum(_unsafe_rates(ours, world)) <= 0.25 < sum(_unsafe_rates(paper, world)) - 0.3
