"""The ViSU quadruplet loader on small files in ViSU's format, written here with tiny images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from unlearnkit.concept import load_visu
from unlearnkit.concept.visu import clip_image_transform, read_rows
from unlearnkit.errors import UnlearnkitError

ROWS = [
    {"safe": "a man at a kitchen counter", "nsfw": "a man at a kitchen counter with a knife", "tag": "violence",
     "coco_id": 139, "nsfw_im_path": "nsfw/0.png"},
    {"safe": "two dogs on a beach", "nsfw": "two dogs on a beach covered in blood", "tag": "violence",
     "coco_id": 285, "nsfw_im_path": "nsfw/1.png"},
    {"safe": "a plate of pasta", "nsfw": "a plate of pasta next to pills", "tag": "illegal activity",
     "coco_id": 632, "nsfw_im_path": "nsfw/2.png"},
]  # fmt: skip


def _image(path, colour, size=(20, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), colour, dtype=np.uint8)).save(path)


@pytest.fixture
def visu(tmp_path):
    for i, r in enumerate(ROWS):
        _image(tmp_path / "coco" / f"{r['coco_id']:012d}.jpg", (40 * i, 100, 200))
        _image(tmp_path / r["nsfw_im_path"], (200, 40 * i, 10))
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return tmp_path


def test_loads_jsonl_with_images(visu):
    q = load_visu(visu / "test.jsonl", coco_dir=visu / "coco", transform=clip_image_transform(16))
    assert len(q) == 3 and q.safe_text[1] == "two dogs on a beach" and q.tag[2] == "illegal activity"
    assert q.ids == ["139", "285", "632"] and q.label is None
    v, g = q.safe_image.batch([0, 2]), q.unsafe_image.batch([0, 2])
    assert v.shape == (2, 3, 16, 16) and g.shape == (2, 3, 16, 16)
    assert not torch.allclose(v, g)
    assert torch.allclose(q.subset([2]).safe_image.batch([0]), v[1:2])


def test_json_list_and_columns(visu):
    (visu / "rows.json").write_text(json.dumps(ROWS))
    cols = {k: [r[k] for r in ROWS] for k in ROWS[0]}
    (visu / "cols.json").write_text(json.dumps(cols))
    assert read_rows(visu / "rows.json") == ROWS == read_rows(visu / "cols.json")
    q = load_visu(visu / "cols.json", coco_dir=visu / "coco", transform=clip_image_transform(8), limit=2)
    assert len(q) == 2


def test_missing_field(visu):
    bad = [dict(r) for r in ROWS]
    del bad[1]["nsfw_im_path"]
    (visu / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in bad))
    with pytest.raises(UnlearnkitError, match="row 1 is missing field 'nsfw_im_path'") as e:
        load_visu(visu / "bad.jsonl", coco_dir=visu / "coco", transform=clip_image_transform(8))
    assert "\n" not in str(e.value)


def test_mismatched_counts(visu):
    cols = {k: [r[k] for r in ROWS] for k in ROWS[0]}
    cols["nsfw"] = cols["nsfw"][:2]
    (visu / "cols.json").write_text(json.dumps(cols))
    with pytest.raises(UnlearnkitError, match=r"mismatched counts between columns: .*nsfw=2"):
        load_visu(visu / "cols.json", coco_dir=visu / "coco", transform=clip_image_transform(8))


def test_missing_image_file_and_bad_json(visu):
    (visu / "coco" / "000000000285.jpg").unlink()
    with pytest.raises(UnlearnkitError, match=r"1 image files not found .*000000000285\.jpg"):
        load_visu(visu / "test.jsonl", coco_dir=visu / "coco", transform=clip_image_transform(8))
    (visu / "broken.jsonl").write_text('{"safe": "x"\n')
    with pytest.raises(UnlearnkitError, match="line 1 is not valid JSON"):
        read_rows(visu / "broken.jsonl")
    with pytest.raises(UnlearnkitError, match="not found"):
        read_rows(visu / "nope.jsonl")


def test_visu_benchmark_with_a_small_clip(visu, tmp_path):
    from unlearnkit.experiments import ResultsStore, run_benchmark
    from unlearnkit.experiments.config import parse_concept_config

    cfg = parse_concept_config({
        "setting": 3, "dataset": "visu", "device": "cpu", "cache_dir": str(tmp_path / "cache"),
        "visu": {"train": str(visu / "test.jsonl"), "test": str(visu / "test.jsonl"), "coco_dir": str(visu / "coco")},
        "clip": {"config": "clip_tiny", "image_size": 16, "max_length": 12}, "pretrain": {"epochs": 1, "batch_size": 4},
        "methods": ["unsafe_projection"],
    })  # fmt: skip
    res = run_benchmark(cfg, tmp_path / "out")
    assert (res.ran, res.failed) == (2, 0)
    runs = ResultsStore(tmp_path / "out" / "results.db").runs()
    assert {r["scenario"]["dataset"] for r in runs} == {"visu"} and {r["scenario"]["n_test"] for r in runs} == {3}
    assert all(str(r["metrics"]["zero_shot_acc"]).startswith("not computed") for r in runs)
