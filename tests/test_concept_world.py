"""The concept world: seeded, twins share content, splits identify their content, the tokenizer is strict."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from unlearnkit.concept import WordTokenizer, WorldConfig, make_concept_world
from unlearnkit.concept.world import CLIP_MEAN, CLIP_STD, SHAPES, UNSAFE, tokenizer
from unlearnkit.errors import UnlearnkitError

SMALL = WorldConfig(n_train=24, n_val=8, n_test=16)


@pytest.fixture(scope="module")
def world():
    return make_concept_world(0, SMALL)


def test_same_seed_same_world(world):
    again = make_concept_world(0, SMALL)
    assert torch.equal(world.train.unsafe_image.pixels, again.train.unsafe_image.pixels)
    assert world.test.unsafe_text == again.test.unsafe_text
    other = make_concept_world(1, SMALL)
    assert not torch.equal(world.train.safe_image.pixels, other.train.safe_image.pixels)


def _marker_box(v, g):
    """Rows/cols bounding box of the pixels where ``v`` and ``g`` differ."""
    rows, cols = (v != g).any(dim=0).nonzero().T
    return rows.min(), rows.max(), cols.min(), cols.max()


def _object(img, region):
    """Centroid (y, x) and mean colour of the bright object pixels of ``img`` inside ``region``."""
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    raw = img * std + mean  # back to [0, 1]; the background is about 0.12, every colour has a channel >= 0.85
    mask = (raw.amax(dim=0) > 0.5) & region
    return mask.nonzero().float().mean(dim=0), raw[:, mask].mean(dim=1)


def test_twins_share_content(world):
    q = world.train
    for i in range(len(q)):
        s, u = q.safe_text[i], q.unsafe_text[i]
        word = next(w for w in UNSAFE[q.tag[i]] if w in u.split())
        assert s in u and u.replace(s, "").split() in (["with", word], [word, "near"])
    assert set(q.tag) <= set(UNSAFE)
    assert q.label is not None and set(q.label.tolist()) <= set(range(len(SHAPES)))


def test_overlay_twin_is_the_safe_render_plus_the_marker():
    q = make_concept_world(0, replace(SMALL, twin="overlay")).train
    for i in range(len(q)):
        v, g = q.safe_image.pixels[i], q.unsafe_image.pixels[i]
        changed = (v != g).any(dim=0)  # the marker: one square patch, a quarter of the image side
        assert 0 < changed.float().mean() < 0.1
        r0, r1, c0, c1 = _marker_box(v, g)
        assert r1 - r0 < 10 and c1 - c0 < 10


def test_independent_twin_is_another_render_with_the_same_safe_side(world):
    overlay = make_concept_world(0, replace(SMALL, twin="overlay"))
    for split in ("train", "val", "test"):
        a, b = getattr(world, split), getattr(overlay, split)
        # the safe side (captions, safe images, tags) does not depend on the twin mode
        assert torch.equal(a.safe_image.pixels, b.safe_image.pixels)
        assert (a.safe_text, a.unsafe_text, a.tag) == (b.safe_text, b.unsafe_text, b.tag)
        for i in range(len(a)):
            v, g, g_overlay = a.safe_image.pixels[i], a.unsafe_image.pixels[i], b.unsafe_image.pixels[i]
            r0, r1, c0, c1 = _marker_box(v, g_overlay)
            # the same marker at the same place as in the overlay world ...
            assert torch.equal(g[:, r0 : r1 + 1, c0 : c1 + 1], g_overlay[:, r0 : r1 + 1, c0 : c1 + 1])
            # ... on a render that differs from v almost everywhere outside the marker (its own noise draw)
            outside = torch.ones(v.shape[1:], dtype=torch.bool)
            outside[r0 : r1 + 1, c0 : c1 + 1] = False
            assert (v != g).any(dim=0)[outside].float().mean() > 0.9
            # and still shows the same object: its centre within the jitter (±1.5 px each), its colour within
            # the shade jitter (±0.08 per channel each)
            (yx_v, rgb_v), (yx_g, rgb_g) = _object(v, outside), _object(g, outside)
            assert (yx_v - yx_g).abs().max() <= 4 and (rgb_v - rgb_g).abs().max() <= 0.2


def test_eval_splits_have_distinct_content(world):
    for q in (world.val, world.test):
        assert len(set(q.ids)) == len(q) and len(set(q.safe_text)) == len(q)


def test_shapes_and_sizes(world):
    assert world.test.safe_image.pixels.shape == (16, 3, 32, 32)
    assert len(world.train) == 24 and len(world.val) == 8
    assert world.class_prompts and len(world.class_prompts) == len(SHAPES)


def test_tokenizer_encodes_and_refuses_unknown_words():
    tok = tokenizer()
    ids, mask = tok(["a small red circle at the top left with blood"])
    assert ids.shape == (1, 16) and ids[0, 0] == tok.bos_id
    n = int(mask.sum())
    assert ids[0, n - 1] == tok.eos_id and (ids[0, n:] == tok.pad_id).all()
    with pytest.raises(UnlearnkitError, match=r"'dragon' .* not in the tokenizer's vocabulary"):
        tok(["a red dragon"])
    fitted = WordTokenizer.fit(["a cat", "a dog"])
    assert fitted(["a bird"])[0][0, 2] == 2  # <unk>


@pytest.mark.parametrize(
    ("cfg", "msg"),
    [(WorldConfig(n_test=1000), "distinct contents"), (WorldConfig(image_size=30), "multiple of 8"),
     (WorldConfig(n_train=0), "n_train"), (WorldConfig(twin="copy"), "twin must be one of independent, overlay")],
)  # fmt: skip
def test_bad_world_config(cfg, msg):
    with pytest.raises(UnlearnkitError, match=msg):
        make_concept_world(0, cfg)
