"""HF CLIP in setting 3: small configs, save_pretrained round trip, refused checkpoints, LoRA targets."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import CLIPModel, CLIPTextModel

from unlearnkit.concept import (
    ConceptUnlearnData,
    WorldConfig,
    encode_images,
    encode_texts,
    load_clip,
    make_concept_world,
    save_clip,
    small_clip,
)
from unlearnkit.concept._method import check_lora_targets
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import create_method


@pytest.fixture(scope="module")
def world():
    return make_concept_world(0, WorldConfig(n_train=16, n_val=0, n_test=8))


def test_small_clip_is_seeded_and_hf(clip, world):
    assert isinstance(clip, CLIPModel)
    again = small_clip("clip_tiny", vocab_size=len(world.tokenizer), max_length=16, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(clip.state_dict().values(), again.state_dict().values(), strict=True))
    emb = encode_texts(clip, world.tokenizer, world.test.safe_text)
    assert emb.shape == (8, 32) and torch.allclose(emb.norm(dim=1), torch.ones(8), atol=1e-5)


def test_save_pretrained_round_trip(clip, world, tmp_path):
    out = save_clip(clip, tmp_path / "clip")
    assert any(out.glob("*.safetensors")) and not any(out.glob("*.bin"))
    back = CLIPModel.from_pretrained(out)
    for enc in (lambda m: encode_texts(m, world.tokenizer, world.test.unsafe_text),
                lambda m: encode_images(m, world.test.unsafe_image)):  # fmt: skip
        assert torch.equal(enc(clip), enc(back))
    assert torch.equal(load_clip(out).text_projection.weight, clip.text_projection.weight)
    CLIPTextModel.from_pretrained(out)  # the text tower alone loads too (the SD text-encoder path)


def test_not_a_clip_checkpoint(tmp_path):
    with pytest.raises(UnlearnkitError, match=r"no config\.json"):
        load_clip(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnlearnkitError, match="model_type='bert'"):
        load_clip(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(UnlearnkitError, match=r"no \.safetensors"):
        load_clip(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UnlearnkitError, match="cannot load CLIP") as e:
        load_clip(tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(UnlearnkitError, match="not found"):
        load_clip(tmp_path / "missing" / "dir")


@pytest.mark.parametrize("method", ["safe_clip", "neg_contrastive"])
def test_lora_target_matching_nothing_fails_before_work(method, clip, world, monkeypatch):
    import unlearnkit.concept._method as cm

    monkeypatch.setattr(cm, "add_lora", lambda *a, **k: pytest.fail("LoRA was injected before the check"))
    m = create_method(method, lora_targets=("k_proj", "q_porj"))
    with pytest.raises(UnlearnkitError, match="LoRA target 'q_porj' matches no layer") as e:
        m.unlearn(clip, ConceptUnlearnData(world.train, world.tokenizer))
    assert "\n" not in str(e.value)
    check_lora_targets(clip, ("k_proj", "v_proj", "out_proj", "fc1", "fc2", "patch_embedding"))
