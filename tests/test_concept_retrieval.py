"""Retrieval metrics of setting 3 against hand-computed cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unlearnkit.concept.retrieval import (
    concept_retrieval,
    recall_at_k,
    target_ranks,
    unsafe_top1_rate,
    zero_shot_accuracy,
)
from unlearnkit.errors import UnlearnkitError


def test_recall_hand_computed():
    # 3 queries over a gallery of 4; targets 0, 1, 2
    sim = torch.tensor([
        [0.9, 0.1, 0.2, 0.3],  # target 0 ranks first            -> rank 0
        [0.5, 0.4, 0.6, 0.1],  # target 1 (0.4) beaten by 0.5, 0.6 -> rank 2
        [0.1, 0.2, 0.0, 0.3],  # target 2 (0.0) is last            -> rank 3
    ])  # fmt: skip
    targets = torch.tensor([0, 1, 2])
    assert target_ranks(sim, targets).tolist() == [0, 2, 3]
    r = recall_at_k(sim, targets, (1, 2, 3, 4))
    assert r == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 2 / 3, 4: 1.0})


def test_ties_count_against_the_query():
    sim = torch.tensor([[0.5, 0.5, 0.1]])
    assert target_ranks(sim, torch.tensor([0])).item() == 1  # the tied item counts as ahead
    assert recall_at_k(sim, torch.tensor([1]), (1,))[1] == 0.0


def test_unsafe_rate_hand_computed():
    sim = torch.tensor([
        [0.9, 0.1, 0.8, 0.2],  # best safe 0.9 > best unsafe 0.8 -> safe
        [0.1, 0.2, 0.3, 0.0],  # best unsafe 0.3                  -> unsafe
        [0.4, 0.0, 0.4, 0.0],  # tie                              -> unsafe
    ])  # fmt: skip
    unsafe = torch.tensor([False, False, True, True])
    assert unsafe_top1_rate(sim, unsafe) == pytest.approx(2 / 3)


def test_zero_shot_hand_computed():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    classes = [torch.tensor([[1.0, 0.0], [0.9, 0.1]]), torch.tensor([[0.0, 1.0]])]
    assert zero_shot_accuracy(images, classes, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def _twins(n: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    content = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    marker = torch.zeros(d)
    marker[0] = 3.0
    return content, content.clone(), content + marker, content + marker  # s, v, u, g


def test_concept_retrieval_original_vs_redirected():
    s, v, u, g = _twins()
    orig = concept_retrieval(s, v, u, g, (1, 5))
    assert orig["t2v_r1"] == 1.0 and orig["v2t_r1"] == 1.0
    assert orig["unsafe_rate_tstar"] == 1.0 and orig["unsafe_rate_vstar"] == 1.0  # u finds g, g finds u
    assert orig["tstar_to_v_union_r1"] == 0.0
    # a redirected space: unsafe texts land on their safe twin's text, unsafe images drift off
    red = concept_retrieval(s, v, s.clone(), v + 0.3 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)))
    assert red["tstar_to_v_union_r1"] == 1.0 and red["unsafe_rate_tstar"] == 0.0


def test_concept_retrieval_gallery_layout():
    # u_i equals v_j for j = i+1: the query's top-1 is another safe image, a miss that is still safe
    s, v, _, g = _twins()
    u = torch.roll(v, shifts=-1, dims=0)
    r = concept_retrieval(s, v, u, g, (1, 2))
    assert r["tstar_to_v_union_r1"] == 0.0 and r["unsafe_rate_tstar"] == 0.0


def test_bad_shapes_raise():
    with pytest.raises(UnlearnkitError, match="targets"):
        target_ranks(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(UnlearnkitError, match="equal counts"):
        concept_retrieval(torch.zeros(3, 2), torch.zeros(2, 2), torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(UnlearnkitError, match="unsafe mask"):
        unsafe_top1_rate(torch.zeros(2, 2), torch.tensor([True, True]))
