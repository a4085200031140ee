"""Setting 3's relearning attack (resource ``clip_relearn_attack``, :mod:`unlearnkit.concept.relearn`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from unlearnkit.concept import WorldConfig, evaluate_concept, make_concept_world, small_clip
from unlearnkit.concept.clip import image_features, text_features
from unlearnkit.concept.relearn import AFTER
from unlearnkit.errors import ConfigError
from unlearnkit.experiments.config import parse_concept_config
from unlearnkit.metrics import NotComputed
from unlearnkit.protocols import ResourceBuilder, ResourceInputs

METRICS = ["unsafe_rate_tstar", "tstar_to_v_union_r1", *AFTER]


@pytest.fixture(scope="module")
def redirected():
    """A tiny CLIP trained to send unsafe captions to the safe twins' images, on data whose train split is its
    test split (so the attack's k pairs are among the scored quadruplets)."""
    w = make_concept_world(0, WorldConfig(n_train=16, n_val=0, n_test=16))
    data = dataclasses.replace(w, train=w.test)
    q, tok = data.test, data.tokenizer
    model = small_clip("clip_tiny", vocab_size=len(tok), max_length=16, seed=0)
    n = len(q)
    ids, mask = tok(q.safe_text + q.unsafe_text)
    pixels = torch.cat([q.safe_image.batch(range(n)), q.unsafe_image.batch(range(n))])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(60):  # s_i or u_i queries [v; g] and must find v_i: the unsafe concept redirected
        pick = torch.arange(n) + n * torch.randint(0, 2, (n,))
        t = F.normalize(text_features(model, ids[pick], mask[pick]), dim=-1)
        v = F.normalize(image_features(model, pixels), dim=-1)
        loss = F.cross_entropy(20.0 * t @ v.T, torch.arange(n))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), data


def _builder(model, data, **knobs):
    inputs = ResourceInputs(None, seed=0, evaluated=model, relearn={"train_lr": 3e-3, **knobs}, concept_data=data)
    return ResourceBuilder(inputs, disk=False)


def test_the_attack_brings_the_unsafe_concept_back(redirected):
    model, data = redirected
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    out = evaluate_concept(model, data, metrics=METRICS, resources=_builder(model, data, k=16, steps=30, seeds=1))
    assert out["unsafe_rate_tstar"] <= 0.25  # redirected before the attack
    assert out["relearn_unsafe_rate_tstar"] >= out["unsafe_rate_tstar"] + 0.4  # 30 steps on the unsafe pairs undo it
    assert out["relearn_tstar_to_v_union_r1"] < out["tstar_to_v_union_r1"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy was attacked
    assert torch.equal(torch.get_rng_state(), rng)


def test_off_or_without_a_builder_the_attack_says_why(redirected):
    model, data = redirected
    off = evaluate_concept(model, data, metrics=list(AFTER), resources=_builder(model, data, enabled=False))
    assert all(isinstance(v, NotComputed) and "off" in v.reason for v in off.values())
    alone = evaluate_concept(model, data, metrics=list(AFTER))
    assert all(isinstance(v, NotComputed) and "resource builder" in v.reason for v in alone.values())


def test_the_config_section_is_validated_and_recorded():
    base = {"setting": 3, "clip": {"config": "clip_tiny"}, "methods": ["unsafe_projection"]}
    assert parse_concept_config(base).relearn.for_cell()["k"] == 10
    assert parse_concept_config({**base, "relearn": False}).relearn.for_cell() is None
    with pytest.raises(ConfigError, match=r"relearn\.k"):
        parse_concept_config({**base, "relearn": {"k": 1}})


def test_the_report_shows_before_and_after_beside_the_original():
    from unlearnkit.reports.relearn import CLIP_TITLE, clip_relearning

    def run(method, before, after):
        metrics = {"unsafe_rate_tstar": before, "relearn_unsafe_rate_tstar": after}
        return {"key": method, "scenario": {"dataset": "concept_world", "forget": "concept:unsafe", "seed": 0},
                "model": "clip_tiny", "method": method, "params": {}, "seed": 0, "status": "ok",
                "metrics": metrics}  # fmt: skip

    sec = clip_relearning([run("safe_clip", 0.1, 0.8), run("original", 0.9, 0.95)])
    assert sec is not None and sec.title == CLIP_TITLE
    lines = [ln for ln in sec.markdown.splitlines() if ln.startswith("| ")]
    assert lines[1].startswith("| original | 0.900 | 0.950 |") and lines[2].startswith("| safe_clip | 0.100 | 0.800 |")
    assert clip_relearning([run("safe_clip", 0.1, None)]) is None  # no attack figures: no section


def test_a_hyperbolic_clip_is_attacked_with_its_own_loss(redirected):
    """A MERU/HySAC model (no CLIP logit scale; MERU's loss) goes through the same attack: finite figures, the
    model itself untouched, its own figures unchanged by the attack."""
    from unlearnkit.concept.meru import small_meru

    _, data = redirected
    meru = small_meru("clip_tiny", vocab_size=len(data.tokenizer), max_length=16, seed=0).eval()
    before = {k: v.clone() for k, v in meru.state_dict().items()}
    plain = evaluate_concept(meru, data, metrics=["tstar_to_v_union_r1"])
    out = evaluate_concept(meru, data, metrics=METRICS, resources=_builder(meru, data, k=16, steps=10, seeds=1))
    assert all(isinstance(out[m], float) and 0.0 <= out[m] <= 1.0 for m in AFTER), out
    assert all(torch.equal(before[k], v) for k, v in meru.state_dict().items())
    assert out["tstar_to_v_union_r1"] == plain["tstar_to_v_union_r1"]
