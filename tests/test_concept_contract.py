"""Contract tests generated from the method registry's setting-3 (CLIP) entries (twin of test_methods_contract.py).

Every registered concept method must: be default-constructible with hyperparameters stored verbatim;
round-trip ``get_params``/``set_params``; refuse invalid hyperparameters (and non-CLIP models) before any
work; leave its input CLIP untouched; give the same weights for the same seed; and return a plain
``CLIPModel`` with the input's parameter names and shapes (LoRA merged), exportable with ``save_pretrained``.
The runs use each method's ``quick_params`` on a tiny CLIP and a tiny concept world.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn
from transformers import CLIPModel

import unlearnkit as uk
from unlearnkit.concept import ConceptUnlearnData, WorldConfig, make_concept_world
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import METHODS, create_method, list_methods
from unlearnkit.metrics import METRICS

NAMES = list_methods(setting=3)


@pytest.fixture(scope="module")
def world():
    return make_concept_world(0, WorldConfig(n_train=24, n_val=8, n_test=8))


def _data(world, seed=0):
    return ConceptUnlearnData(world.train, world.tokenizer, world.val, seed=seed)


def _quick(name):
    return create_method(name, **METHODS.get(name).quick_params)


def _original(name, clip):
    """The original a method starts from: the CLIP itself, or a MERU model on its towers (``geometry: lorentz``)."""
    from unlearnkit.concept import LorentzCLIP

    return LorentzCLIP(clip) if METHODS.get(name).geometry == "lorentz" else clip


def _towers(model):
    return model.clip if hasattr(model, "log_curv") else model


def test_registry_has_the_three_methods():
    assert {"safe_clip", "neg_contrastive", "unsafe_projection"} <= set(NAMES)
    assert NAMES == list_methods(modality="clip") and not set(NAMES) & set(list_methods(modality="classifier"))
    assert "neggrad" in uk.list_methods() and "safe_clip" in uk.list_methods()  # one registry for every setting


def test_one_metric_registry_each_evaluator_refuses_the_other_modality(world, clip):
    """CLIP metrics sit in the one METRICS registry; evaluate and evaluate_concept each take only their own."""
    from unlearnkit.concept import evaluate_concept

    clip_names = uk.list_metrics(setting=3)
    assert {"t2v_r1", "unsafe_rate_tstar", "zero_shot_acc"} <= set(clip_names)
    assert all(METRICS.get(n).modality == "clip" and METRICS.get(n).settings == (3,) for n in clip_names)
    from unlearnkit.protocols import list_resources

    # what the concept data may lack, or a resource the builder makes (the generation analogue's models)
    assert all(METRICS.get(n).needs <= {"classes", *list_resources()} for n in clip_names)
    assert "acc_forget" in uk.list_metrics(setting=1) and "t2v_r1" not in uk.list_metrics(setting=2)
    assert set(evaluate_concept(clip, world)) == set(clip_names)  # by default, only its own modality
    with pytest.raises(UnlearnkitError, match=r"metric 'acc_forget' scores a classifier model.*evaluate_concept"):
        evaluate_concept(clip, world, metrics=["t2v_r1", "acc_forget"])
    scenario = uk.Scenario(dataset="digits", forget="class:3", seed=0)
    with pytest.raises(UnlearnkitError, match=r"metric 't2v_r1' scores a clip model.*evaluate computes classifier"):
        uk.evaluate(nn.Linear(64, 10), scenario, metrics=["t2v_r1"])


def test_a_clip_method_in_a_classifier_config_is_named_as_such_in_a_fresh_process():
    """Without unlearnkit.concept imported beforehand, a CLIP method in a classifier config is still recognised."""
    import subprocess
    import sys

    cfg = {"forget": ["class:3"], "methods": ["safe_clip"], "device": "cpu"}
    code = f"from unlearnkit.experiments import parse_config, validate_config\nvalidate_config(parse_config({cfg!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "method 'safe_clip' unlearns a clip model (setting 3)" in proc.stderr


def test_a_clip_method_in_a_classifier_config_is_refused_in_one_line():
    from unlearnkit.experiments import parse_config, validate_config

    cfg = parse_config({"forget": ["class:3"], "methods": ["safe_clip"], "device": "cpu"})
    with pytest.raises(UnlearnkitError, match=r"method 'safe_clip' unlearns a clip model .*classifier methods: "):
        validate_config(cfg)


@pytest.mark.parametrize("name", NAMES)
def test_default_constructible_and_params_verbatim(name):
    cls = METHODS.get(name)
    m = cls()
    sig = inspect.signature(cls.__init__)
    for p, v in m.get_params().items():
        assert v is sig.parameters[p].default or v == sig.parameters[p].default
    m.validate_params()
    assert cls.setting == 3 and m.name == name
    clone = cls(**m.get_params())
    assert clone.get_params() == m.get_params()
    with pytest.raises(UnlearnkitError, match="has no hyperparameter"):
        m.set_params(not_a_param=1)
    with pytest.raises(UnlearnkitError, match="has no hyperparameter"):
        create_method(name, not_a_param=1)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_params_raise_before_work(name, clip, world, monkeypatch):
    import unlearnkit.concept._method as cm

    monkeypatch.setattr(cm, "seed_everything", lambda s: pytest.fail("work started before validation"))
    cls = METHODS.get(name)
    first = next(iter(cls._parameter_constraints))
    m = cls().set_params(**{first: "not-valid"})
    with pytest.raises(UnlearnkitError, match=f"parameter '{first}'"):
        m.unlearn(_original(name, clip), _data(world))
    with pytest.raises(UnlearnkitError, match=r"expects a (transformers CLIPModel|hyperbolic CLIP)"):
        cls().unlearn(nn.Linear(2, 2), _data(world))


@pytest.mark.parametrize("name", NAMES)
def test_no_mutation_determinism_and_plain_clip(name, clip, world, tmp_path):
    """A hyperbolic method returns its model type around a plain CLIPModel (its towers, LoRA merged)."""
    original = _original(name, clip)
    before = {k: v.clone() for k, v in original.state_dict().items()}
    out1 = _quick(name).unlearn(original, _data(world))
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items()), "input CLIP was modified"
    assert type(out1) is type(original) and out1 is not original and type(_towers(out1)) is CLIPModel
    s_in, s_out = original.state_dict(), out1.state_dict()
    assert set(s_in) == set(s_out) and all(s_in[k].shape == s_out[k].shape for k in s_in)
    assert any(not torch.equal(s_in[k], s_out[k]) for k in s_in), "the method changed nothing"
    out2 = _quick(name).unlearn(original, _data(world))
    assert all(torch.equal(a, b) for a, b in zip(s_out.values(), out2.state_dict().values(), strict=True))
    _towers(out1).save_pretrained(tmp_path / name)
    assert CLIPModel.from_pretrained(tmp_path / name).state_dict().keys() == _towers(out1).state_dict().keys()
