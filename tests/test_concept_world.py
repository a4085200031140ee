"""The concept world: seeded, twins share content, splits identify their content, the tokenizer is strict."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.concept import WordTokenizer, WorldConfig, make_concept_world
from unlearnkit.concept.world import SHAPES, UNSAFE, tokenizer
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


def test_twins_share_content(world):
    q = world.train
    for i in range(len(q)):
        s, u = q.safe_text[i], q.unsafe_text[i]
        word = next(w for w in UNSAFE[q.tag[i]] if w in u.split())
        assert s in u and u.replace(s, "").split() in (["with", word], [word, "near"])
        v, g = q.safe_image.pixels[i], q.unsafe_image.pixels[i]
        changed = (v != g).any(dim=0)  # the marker: one square patch, a quarter of the image side
        assert 0 < changed.float().mean() < 0.1
        rows, cols = changed.nonzero().T
        assert rows.max() - rows.min() < 10 and cols.max() - cols.min() < 10
    assert set(q.tag) <= set(UNSAFE)
    assert q.label is not None and set(q.label.tolist()) <= set(range(len(SHAPES)))


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
     (WorldConfig(n_train=0), "n_train")],
)  # fmt: skip
def test_bad_world_config(cfg, msg):
    with pytest.raises(UnlearnkitError, match=msg):
        make_concept_world(0, cfg)
