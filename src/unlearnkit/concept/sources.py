"""Where a setting-3 run's inputs come from and where its models go: concept data, the CLIP source, exports.

The benchmark runner (:mod:`unlearnkit.experiments.runner`) hands these building blocks plain mappings —
the ``world``, ``visu`` and ``clip`` sections of a setting-3 config as dicts — so this package never
depends on the config classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import CLIPModel

from unlearnkit.concept._data import ConceptData, WordTokenizer
from unlearnkit.concept.clip import CLIP_CONFIGS, check_clip_dir, save_clip
from unlearnkit.concept.visu import HFTokenizer, clip_image_transform, load_visu, processor_transform
from unlearnkit.concept.world import WorldConfig, make_concept_world
from unlearnkit.engine import config_hash
from unlearnkit.errors import ConfigError, UnlearnkitError

#: the forget request every setting-3 run records
FORGET = "concept:unsafe"
#: the data sets a setting-3 config may name
CONCEPT_DATASETS = ("concept_world", "visu")


def clip_label(clip: Mapping[str, Any]) -> str:
    """The model name recorded with each run: the small config's name, or the ``from_pretrained`` source."""
    return str(clip["config"]) if clip.get("config") is not None else str(clip.get("from_pretrained"))


def check_clip_source(clip: Mapping[str, Any], dataset: str) -> None:
    """Refuse, in one line and before any work, an unknown small config or an incomplete local checkpoint."""
    if clip.get("config") is not None:
        CLIP_CONFIGS.get(clip["config"])
        return
    path = Path(str(clip.get("from_pretrained") or "")).expanduser()
    if path.exists():
        check_clip_dir(path)
        if dataset == "visu":  # ViSU captions and images go through the checkpoint's own files
            check_preprocessing_files(path)


def check_preprocessing_files(path: Path) -> None:
    """Refuse, in one line, a local checkpoint without the tokenizer or image processor ViSU needs."""
    bpe = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if not (path / "tokenizer.json").is_file() and not bpe:
        raise UnlearnkitError(f"{path} has no tokenizer files (tokenizer.json, or vocab.json and merges.txt)")
    if not (path / "preprocessor_config.json").is_file():
        raise UnlearnkitError(f"{path} has no image processor file (preprocessor_config.json)")


def load_concept_data(
    dataset: str,
    seed: int,
    *,
    world: Mapping[str, Any] | None = None,
    visu: Mapping[str, Any] | None = None,
    clip: Mapping[str, Any] | None = None,
) -> ConceptData:
    """The seed's concept world, or the ViSU files with the tokenizer and preprocessing of ``clip``.

    Args:
        dataset: ``"concept_world"`` or ``"visu"``.
        seed: the concept world is generated from it (ViSU is fixed).
        world: :class:`~unlearnkit.concept.world.WorldConfig` fields.
        visu: ``train``, ``test``, ``val``, ``coco_dir``, ``nsfw_dir``, ``coco_pattern``, ``max_*``.
        clip: ``config`` or ``from_pretrained``, ``image_size``, ``max_length``.
    """
    if dataset == "concept_world":
        return make_concept_world(seed, WorldConfig(**dict(world or {})))
    if dataset != "visu":
        raise ConfigError(f"unknown concept dataset {dataset!r}; known: {', '.join(CONCEPT_DATASETS)}")
    if visu is None:
        raise ConfigError("dataset: visu needs a visu section")
    clip = dict(clip or {})
    max_length, image_size = int(clip.get("max_length", 77)), int(clip.get("image_size", 32))
    src = clip.get("from_pretrained")
    clip_config: Any = None  # a transformers CLIPConfig (imported lazily)
    processor: Any = None  # the checkpoint's CLIPImageProcessor, exported with the unlearned models
    if src is not None:  # the real CLIP's own tokenizer and image processor
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPTokenizerFast

        try:
            hf_tok = CLIPTokenizerFast.from_pretrained(src)
            processor = CLIPImageProcessor.from_pretrained(src)
            transform = processor_transform(processor)
            clip_config = CLIPConfig.from_pretrained(src)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UnlearnkitError(f"cannot load the tokenizer/processor of {src!r}: {first}") from None
        # transformers builds a tokenizer of special tokens only when the files are missing: refuse it
        if len(hf_tok) <= len(set(hf_tok.all_special_tokens)):
            raise UnlearnkitError(f"the tokenizer of {src!r} has no vocabulary: no tokenizer files were found")
        positions = clip_config.text_config.max_position_embeddings
        if max_length > positions:
            raise UnlearnkitError(f"clip.max_length {max_length} exceeds the {positions} positions of {src!r}")
        tok: Any = HFTokenizer(hf_tok, max_length)
    else:
        transform = clip_image_transform(image_size)
    kw = {"coco_dir": visu.get("coco_dir"), "nsfw_dir": visu.get("nsfw_dir"),
          "coco_pattern": visu.get("coco_pattern", "{coco_id:012d}.jpg"), "transform": transform}  # fmt: skip
    train = load_visu(visu["train"], limit=visu.get("max_train"), **kw)
    val = load_visu(visu["val"], limit=visu.get("max_val"), **kw) if visu.get("val") else None
    test = load_visu(visu["test"], limit=visu.get("max_test"), **kw)
    if clip_config is not None:  # the processor's output must be the size the vision tower was built for
        side, want = test.safe_image.batch([0]).shape[-1], clip_config.vision_config.image_size
        if side != want:
            raise UnlearnkitError(f"the image processor of {src!r} makes {side}px images; its model expects {want}px")
    if src is None:  # a small CLIP: a word vocabulary over every caption
        texts = [t for q in (train, val, test) if q is not None for t in q.safe_text + q.unsafe_text]
        tok = WordTokenizer.fit(texts, max_length=max_length)
    spec = {"dataset": "visu", "n_train": len(train), "n_val": len(val) if val else 0, "n_test": len(test),
            "files": config_hash({"train": visu["train"], "val": visu.get("val"), "test": visu["test"],
                                  "ids": test.ids})}  # fmt: skip
    return ConceptData("visu", train, val, test, tok, [], spec, processor)


def scenario_spec(data: ConceptData, seed: int) -> dict[str, Any]:
    """The scenario every run of ``data`` records: dataset, the concept forget request, seed and sizes."""
    return {"dataset": data.name, "forget": FORGET, "seed": seed,
            **{k: v for k, v in data.spec.items() if k not in ("dataset", "seed")}}  # fmt: skip


def export_clip(model: CLIPModel, data: ConceptData, path: Path) -> None:
    """``save_pretrained`` the unlearned CLIP with what encodes its inputs: from a ``from_pretrained`` checkpoint,
    its tokenizer and image processor, so the folder drops into any pipeline that loads CLIP (and into
    ``clip.from_pretrained`` again); for a small CLIP, its word vocabulary (``word_tokenizer.json``). A
    hyperbolic (MERU/HySAC) model also writes ``lorentz.safetensors`` in the HySAC layout (its towers and
    scalars: ``clip.lorentz_checkpoint`` with this folder as ``clip.from_pretrained``)."""
    from unlearnkit.concept.meru import LorentzCLIP

    if isinstance(model, LorentzCLIP):
        from unlearnkit.concept.hysac_checkpoint import save_lorentz_checkpoint

        save_lorentz_checkpoint(model, Path(path) / "lorentz.safetensors")
        model = model.clip
    save_clip(model, path)
    if isinstance(data.tokenizer, WordTokenizer):
        data.tokenizer.save(path)
    elif isinstance(data.tokenizer, HFTokenizer):
        data.tokenizer.tokenizer.save_pretrained(path)
    if data.image_processor is not None:
        data.image_processor.save_pretrained(path)
