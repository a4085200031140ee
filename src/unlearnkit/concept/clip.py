"""CLIP through Hugging Face ``transformers``: small random-weight configs, loading, saving, encoding.

* :func:`small_clip` builds a :class:`transformers.CLIPModel` from a registered small config
  (``clip_tiny`` for tests, ``clip_small`` for the offline benchmark) with random weights, sized for a
  word vocabulary (no tokenizer files needed);
* :func:`load_clip` is the user path: ``CLIPModel.from_pretrained(path_or_name)`` (safetensors only),
  e.g. ``openai/clip-vit-large-patch14``; a local directory that is not a CLIP checkpoint is refused
  with one line;
* :func:`save_clip` exports with ``save_pretrained`` (safetensors), so an unlearned model drops into any
  pipeline that loads CLIP (``CLIPModel``/``CLIPTextModel``/``CLIPVisionModel.from_pretrained``).

The encoding helpers return the projected features (``get_text_features`` / ``get_image_features``)
whether ``transformers`` hands back a tensor (4.x) or an output object (5.x).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import CLIPConfig, CLIPModel

from unlearnkit._registry import Registry
from unlearnkit.concept._data import ImageColumn, Tokenizer
from unlearnkit.errors import UnlearnkitError

#: small CLIP shapes (text and vision towers share width/depth); patch size is for 32 x 32 images
CLIP_CONFIGS: Registry[dict[str, int]] = Registry("small CLIP config")
CLIP_CONFIGS.add("clip_tiny", {"hidden": 32, "layers": 1, "heads": 2, "mlp": 64, "proj": 32, "patch": 8})
CLIP_CONFIGS.add("clip_small", {"hidden": 64, "layers": 2, "heads": 4, "mlp": 128, "proj": 64, "patch": 8})


def small_clip_config(
    name: str, *, vocab_size: int, max_length: int, image_size: int = 32, eos_token_id: int = 3
) -> CLIPConfig:
    """A :class:`CLIPConfig` of the registered small shape ``name`` for a word vocabulary.

    Args:
        name: ``clip_tiny`` or ``clip_small`` (see :data:`CLIP_CONFIGS`).
        vocab_size: number of tokens of the word tokenizer.
        max_length: padded caption length (the text tower's position embeddings).
        image_size: side of the square input images (must be divisible by the patch size).
        eos_token_id: the token the text tower pools at (not 2, which HF CLIP treats as a legacy id).
    """
    shape = CLIP_CONFIGS.get(name)
    if image_size % shape["patch"]:
        raise UnlearnkitError(f"image_size {image_size} is not divisible by {name}'s patch size {shape['patch']}")
    common = {
        "hidden_size": shape["hidden"], "intermediate_size": shape["mlp"], "num_hidden_layers": shape["layers"],
        "num_attention_heads": shape["heads"], "projection_dim": shape["proj"],
    }  # fmt: skip
    text = {**common, "vocab_size": vocab_size, "max_position_embeddings": max_length,
            "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": eos_token_id}  # fmt: skip
    vision = {**common, "image_size": image_size, "patch_size": shape["patch"], "num_channels": 3}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=shape["proj"])


def small_clip(name: str, *, vocab_size: int, max_length: int, image_size: int = 32, seed: int = 0) -> CLIPModel:
    """A random-weight :class:`CLIPModel` of small shape ``name`` (same seed, same weights)."""
    config = small_clip_config(name, vocab_size=vocab_size, max_length=max_length, image_size=image_size)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CLIPModel(config)
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide ``transformers``' loading/saving progress bars for the duration (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def check_clip_dir(path: Path) -> None:
    """Refuse, in one line, a local directory that is not a safetensors CLIP checkpoint."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UnlearnkitError(f"{path} is not a CLIP checkpoint: it has no config.json")
    try:
        model_type = json.loads(cfg_file.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        raise UnlearnkitError(f"{path} is not a CLIP checkpoint: its config.json is not a JSON object") from None
    if model_type != "clip":
        raise UnlearnkitError(f"{path} is not a CLIP checkpoint: config.json says model_type={model_type!r}")
    if not any(path.glob("*.safetensors")):
        raise UnlearnkitError(f"{path} is not a CLIP checkpoint: it has no .safetensors weights")


def load_clip(path_or_name: str | Path, *, local_files_only: bool = False) -> CLIPModel:
    """``CLIPModel.from_pretrained(path_or_name)``, safetensors only.

    Args:
        path_or_name: a local directory written by ``save_pretrained``, or a Hub name such as
            ``openai/clip-vit-large-patch14`` (downloaded by ``transformers`` on the user's machine).
        local_files_only: never reach the network.

    Raises:
        UnlearnkitError: a local path that is not a CLIP checkpoint, or a name that cannot be loaded.
    """
    p = Path(path_or_name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UnlearnkitError(f"{p} is not a CLIP checkpoint: expected a directory written by save_pretrained")
        check_clip_dir(p)
        target: str = str(p)
    else:
        if str(path_or_name).startswith((".", "/", "~")) or str(path_or_name).count("/") > 1:
            raise UnlearnkitError(f"CLIP checkpoint directory not found: {p}")
        target = str(path_or_name)
    try:
        with quiet_transformers():
            model = CLIPModel.from_pretrained(target, use_safetensors=True, local_files_only=local_files_only)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:  # a broken checkpoint
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnlearnkitError(f"cannot load CLIP {target!r}: {first}") from None
    return model.eval()


def save_clip(model: CLIPModel, path: str | Path) -> Path:
    """Export ``model`` with ``save_pretrained`` (safetensors); returns the directory."""
    if not isinstance(model, CLIPModel):
        raise UnlearnkitError(f"save_clip expects a transformers CLIPModel, got {type(model).__name__}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out, safe_serialization=True)
    return out


# -- features -------------------------------------------------------------------------------------------
def _pooled(out: Any) -> torch.Tensor:
    """The projected features, from a tensor (transformers 4.x) or an output object (5.x)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def text_features(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Projected (not normalised) text features ``[B, D]`` of ``model`` (differentiable)."""
    return _pooled(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def image_features(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected (not normalised) image features ``[B, D]`` of ``model`` (differentiable)."""
    return _pooled(model.get_image_features(pixel_values=pixel_values))


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter (CPU for a parameterless module)."""
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


@torch.no_grad()
def encode_texts(
    model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], *, batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised text embeddings ``[N, D]`` (float32, on CPU), in eval mode."""
    was_training = model.training
    model.eval()
    dev = model_device(model)
    out = []
    for i in range(0, len(texts), batch_size):
        ids, mask = tokenizer(list(texts[i : i + batch_size]))
        out.append(F.normalize(text_features(model, ids.to(dev), mask.to(dev)).float(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def encode_images(model: nn.Module, images: ImageColumn, *, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised image embeddings ``[N, D]`` (float32, on CPU), in eval mode."""
    was_training = model.training
    model.eval()
    dev = model_device(model)
    out = []
    for i in range(0, len(images), batch_size):
        px = images.batch(range(i, min(i + batch_size, len(images))))
        out.append(F.normalize(image_features(model, px.to(dev)).float(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
