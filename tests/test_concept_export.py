"""Export of an unlearned CLIP's towers (issue 20): text tower -> diffusers pipeline, vision tower -> LLaVA.

Offline: tiny randomly initialised pipelines and models built from small configs, saved as safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.concept import save_clip, small_clip
from unlearnkit.concept.clip import text_features
from unlearnkit.concept.export import hf_word_tokenizer
from unlearnkit.concept.world import tokenizer as world_tokenizer

diffusers = pytest.importorskip("diffusers")
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

runner = CliRunner()
TEXTS = ["a large red circle at the top left with blood", "gore near small blue ring in the top right corner"]


def _unlearned_clip(name: str = "clip_tiny", seed: int = 3):
    tok = world_tokenizer()
    clip = small_clip(name, vocab_size=len(tok), max_length=tok.max_length, seed=seed)
    with torch.no_grad():  # not the random init a fresh tower would have: an "unlearned" one
        for p in clip.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return clip, tok


def _pipeline(cross_attention_dim: int):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    tok = world_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, norm_num_groups=8, attention_head_dim=4,
    )  # fmt: skip
    vae = AutoencoderKL(block_out_channels=(8,), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=cross_attention_dim, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                        eos_token_id=3, pad_token_id=0, bos_token_id=1))  # fmt: skip
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=hf_word_tokenizer(tok), unet=unet,
                                   scheduler=DDIMScheduler(clip_sample=False), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)  # fmt: skip


def _llava(vision_width: int):
    torch.manual_seed(0)
    vc = CLIPVisionConfig(hidden_size=vision_width, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                          image_size=32, patch_size=8)  # fmt: skip
    tc = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=2)  # fmt: skip
    return LlavaForConditionalGeneration(LlavaConfig(vision_config=vc, text_config=tc, image_token_id=63,
                                                     image_seq_length=16, vision_feature_layer=-1))  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    clip, tok = _unlearned_clip()
    save_clip(clip, root / "clip")
    tok.save(root / "clip")
    wide, _ = _unlearned_clip("clip_small")
    save_clip(wide, root / "clip_wide")
    tok.save(root / "clip_wide")
    _pipeline(32).save_pretrained(root / "pipe", safe_serialization=True)
    _llava(32).save_pretrained(root / "llava", safe_serialization=True)
    not_clip = root / "not_clip"
    not_clip.mkdir()
    (not_clip / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (not_clip / "model.safetensors").write_bytes(b"")
    return root, clip


def _export(*args: str):
    return runner.invoke(app, ["export", *args], catch_exceptions=False)


def test_word_tokenizer_travels_with_the_same_ids():
    tok = world_tokenizer()
    hf = hf_word_tokenizer(tok)
    got = hf(TEXTS, padding="max_length", max_length=tok.max_length, truncation=True, return_tensors="pt")
    ids, mask = tok(TEXTS)
    assert torch.equal(got.input_ids, ids) and torch.equal(got.attention_mask, mask)


def test_text_tower_into_a_diffusers_pipeline(files, tmp_path):
    from diffusers import StableDiffusionPipeline

    root, clip = files
    res = _export("--clip", str(root / "clip"), "--into", "diffusers", "--base", str(root / "pipe"),
                  "--out", str(tmp_path / "sd"))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert not list((tmp_path / "sd").rglob("*.bin")) and list((tmp_path / "sd" / "text_encoder").glob("*.safetensors"))
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "sd", use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(TEXTS[0], num_inference_steps=2, height=16, width=16, guidance_scale=1.0, output_type="pt").images
    assert images.shape == (1, 3, 16, 16) and torch.isfinite(images).all()
    embeds, _ = pipe.encode_prompt(TEXTS, "cpu", 1, False)
    ids, mask = world_tokenizer()(TEXTS)
    with torch.no_grad():
        want = clip.text_model(input_ids=ids).last_hidden_state
        pooled = pipe.text_encoder(input_ids=ids).pooler_output
        projected = clip.text_projection(pooled)
        assert torch.allclose(embeds, want, atol=1e-6)  # what the UNet cross-attends to
        assert torch.allclose(projected, text_features(clip, ids, mask), atol=1e-6)  # the CLIP embedding itself
    # the original pipeline's text encoder is not the unlearned one (so the equality above is the swap's doing)
    base = StableDiffusionPipeline.from_pretrained(root / "pipe", use_safetensors=True)
    assert not torch.allclose(base.encode_prompt(TEXTS, "cpu", 1, False)[0], want)


def test_vision_tower_into_llava(files, tmp_path):
    root, clip = files
    res = _export("--clip", str(root / "clip"), "--into", "llava", "--base", str(root / "llava"),
                  "--out", str(tmp_path / "llava"))  # fmt: skip
    assert res.exit_code == 0, res.output
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava", use_safetensors=True).eval()
    px = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = model.model.vision_tower(px).last_hidden_state
        assert torch.allclose(got, clip.vision_model(px).last_hidden_state, atol=1e-6)
        ids = torch.tensor([[1] + [63] * 16 + [5, 6]])
        out = model.generate(input_ids=ids, pixel_values=px[:1], max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 22)


@pytest.mark.parametrize(
    ("clip", "into", "base", "says"),
    [
        ("clip_wide", "diffusers", "pipe", "64 wide but the pipeline's UNet cross-attends to width 32"),
        ("clip_wide", "llava", "llava", "64 wide but the model's projector reads width 32"),
        ("not_clip", "diffusers", "pipe", "is not a CLIP checkpoint"),
        ("clip", "llava", "pipe", "is not a LLaVA checkpoint"),
        ("clip", "sdxl", "pipe", "export target must be one of diffusers, llava"),
    ],
)
def test_bad_input_gets_one_line_and_writes_nothing(files, tmp_path, clip, into, base, says):
    root, _ = files
    out = tmp_path / "out"
    res = _export("--clip", str(root / clip), "--into", into, "--base", str(root / base), "--out", str(out))
    assert res.exit_code == 2
    assert says in " ".join(res.output.split()) and len(res.output.strip().splitlines()) <= 2  # one line (wrapped)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_export_refuses_a_non_empty_out_folder(files, tmp_path):
    root, _ = files
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    res = _export("--clip", str(root / "clip"), "--into", "llava", "--base", str(root / "llava"),
                  "--out", str(tmp_path / "taken"))  # fmt: skip
    assert res.exit_code == 2 and "already exists" in res.output
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["x"]


def test_api_export_is_what_the_command_runs(files, tmp_path):
    import unlearnkit as uk

    root, clip = files
    path = uk.export_towers(root / "clip", str(root / "llava"), tmp_path / "m", into="llava")
    model = LlavaForConditionalGeneration.from_pretrained(path, use_safetensors=True)
    assert torch.equal(model.model.vision_tower.embeddings.patch_embedding.weight,
                       clip.vision_model.embeddings.patch_embedding.weight)  # fmt: skip
    assert isinstance(Path(path), Path)
