"""Safe-CLIP's loss terms, reference semantics, normalisation and early stopping, on a tiny CLIP."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearnkit.concept import ConceptUnlearnData, WorldConfig, make_concept_world, small_clip
from unlearnkit.concept._method import contrastive, quad_batches
from unlearnkit.concept.safe_clip import LAMBDAS, SafeCLIP, safe_clip_terms


@pytest.fixture(scope="module")
def world():
    return make_concept_world(0, WorldConfig(n_train=16, n_val=8, n_test=8))


@pytest.fixture(scope="module")
def clip(world):
    return small_clip("clip_tiny", vocab_size=len(world.tokenizer), max_length=16, seed=0)


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
