"""Setting 3's user path end to end, offline: ViSU files + ``clip.from_pretrained`` pointing at a directory.

The directory is a complete, tiny Hugging Face CLIP checkpoint in the real formats, written here: a
random-weight ``CLIPModel`` (safetensors), a byte-level BPE CLIP tokenizer built from a ``vocab.json`` and
``merges.txt`` laid out like OpenAI's (256 byte symbols, the same 256 with the ``</w>`` word end, the
merges, then ``<|startoftext|>`` and ``<|endoftext|>`` last), and a ``CLIPImageProcessor``. The runner
must load all three from it exactly as it would load ``openai/clip-vit-large-patch14``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer, CLIPTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from unlearnkit.concept import encode_texts, evaluate_concept
from unlearnkit.concept.clip import small_clip_config
from unlearnkit.concept.sources import load_concept_data
from unlearnkit.concept.visu import HFTokenizer
from unlearnkit.errors import UnlearnkitError
from unlearnkit.experiments import ResultsStore, run_benchmark
from unlearnkit.experiments.config import ConceptRunConfig, parse_concept_config

IMAGE_SIZE, MAX_LENGTH = 32, 16
SCENES = ["a dog on a beach", "a man in a kitchen", "two cats on a sofa", "a plate of pasta", "a boy with a kite",
          "a red bus in a street", "a woman on a horse", "a bowl of fruit"]  # fmt: skip
UNSAFE = ["with a knife", "covered in blood", "with a gun", "next to pills"]
SPLITS = {"train": range(0, 8), "validation": range(0, 4), "test": range(4, 8)}
TAGS = ["violence", "violence", "violence", "illegal activity"]
RETRIEVAL = ["t2v_r1", "v2t_r1", "tstar_to_v_union_r1"]


def _words() -> list[str]:
    return sorted({w for text in SCENES + UNSAFE for w in text.split()})


def _write_bpe_files(folder: Path) -> dict[str, int]:
    """OpenAI CLIP's vocabulary layout, with merges that spell every caption word as one ``word</w>`` token."""
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    merges: list[str] = []
    for word in _words():
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:  # merge left to right: (w, o) -> wo, (wo, r) -> wor, ...
            if f"{parts[0]} {parts[1]}" not in merges:
                merges.append(f"{parts[0]} {parts[1]}")
            vocab.setdefault(parts[0] + parts[1], len(vocab))
            parts = [parts[0] + parts[1], *parts[2:]]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab


def _write_clip_dir(folder: Path, *, tokenizer: bool = True, processor: bool = True) -> dict[str, int]:
    bpe = folder.parent / f"{folder.name}_bpe"
    vocab = _write_bpe_files(bpe)
    # eos_token_id 2 as in OpenAI's released configs: the text tower pools at the highest id, <|endoftext|>
    config = small_clip_config("clip_tiny", vocab_size=len(vocab), max_length=MAX_LENGTH, image_size=IMAGE_SIZE,
                               eos_token_id=2)  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    if tokenizer:
        CLIPTokenizer.from_pretrained(bpe).save_pretrained(folder)
    if processor:
        CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                           ).save_pretrained(folder)  # fmt: skip
    return vocab


def _write_visu(folder: Path) -> None:
    """ViSU-Text rows per split, a COCO-named safe image and an unsafe image per row (different sizes)."""
    rng = np.random.default_rng(0)
    for split, idx in SPLITS.items():
        rows = []
        for i in idx:
            coco_id = 100 + i
            rows.append({"safe": SCENES[i], "nsfw": f"{SCENES[i]} {UNSAFE[i % 4]}", "tag": TAGS[i % 4],
                         "coco_id": coco_id, "nsfw_im_path": f"{split}/{i}.png"})  # fmt: skip
            for path, size in ((folder / "coco" / f"{coco_id:012d}.jpg", (48, 40)),
                               (folder / "nsfw" / split / f"{i}.png", (40, 56))):  # fmt: skip
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _config(root: Path, clip_dir: Path, **extra):
    visu = {"train": str(root / "visu" / "train.jsonl"), "val": str(root / "visu" / "validation.jsonl"),
            "test": str(root / "visu" / "test.jsonl"), "coco_dir": str(root / "visu" / "coco"),
            "nsfw_dir": str(root / "visu" / "nsfw")}  # fmt: skip
    return parse_concept_config({
        "name": "visu_pretrained", "setting": 3, "dataset": "visu", "visu": visu,
        "clip": {"from_pretrained": str(clip_dir), "max_length": MAX_LENGTH},
        "methods": {"safe_clip": {"epochs": 1, "batch_size": 4}, "unsafe_projection": {}},
        "seeds": [0], "device": "cpu", "threads": 1, "eval_batch_size": 8, "cache_dir": str(root / "cache"), **extra,
    })  # fmt: skip


def _data(cfg: ConceptRunConfig, seed: int):
    """The config's concept data through the runner's building block."""
    visu = cfg.visu.model_dump() if cfg.visu else None
    return load_concept_data(cfg.dataset, seed, visu=visu, clip=cfg.clip.model_dump())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained_path")
    vocab = _write_clip_dir(root / "clip")
    _write_visu(root / "visu")
    return root, vocab


def test_the_directory_loads_offline_in_the_real_formats(world):
    root, vocab = world
    tok = CLIPTokenizerFast.from_pretrained(root / "clip", local_files_only=True)
    ids = tok("A dog on a BEACH with a knife!")["input_ids"]
    words = ["a", "dog", "on", "a", "beach", "with", "a", "knife"]
    expected = [vocab["<|startoftext|>"], *(vocab[w + "</w>"] for w in words), vocab["!</w>"], vocab["<|endoftext|>"]]
    assert ids == expected  # lower-cased, split into words, each word one merged token
    slow_files = CLIPTokenizerFast.from_pretrained(root / "clip_bpe", local_files_only=True)  # vocab + merges only
    assert slow_files("A dog on a BEACH with a knife!")["input_ids"] == expected
    proc = CLIPImageProcessor.from_pretrained(root / "clip", local_files_only=True)
    px = proc(images=[Image.new("RGB", (48, 40))], return_tensors="pt")["pixel_values"]
    assert px.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_visu_with_from_pretrained_runs_stores_and_exports(world, tmp_path):
    root, vocab = world
    cfg = _config(root, root / "clip", save_models=True)
    data = _data(cfg, 0)
    assert isinstance(data.tokenizer, HFTokenizer)  # the checkpoint's own tokenizer, not a word vocabulary
    ids, mask = data.tokenizer([data.test.unsafe_text[0]])
    want = [vocab["<|startoftext|>"], *(vocab[w + "</w>"] for w in data.test.unsafe_text[0].split())]
    want.append(vocab["<|endoftext|>"])
    assert ids.shape == (1, MAX_LENGTH) and ids[0, : len(want)].tolist() == want
    assert mask[0].tolist() == [1] * len(want) + [0] * (MAX_LENGTH - len(want))
    assert data.test.safe_image.batch([0]).shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)  # the processor's size

    res = run_benchmark(cfg, tmp_path / "out")
    assert (res.ran, res.failed, res.trained_models) == (3, 0, 0)  # nothing pretrained: the weights are given
    runs = {r["method"]: r for r in ResultsStore(tmp_path / "out" / "results.db").runs()}
    assert sorted(runs) == ["original", "safe_clip", "unsafe_projection"]
    for r in runs.values():
        assert r["status"] == "ok" and r["model"] == str(root / "clip") and r["scenario"]["dataset"] == "visu"
        assert r["scenario"]["n_train"] == 8 and r["scenario"]["n_test"] == 4
        for name in RETRIEVAL:
            assert 0.0 <= r["metrics"][name] <= 1.0, (r["method"], name)

    exported = sorted((tmp_path / "out" / "models").iterdir())
    tok_ids = CLIPTokenizerFast.from_pretrained(root / "clip", local_files_only=True)(["a dog"]).input_ids
    proc_dict = CLIPImageProcessor.from_pretrained(root / "clip", local_files_only=True).to_dict()
    assert [p.name.split("-")[0] for p in exported] == ["safe_clip", "unsafe_projection"]
    original = CLIPModel.from_pretrained(root / "clip", local_files_only=True).eval()
    before = encode_texts(original, data.tokenizer, data.test.unsafe_text)
    for path in exported:
        method = path.name.split("-")[0]
        model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
        again = evaluate_concept(model, data, metrics=RETRIEVAL, batch_size=8)
        assert again == {k: runs[method]["metrics"][k] for k in RETRIEVAL}  # the stored figures, from the export
        after = encode_texts(model, data.tokenizer, data.test.unsafe_text)
        assert not torch.allclose(before, after, atol=1e-4), method  # the export is the unlearned model
        # the tokenizer and image processor travel with it: the export is a complete CLIP checkpoint
        assert CLIPTokenizerFast.from_pretrained(path, local_files_only=True)(["a dog"]).input_ids == tok_ids
        assert CLIPImageProcessor.from_pretrained(path, local_files_only=True).to_dict() == proc_dict
    reused = _data(_config(root, exported[0]), 0)  # and it runs through clip.from_pretrained again
    assert reused.test.safe_image.batch([0]).shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_model_without_tokenizer_files_fails_in_one_line_before_work(world, tmp_path):
    root, _ = world
    for name, processor in (("model_only", False), ("model_and_processor", True)):
        clip_dir = tmp_path / name
        _write_clip_dir(clip_dir, tokenizer=False, processor=processor)
        with pytest.raises(UnlearnkitError, match="has no tokenizer files") as e:
            run_benchmark(_config(root, clip_dir), tmp_path / "out")
        assert "\n" not in str(e.value) and str(clip_dir) in str(e.value), name
        assert not (tmp_path / "out").exists()
    # past the file check (a Hub name is not checked on disk), transformers' tokenizer of special tokens only
    # (what it builds when the files are missing) is refused too, instead of tokenizing every caption alike
    with pytest.raises(UnlearnkitError, match="has no vocabulary: no tokenizer files were found"):
        _data(_config(root, tmp_path / "model_and_processor"), 0)
    _write_clip_dir(tmp_path / "no_processor", processor=False)
    with pytest.raises(UnlearnkitError, match=r"has no image processor file \(preprocessor_config.json\)"):
        run_benchmark(_config(root, tmp_path / "no_processor"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_checkpoint_mismatches_fail_in_one_line_before_work(world, tmp_path):
    root, _ = world
    cfg = _config(root, root / "clip").model_dump()
    too_long = parse_concept_config({**cfg, "clip": {"from_pretrained": str(root / "clip"), "max_length": 77}})
    with pytest.raises(UnlearnkitError, match=f"clip.max_length 77 exceeds the {MAX_LENGTH} positions of"):
        run_benchmark(too_long, tmp_path / "out")
    clip_dir = tmp_path / "clip_224"
    _write_clip_dir(clip_dir)
    CLIPImageProcessor().save_pretrained(clip_dir)  # transformers' default: 224 px, for a 32 px vision tower
    with pytest.raises(UnlearnkitError, match=f"makes 224px images; its model expects {IMAGE_SIZE}px") as e:
        run_benchmark(_config(root, clip_dir), tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
