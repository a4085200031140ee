"""The setting-3 generation analogue (issue 20): pure metric functions, canonical renders, caption parsing, and
the generator/captioner/detector as resources of the one ResourceBuilder, cached on disk per seed."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from unlearnkit.concept import WorldConfig, evaluate_concept, make_concept_world, small_clip
from unlearnkit.concept import downstream as ds
from unlearnkit.concept.clip import encode_texts
from unlearnkit.concept.downstream_metrics import attribute_accuracy, share, unsafe_word_share
from unlearnkit.engine import ModelCache
from unlearnkit.errors import UnlearnkitError
from unlearnkit.metrics import NotComputed, list_metrics
from unlearnkit.protocols import ResourceBuilder, ResourceInputs

GEN_METRICS = ["gen_unsafe_rate", "gen_safe_fidelity", "caption_unsafe_share", "caption_safe_acc", "gen_detector_acc"]
RECIPE = {"enabled": True, "generator_epochs": 2, "captioner_epochs": 2, "detector_epochs": 1, "batch_size": 32}


@pytest.fixture(scope="module")
def world():
    data = make_concept_world(0, WorldConfig(n_train=48, n_val=0, n_test=12, image_size=16))
    clip = small_clip("clip_tiny", vocab_size=len(data.tokenizer), max_length=data.tokenizer.max_length,
                      image_size=16, seed=0)  # fmt: skip
    return data, clip


def _builder(data, clip, cache_dir, generation=RECIPE):
    inputs = ResourceInputs(None, seed=0, concept_data=data, original=clip, generation=dict(generation))
    return ResourceBuilder(inputs, cache_dir=cache_dir)


# -- pure functions against hand-computed references -------------------------------------------------------
def test_share_attribute_accuracy_and_unsafe_word_share():
    assert share([True, False, True, True]) == 0.75
    assert attribute_accuracy({"a": [1, 2, 3], "b": ["x", "y", "z"]}, {"a": [1, 0, 3], "b": ["x", "q", "q"]}) == (
        pytest.approx((2 / 3 + 1 / 3) / 2)
    )
    # whole words only: "bloody" is not "blood"
    assert unsafe_word_share(["a red circle with blood", "gore", "a bloody mess"], {"blood", "gore"}) == 2 / 3
    with pytest.raises(UnlearnkitError):
        share([])
    with pytest.raises(UnlearnkitError):
        attribute_accuracy({"a": [1]}, {"a": [1, 2]})
    with pytest.raises(UnlearnkitError):
        unsafe_word_share([], {"gore"})


def test_the_metrics_are_registered_for_setting_3():
    assert set(GEN_METRICS) <= set(list_metrics(setting=3, modality="clip"))


# -- the world's canonical renders and caption content --------------------------------------------------------
def test_canonical_render_puts_the_marker_opposite_and_nothing_else():
    content = [("circle", "red", "large", 0)]  # top left
    safe = ds.canonical_images(content, [None], 32)
    unsafe = ds.canonical_images(content, ["violence"], 32)
    assert torch.equal(safe, ds.canonical_images(content, [None], 32))  # no noise, no jitter
    diff = (safe != unsafe).any(0)[0]
    ys, xs = torch.nonzero(diff, as_tuple=True)
    assert ys.min() >= 16 and xs.min() >= 16  # only in the bottom-right quadrant
    assert len(ys) > 0 and diff[16:, 16:].float().mean() > 0.1
    with pytest.raises(UnlearnkitError, match="concept-world"):
        ds.contents_of(dataclasses.replace(make_concept_world(1, WorldConfig(n_train=4, n_val=0, n_test=4)).test,
                                           ids=["x", "y", "z", "w"]))  # fmt: skip


def test_parse_caption_reads_every_world_caption(world):
    data, _ = world
    q = data.test
    truth = ds.content_labels(ds.contents_of(q))
    for texts in (q.safe_text, q.unsafe_text):
        for i, text in enumerate(texts):
            got = ds.parse_caption(text)
            assert all(got[a] == ds.ATTRIBUTES[a][int(truth[a][i])] for a in ds.ATTRIBUTES), text
    assert ds.parse_caption("a red thing") == {"shape": None, "colour": "red", "size": None, "position": None}


def test_recipe_is_validated():
    with pytest.raises(UnlearnkitError, match="generator_epochs"):
        ds.DownstreamRecipe.of({"generator_epochs": 0})
    with pytest.raises(UnlearnkitError, match="unknown generation settings"):
        ds.DownstreamRecipe.of({"epochs": 3})


# -- resources and metrics ----------------------------------------------------------------------------------
def test_metrics_swap_in_the_evaluated_towers_and_resources_are_cached(world, tmp_path):
    data, clip = world
    values = evaluate_concept(clip, data, metrics=GEN_METRICS, resources=_builder(data, clip, tmp_path))
    assert all(isinstance(values[m], float) and 0 <= values[m] <= 1 for m in GEN_METRICS), values
    # another model: the metric reads ITS text tower through the generator trained on the original's
    other = copy.deepcopy(clip)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in other.text_model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    b = _builder(data, clip, tmp_path)  # a fresh builder: the three models come from the disk cache
    got = evaluate_concept(other, data, metrics=["gen_unsafe_rate"], resources=b)["gen_unsafe_rate"]
    gen, det = b.get("concept_generator"), b.get("concept_detector")[0]
    want = ds.judge(det, ds.generate(gen, encode_texts(other, data.tokenizer, data.test.unsafe_text))).marker
    assert got == pytest.approx(want.float().mean().item())
    cache = ModelCache(tmp_path / "models")
    recipe = ds.DownstreamRecipe.of(RECIPE)
    device = torch.device("cpu")
    assert not ds.build_detector(data, recipe, 0, cache=cache, device=device)[2]
    assert not ds.build_generator(data, clip, recipe, 0, cache=cache, device=device)[2]
    assert not ds.build_captioner(data, clip, recipe, 0, cache=cache, device=device)[2]
    # the frozen encoder is part of the key: another original means another generator
    assert ds.weights_fingerprint(other) != ds.weights_fingerprint(clip)
    assert list((tmp_path / "models").glob("*.safetensors")) and not list((tmp_path / "models").glob("*.pt"))


def test_generation_off_or_other_data_is_not_computed(world, tmp_path):
    data, clip = world
    off = evaluate_concept(clip, data, metrics=GEN_METRICS, resources=_builder(data, clip, tmp_path, {}))
    assert all(isinstance(v, NotComputed) and "generation analogue is off" in v.reason for v in off.values())
    visu = dataclasses.replace(data, name="visu")
    other = evaluate_concept(clip, visu, metrics=["gen_unsafe_rate"], resources=_builder(visu, clip, tmp_path))
    assert "built on the concept world" in other["gen_unsafe_rate"].reason
    none = evaluate_concept(clip, data, metrics=["caption_safe_acc"])
    assert "resource builder" in none["caption_safe_acc"].reason


def test_config_generation_section_keeps_old_run_keys():
    from unlearnkit.experiments.config import parse_concept_config

    base = {"setting": 3, "methods": ["unsafe_projection"], "clip": {"config": "clip_tiny"}}
    assert "generation" not in parse_concept_config(base).concept_payload()
    on = parse_concept_config({**base, "generation": {"generator_epochs": 5}}).concept_payload()
    assert on["generation"]["generator_epochs"] == 5 and on["generation"]["enabled"]
    assert "generation" not in parse_concept_config({**base, "generation": {"enabled": False}}).concept_payload()


@pytest.mark.slow
def test_a_generation_config_runs_through_the_one_runner_into_the_report(tmp_path):
    from unlearnkit.experiments import run_benchmark
    from unlearnkit.experiments.config import parse_concept_config

    cfg = parse_concept_config({
        "setting": 3, "world": {"n_train": 48, "n_val": 8, "n_test": 12, "image_size": 16},
        "clip": {"config": "clip_tiny"}, "pretrain": {"epochs": 1, "batch_size": 16},
        "generation": {k: v for k, v in RECIPE.items() if k != "enabled"}, "methods": ["unsafe_projection"],
        "seeds": [0], "device": "cpu", "cache_dir": str(tmp_path / "cache"),
    })  # fmt: skip
    res = run_benchmark(cfg, tmp_path / "out")
    assert res.failed == 0 and res.ran == 2
    md = (tmp_path / "out" / "report.md").read_text()
    assert "T2I unsafe ↓" in md and "I2T safe acc" in md
