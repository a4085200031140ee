"""Export an unlearned CLIP's towers into the generators' ecosystems: diffusers text-to-image pipelines and
transformers LLaVA-style multimodal models.

Safe-CLIP (Poppi et al., ECCV 2024, arXiv 2311.16254, §5) is used downstream by swapping a tower, with no
further training: its **text tower** becomes the ``text_encoder`` of a Stable Diffusion pipeline (the UNet
cross-attends to the text tower's last hidden states, so its ``cross_attention_dim`` must equal the tower's
width), and its **vision tower** becomes the ``vision_tower`` of LLaVA (whose projector reads the vision tower's
hidden states: the widths must agree, and so must the number of patches, which fixes how many image tokens a
prompt holds).

* :func:`text_encoder_into_pipeline` / :func:`vision_tower_into_llava` swap in memory;
* :func:`export_towers` is the file path behind ``unlearnkit export``: it loads a CLIP folder (safetensors
  only) and a base pipeline or model (safetensors only), checks that the tower fits before anything is
  written, swaps, and ``save_pretrained``\\ s the result (safetensors) into a new folder.

A small CLIP of the concept world has a word vocabulary (``word_tokenizer.json``); it travels as a Hugging Face
fast tokenizer (:func:`hf_word_tokenizer`, same ids as :class:`~unlearnkit.concept.WordTokenizer`) so the
pipeline's own ``tokenizer`` call works. ``diffusers`` is an optional dependency (``pip install
'unlearnkit[generate]'``), imported only here and only when a pipeline is involved.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import CLIPModel, CLIPTextModel, CLIPVisionModel, PreTrainedTokenizerBase

from unlearnkit.concept._data import WordTokenizer
from unlearnkit.concept.clip import load_clip, quiet_transformers
from unlearnkit.errors import UnlearnkitError

#: where :func:`export_towers` can put a tower
TARGETS = ("diffusers", "llava")


def hf_word_tokenizer(tok: WordTokenizer) -> PreTrainedTokenizerBase:
    """A Hugging Face fast tokenizer with the ids of ``tok``: lower-cased words, ``<bos> … <eos>``, ``<pad>``."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(tok.vocab)}, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(r"[a-z0-9']+|[^\sa-z0-9']"), behavior="isolated"),
    ])  # fmt: skip
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", tok.bos_id), ("<eos>", tok.eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=tok.max_length,
    )  # fmt: skip


def clip_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside a CLIP export: its word vocabulary (as :func:`hf_word_tokenizer`) or its
    Hugging Face tokenizer files; one line when it has neither."""
    folder = Path(folder)
    if (folder / WordTokenizer.FILE).is_file():
        return hf_word_tokenizer(WordTokenizer.load(folder))
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file():
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise UnlearnkitError(f"cannot load the tokenizer of {folder}: {str(e).splitlines()[0]}") from None
    raise UnlearnkitError(f"{folder} has no tokenizer (word_tokenizer.json or Hugging Face tokenizer files)")


def text_tower(clip: CLIPModel) -> CLIPTextModel:
    """The text tower of ``clip`` as a standalone :class:`CLIPTextModel` (a copy of its weights)."""
    tower = CLIPTextModel(clip.config.text_config)
    getattr(tower, "text_model", tower).load_state_dict(clip.text_model.state_dict())  # transformers 4.x / 5.x
    return tower.to(clip.dtype).eval()


def vision_tower(clip: CLIPModel) -> CLIPVisionModel:
    """The vision tower of ``clip`` as a standalone :class:`CLIPVisionModel` (a copy of its weights)."""
    tower = CLIPVisionModel(clip.config.vision_config)
    getattr(tower, "vision_model", tower).load_state_dict(clip.vision_model.state_dict())  # 4.x / 5.x
    return tower.to(clip.dtype).eval()


def _check_clip(clip: Any) -> CLIPModel:
    if not isinstance(clip, CLIPModel):
        raise UnlearnkitError(f"expected a transformers CLIPModel, got {type(clip).__name__}")
    return clip


def text_encoder_into_pipeline(clip: CLIPModel, pipeline: Any, tokenizer: PreTrainedTokenizerBase) -> Any:
    """Put ``clip``'s text tower into a diffusers text-to-image ``pipeline`` as ``text_encoder``, with ``tokenizer``.

    Raises:
        UnlearnkitError: the pipeline has no single ``text_encoder``/``unet``, or its UNet cross-attends to
            another width than the tower's.
    """
    clip = _check_clip(clip)
    components = getattr(pipeline, "components", None)
    if not isinstance(components, dict) or "text_encoder" not in components or "tokenizer" not in components:
        raise UnlearnkitError(f"{type(pipeline).__name__} is not a text-to-image pipeline with a text_encoder")
    if "text_encoder_2" in components:
        raise UnlearnkitError(f"{type(pipeline).__name__} has two text encoders; only single-encoder pipelines fit")
    width = clip.config.text_config.hidden_size
    unet = components.get("unet")
    want = getattr(getattr(unet, "config", None), "cross_attention_dim", None)
    if want is None:
        raise UnlearnkitError(f"{type(pipeline).__name__} has no UNet with a cross_attention_dim")
    if int(want if not isinstance(want, (list, tuple)) else want[0]) != width:
        raise UnlearnkitError(f"the text tower is {width} wide but the pipeline's UNet cross-attends to width {want}")
    positions = clip.config.text_config.max_position_embeddings
    if tokenizer.model_max_length > positions:
        raise UnlearnkitError(f"the tokenizer pads to {tokenizer.model_max_length} tokens; the tower has {positions}")
    pipeline.register_modules(text_encoder=text_tower(clip).to(unet.device), tokenizer=tokenizer)
    return pipeline


def vision_tower_into_llava(clip: CLIPModel, model: Any) -> Any:
    """Put ``clip``'s vision tower into a transformers LLaVA-style ``model`` as its ``vision_tower``.

    Raises:
        UnlearnkitError: the model has no CLIP vision tower, or the widths or patch counts differ.
    """
    clip = _check_clip(clip)
    inner = getattr(model, "model", model)
    old = getattr(inner, "vision_tower", None)
    if not isinstance(old, CLIPVisionModel):
        raise UnlearnkitError(f"{type(model).__name__} has no CLIP vision_tower to replace")
    new, base = clip.config.vision_config, old.config
    if new.hidden_size != base.hidden_size:
        raise UnlearnkitError(
            f"the vision tower is {new.hidden_size} wide but the model's projector reads width {base.hidden_size}"
        )
    patches = lambda c: (c.image_size // c.patch_size) ** 2  # noqa: E731
    if patches(new) != patches(base):
        raise UnlearnkitError(
            f"the vision tower makes {patches(new)} patches per image; the model expects {patches(base)}"
        )
    layer = model.config.vision_feature_layer
    layers = [layer] if isinstance(layer, int) else list(layer)
    if any(not -(new.num_hidden_layers + 1) <= i <= new.num_hidden_layers for i in layers):
        raise UnlearnkitError(f"the model reads vision layer {layer}; the tower has {new.num_hidden_layers} layers")
    device = next(old.parameters()).device
    inner.vision_tower = vision_tower(clip).to(device=device, dtype=next(old.parameters()).dtype)
    model.config.vision_config = new
    return model


def _load_pipeline(base: str) -> Any:
    try:
        from diffusers import DiffusionPipeline
    except ImportError:
        raise UnlearnkitError(
            "exporting into a diffusers pipeline needs diffusers: pip install 'unlearnkit[generate]'"
        ) from None
    p = Path(base).expanduser()
    if p.exists() and not (p / "model_index.json").is_file():
        raise UnlearnkitError(f"{p} is not a diffusers pipeline: it has no model_index.json")
    from diffusers.utils import logging as diffusers_logging

    was = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        with quiet_transformers():
            pipe = DiffusionPipeline.from_pretrained(str(p) if p.exists() else base, use_safetensors=True)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise UnlearnkitError(f"cannot load the diffusers pipeline {base!r}: {_first_line(e)}") from None
    finally:
        if was:
            diffusers_logging.enable_progress_bar()


def _load_llava(base: str) -> Any:
    from transformers import LlavaForConditionalGeneration

    p = Path(base).expanduser()
    if p.exists():
        cfg_file = p / "config.json"
        try:
            model_type = json.loads(cfg_file.read_text()).get("model_type") if cfg_file.is_file() else None
        except (json.JSONDecodeError, AttributeError):
            model_type = None
        if model_type != "llava":
            raise UnlearnkitError(f"{p} is not a LLaVA checkpoint: config.json says model_type={model_type!r}")
    try:
        with quiet_transformers():
            return LlavaForConditionalGeneration.from_pretrained(str(p) if p.exists() else base, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise UnlearnkitError(f"cannot load the LLaVA model {base!r}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def export_towers(clip_dir: str | Path, base: str, out: str | Path, *, into: Literal["diffusers", "llava"]) -> Path:
    """Swap the unlearned CLIP of ``clip_dir`` into ``base`` and save the result in ``out`` (a new folder).

    Args:
        clip_dir: a CLIP folder written by ``save_pretrained`` (``unlearnkit run`` with ``save_models``, or
            :func:`~unlearnkit.concept.save_clip`), with its tokenizer when ``into="diffusers"``.
        base: a diffusers text-to-image pipeline (``into="diffusers"``) or a LLaVA model (``"llava"``): a
            local folder or a Hub name, loaded from safetensors only.
        out: where the swapped pipeline or model is saved (must not exist, or be an empty folder).
        into: ``"diffusers"`` (the text tower) or ``"llava"`` (the vision tower).

    Returns:
        ``out``. On bad input nothing is written and :class:`UnlearnkitError` says why in one line.
    """
    if into not in TARGETS:
        raise UnlearnkitError(f"export target must be one of {', '.join(TARGETS)}, got {into!r}")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UnlearnkitError(f"{out} already exists and is not an empty folder")
    clip_path = Path(clip_dir).expanduser()
    if not clip_path.is_dir():
        raise UnlearnkitError(f"{clip_path} is not a CLIP folder")
    clip = load_clip(clip_path)
    if into == "diffusers":
        tokenizer = clip_tokenizer(clip_path)
        target = text_encoder_into_pipeline(clip, _load_pipeline(base), tokenizer)
    else:
        target = vision_tower_into_llava(clip, _load_llava(base))
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=parent))
    try:
        with quiet_transformers(), torch.no_grad():
            target.save_pretrained(tmp, safe_serialization=True)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
