"""Setting 3 on the one run path (plan -> run_cell -> store -> reports) on a tiny concept world, its config
kind, and the pretraining target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unlearnkit.concept import (
    ConceptUnlearnData,
    WorldConfig,
    encode_images,
    encode_texts,
    evaluate_concept,
    load_concept_data,
    make_concept_world,
    pretrain_clip,
    small_clip,
)
from unlearnkit.concept.retrieval import recall_at_k
from unlearnkit.concept.safe_clip import SafeCLIP
from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.experiments import ResultsStore, run_benchmark
from unlearnkit.experiments.config import load_config, parse_concept_config

TINY = {
    "name": "tiny", "setting": 3, "dataset": "concept_world",
    "world": {"n_train": 32, "n_val": 8, "n_test": 16},
    "clip": {"config": "clip_tiny"}, "pretrain": {"epochs": 2, "batch_size": 16},
    "methods": {"safe_clip": {"epochs": 1, "batch_size": 16}, "neg_contrastive": {"epochs": 1, "batch_size": 16},
                "unsafe_projection": {}},
    "seeds": [0], "device": "cpu",
}  # fmt: skip


def test_runs_stores_reports_and_resumes(tmp_path):
    cfg = parse_concept_config({**TINY, "cache_dir": str(tmp_path / "cache")})
    res = run_benchmark(cfg, tmp_path / "out")
    assert (res.ran, res.failed, res.trained_models) == (4, 0, 1)
    runs = ResultsStore(tmp_path / "out" / "results.db").runs()
    assert sorted(r["method"] for r in runs) == ["neg_contrastive", "original", "safe_clip", "unsafe_projection"]
    for r in runs:
        assert r["scenario"]["dataset"] == "concept_world" and r["scenario"]["forget"] == "concept:unsafe"
        assert r["model"] == "clip_tiny" and r["seed"] == 0 and r["status"] == "ok"
        assert 0 <= r["metrics"]["t2v_r1"] <= 1 and 0 <= r["metrics"]["unsafe_rate_tstar"] <= 1
        assert 0 <= r["metrics"]["relearn_unsafe_rate_tstar"] <= 1  # the relearning attack, on by default
        assert "time_s" in r["metrics"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {r["method"] for r in report["runs"]} == {r["method"] for r in runs}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "tstar_to_v_union_r1" in md and "Talk layout: concept redirection in CLIP (setting 3)" in md
    assert "| talk, ViSU/ViT-L/14 (reference) | safe_clip | 45.9 |" in md  # the talk's row beside ours
    again = run_benchmark(cfg, tmp_path / "out")  # stored runs are skipped; nothing is trained
    assert (again.ran, again.skipped, again.trained_models) == (0, 4, 0)


def test_exports_carry_the_word_vocabulary(tmp_path):
    """A small CLIP's export is usable on its own: the weights plus the word tokenizer that encodes its captions."""
    from transformers import CLIPModel

    from unlearnkit.concept import WordTokenizer, encode_texts, make_concept_world
    from unlearnkit.concept.world import WorldConfig

    cfg = parse_concept_config({**TINY, "methods": {"unsafe_projection": {}}, "save_models": True,
                                "cache_dir": str(tmp_path / "cache")})  # fmt: skip
    run_benchmark(cfg, tmp_path / "out")
    (folder,) = (tmp_path / "out" / "models").iterdir()
    tok = WordTokenizer.load(folder)
    world = make_concept_world(0, WorldConfig(**cfg.world.model_dump()))
    texts = world.test.unsafe_text[:3]
    assert [t.tolist() for t in tok(texts)] == [t.tolist() for t in world.tokenizer(texts)]
    assert encode_texts(CLIPModel.from_pretrained(folder).eval(), tok, texts).shape[0] == 3
    (folder / WordTokenizer.FILE).write_text("{not json")
    with pytest.raises(UnlearnkitError, match="cannot read a word tokenizer"):
        WordTokenizer.load(folder)


def test_a_failing_method_is_recorded(tmp_path, monkeypatch):
    def boom(self, model, data, generator):
        raise RuntimeError("diverged")

    monkeypatch.setattr(SafeCLIP, "_unlearn", boom)
    cfg = parse_concept_config({**TINY, "methods": {"safe_clip": {}}, "cache_dir": str(tmp_path / "c")})
    res = run_benchmark(cfg, tmp_path / "out")
    assert (res.ran, res.failed) == (2, 1)
    failed = ResultsStore(tmp_path / "out" / "results.db").runs(status="failed")
    assert failed[0]["method"] == "safe_clip" and "RuntimeError: diverged" in failed[0]["error"]


@pytest.mark.parametrize(
    ("change", "msg"),
    [({"setting": 1}, "setting"), ({"colour": "red"}, "colour: unknown key"),
     ({"clip": {"config": "clip_tiny", "from_pretrained": "x"}}, "exactly one of"),
     ({"dataset": "visu"}, "needs a visu section"), ({"seeds": [0, 0]}, "distinct"),
     ({"world": {"twin": "copy"}}, "world.twin: Input should be 'independent' or 'overlay'")],
)  # fmt: skip
def test_bad_configs(change, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_concept_config({**TINY, **change})


def test_world_twin_reaches_the_data_and_its_cache_key():
    default = load_concept_data("concept_world", 0, world=parse_concept_config(TINY).world.model_dump())
    overlay_cfg = parse_concept_config({**TINY, "world": {**TINY["world"], "twin": "overlay"}})
    overlay = load_concept_data("concept_world", 0, world=overlay_cfg.world.model_dump())
    assert default.spec["twin"] == "independent" and overlay.spec["twin"] == "overlay"  # part of the cache key
    assert torch.equal(default.test.safe_image.pixels, overlay.test.safe_image.pixels)
    assert not torch.equal(default.test.unsafe_image.pixels, overlay.test.unsafe_image.pixels)


def test_bad_input_fails_before_writing(tmp_path):
    for change, msg in [({"methods": ["safe_clipp"]}, "unknown method 'safe_clipp'"),
                        ({"methods": {"safe_clip": {"lr": -1}}}, "parameter 'lr'"),
                        ({"metrics": ["t2v_r3"]}, "unknown metric 't2v_r3'"),
                        ({"clip": {"config": "clip_huge"}}, "unknown small CLIP config")]:  # fmt: skip
        with pytest.raises(UnlearnkitError, match=msg):
            run_benchmark(parse_concept_config({**TINY, **change}), tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_yaml_configs_dispatch_on_setting():
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    for path in (root / "setting3_concept_world.yaml", root / "setting3_visu_clip_vit_l14.yaml"):
        cfg = load_config(path)
        assert cfg.setting == 3 and {m.name for m in cfg.method_specs()} >= {"safe_clip"}


def test_evaluate_concept_without_classes_says_why():
    world = make_concept_world(0, WorldConfig(n_train=4, n_val=0, n_test=4))
    world.class_prompts = []
    model = small_clip("clip_tiny", vocab_size=len(world.tokenizer), max_length=16)
    vals = evaluate_concept(model, world, metrics=["zero_shot_acc", "t2v_r1"])
    assert str(vals["zero_shot_acc"]).startswith("not computed: concept_world has no object classes")
    assert isinstance(vals["t2v_r1"], float)


@pytest.mark.slow
def test_pretraining_reaches_the_retrieval_target_and_safe_clip_redirects():
    """The benchmark's recipe: text→image R@1 >= 0.3 on the test split before unlearning (minutes on CPU)."""
    world = make_concept_world(0)
    model = small_clip("clip_small", vocab_size=len(world.tokenizer), max_length=16, seed=0)
    pretrain_clip(model, world.train, world.tokenizer, epochs=30, generator=torch.Generator().manual_seed(0))
    s, v = encode_texts(model, world.tokenizer, world.test.safe_text), encode_images(model, world.test.safe_image)
    assert recall_at_k(s @ v.T, torch.arange(len(s)), (1,))[1] >= 0.3
    before = evaluate_concept(model, world, metrics=["tstar_to_v_union_r1", "t2v_r1"])
    safe = SafeCLIP(epochs=8, lora_alpha=16.0, patience=None, restore="last").unlearn(
        model, ConceptUnlearnData(world.train, world.tokenizer, world.val)
    )
    after = evaluate_concept(safe, world, metrics=["tstar_to_v_union_r1", "t2v_r1"])
    assert after["tstar_to_v_union_r1"] > before["tstar_to_v_union_r1"] + 0.05
    assert after["t2v_r1"] >= before["t2v_r1"] - 0.05


def test_cli_run_applies_overrides_and_refuses_classifier_options(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    path = tmp_path / "s3.yaml"
    path.write_text(yaml.safe_dump({**TINY, "cache_dir": str(tmp_path / "cache")}))
    res = CliRunner().invoke(app, ["run", "-c", str(path), "--out", str(tmp_path / "out"), "-q", "--forget", "class:3"])
    assert res.exit_code == 2 and "option --forget does not apply to a setting-3" in res.output
    assert not (tmp_path / "out").exists()
    args = ["run", "-c", str(path), "--out", str(tmp_path / "out"), "-q", "--methods", "unsafe_projection",
            "--seeds", "1", "--threads", "1", "--epochs", "1"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    runs = ResultsStore(tmp_path / "out" / "results.db").runs()
    assert len(runs) == 2 and {r["seed"] for r in runs} == {1}
    assert {r["method"] for r in runs} == {"original", "unsafe_projection"}
    assert runs[0]["config"]["concept"]["pretrain"]["epochs"] == 1


def test_talk_layout_section_only_for_concept_runs():
    from unlearnkit.reports.concept import talk_layout_concept

    assert talk_layout_concept([{"scenario": {"dataset": "digits", "forget": "class:3"}, "method": "x"}]) is None
    run = {"scenario": {"dataset": "concept_world", "forget": "concept:unsafe"}, "method": "original", "model": "m",
           "seed": 0, "params": {}, "metrics": {"t2v_r1": 0.5, "unsafe_rate_tstar": 1.0}}  # fmt: skip
    sec = talk_layout_concept([run])
    assert sec is not None and "| measured: concept_world/m | original | 50.0 |" in sec.markdown


def test_load_config_returns_the_kind_its_setting_names():
    from unlearnkit.experiments.config import ConceptRunConfig, RunConfig, load_config, parse_config

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    assert type(load_config(root / "setting3_concept_world.yaml")) is ConceptRunConfig
    assert type(load_config(root / "setting1_digits.yaml")) is RunConfig
    assert type(parse_config(TINY)) is ConceptRunConfig
    with pytest.raises(ConfigError, match="world: unknown key"):  # a setting-1 config has no CLIP sections
        parse_config({k: v for k, v in TINY.items() if k != "setting"})
