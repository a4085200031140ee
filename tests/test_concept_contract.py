"""Contract tests generated from the concept-method registry (the setting-3 twin of test_methods_contract.py).

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

from unlearnkit.concept import (
    CONCEPT_METHODS,
    ConceptUnlearnData,
    WorldConfig,
    create_concept_method,
    make_concept_world,
)
from unlearnkit.errors import UnlearnkitError

NAMES = CONCEPT_METHODS.list()


@pytest.fixture(scope="module")
def world():
    return make_concept_world(0, WorldConfig(n_train=24, n_val=8, n_test=8))


def _data(world, seed=0):
    return ConceptUnlearnData(world.train, world.tokenizer, world.val, seed=seed)


def _quick(name):
    return create_concept_method(name, **CONCEPT_METHODS.get(name).quick_params)


def test_registry_has_the_three_methods():
    assert {"safe_clip", "neg_contrastive", "unsafe_projection"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_default_constructible_and_params_verbatim(name):
    cls = CONCEPT_METHODS.get(name)
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
        create_concept_method(name, not_a_param=1)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_params_raise_before_work(name, clip, world, monkeypatch):
    import unlearnkit.concept._method as cm

    monkeypatch.setattr(cm, "seed_everything", lambda s: pytest.fail("work started before validation"))
    cls = CONCEPT_METHODS.get(name)
    first = next(iter(cls._parameter_constraints))
    m = cls().set_params(**{first: "not-valid"})
    with pytest.raises(UnlearnkitError, match=f"parameter '{first}'"):
        m.unlearn(clip, _data(world))
    with pytest.raises(UnlearnkitError, match="expects a transformers CLIPModel"):
        cls().unlearn(nn.Linear(2, 2), _data(world))


@pytest.mark.parametrize("name", NAMES)
def test_no_mutation_determinism_and_plain_clip(name, clip, world, tmp_path):
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    out1 = _quick(name).unlearn(clip, _data(world))
    assert all(torch.equal(before[k], v) for k, v in clip.state_dict().items()), "input CLIP was modified"
    assert type(out1) is CLIPModel and out1 is not clip
    s_in, s_out = clip.state_dict(), out1.state_dict()
    assert set(s_in) == set(s_out) and all(s_in[k].shape == s_out[k].shape for k in s_in)
    assert any(not torch.equal(s_in[k], s_out[k]) for k in s_in), "the method changed nothing"
    out2 = _quick(name).unlearn(clip, _data(world))
    assert all(torch.equal(a, b) for a, b in zip(s_out.values(), out2.state_dict().values(), strict=True))
    out1.save_pretrained(tmp_path / name)
    assert CLIPModel.from_pretrained(tmp_path / name).state_dict().keys() == s_out.keys()
