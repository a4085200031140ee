"""Relearning-robust methods beside EU-k/CF-k: UNDO (distillation into a noised copy) and SAM+NPO."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import unlearnkit as uk
from unlearnkit.methods.sam_npo import npo_loss, sam_perturbation
from unlearnkit.methods.undo import distill_kl, masked_teacher_logits, shrink_perturb


def test_masked_distillation_matches_the_renormalised_kl():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    t = 2.0
    got = float(distill_kl(student, masked_teacher_logits(teacher, (1,)), t))
    # reference: the teacher's softmax over the classes left (0, 2, 3), KL to the student's full softmax
    tn, sn = teacher.numpy() / t, student.numpy() / t
    keep = [0, 2, 3]
    p = np.exp(tn[:, keep]) / np.exp(tn[:, keep]).sum(1, keepdims=True)
    log_q = sn - np.log(np.exp(sn).sum(1, keepdims=True))
    want = float(np.mean((p * (np.log(p) - log_q[:, keep])).sum(1))) * t * t
    assert got == pytest.approx(want, rel=1e-5)
    assert math.isfinite(float(distill_kl(student, masked_teacher_logits(teacher, ()), t)))


def test_shrink_perturb_mixes_weights_and_buffers():
    a, b = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        a.weight.fill_(1.0)
        b.weight.fill_(3.0)
        a.running_mean.fill_(2.0)
    shrink_perturb(a, b, 0.25)
    assert torch.allclose(a.weight, torch.full((3,), 1.5)) and torch.allclose(a.running_mean, torch.full((3,), 1.5))
    assert int(a.num_batches_tracked) == 0  # integer buffers are left alone


def test_undo_forgets_the_class_from_retain_data_only_and_starts_from_fresh_weights(
    trained_mlp, digits_class_scenario
):  # fmt: skip
    sc = digits_class_scenario
    data = uk.UnlearnData.from_scenario(sc, provide=("retain",), device="cpu")  # D_f withheld: never read
    out = uk.unlearn("undo", trained_mlp, data, alpha=1.0, model_factory="mlp", train_config=uk.TrainConfig())
    m = uk.evaluate(out, sc, metrics=["acc_forget_test", "acc_retain_test"], device="cpu")
    assert m["acc_forget_test"] == 0.0 and m["acc_retain_test"] > 0.8
    kept = uk.unlearn("undo", trained_mlp, data, alpha=0.0, model_factory="mlp", train_config=uk.TrainConfig())
    w0, w1, w2 = (net[1].weight.detach() for net in (trained_mlp, out, kept))
    # α = 1 starts from a fresh draw of the initialiser, α = 0 from the original: the first ends further away
    assert float((w1 - w0).norm()) > 2 * float((w2 - w0).norm())


def test_npo_loss_matches_its_formula():
    g = torch.Generator().manual_seed(1)
    logits, ref, y = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    beta = 0.5
    p = torch.softmax(logits, 1)[torch.arange(6), y].numpy()
    p_ref = torch.softmax(ref, 1)[torch.arange(6), y].numpy()
    want = float(np.mean(np.log1p((p / p_ref) ** beta))) * 2 / beta
    assert float(npo_loss(logits, ref, y, beta)) == pytest.approx(want, rel=1e-5)
    assert float(npo_loss(ref, ref, y, beta)) == pytest.approx(2 / beta * math.log(2), rel=1e-6)  # θ = θ_ref


def test_sam_perturbation_is_rho_along_the_gradient():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    da, db = sam_perturbation([a, b], 0.5)
    assert torch.allclose(da, torch.tensor([0.3, 0.0])) and torch.allclose(db, torch.tensor([0.4]))


def test_sam_npo_forgets_and_its_perturbation_changes_the_update(trained_mlp, digits_class_scenario):
    sc = digits_class_scenario
    sam = uk.unlearn("sam_npo", trained_mlp, sc, device="cpu", epochs=2)
    plain = uk.unlearn("sam_npo", trained_mlp, sc, device="cpu", epochs=2, rho=0.0)
    m = uk.evaluate(sam, sc, metrics=["acc_forget_test", "acc_retain_test"], device="cpu")
    assert m["acc_forget_test"] <= 0.05 and m["acc_retain_test"] > 0.85
    diff = max(float((p - q).detach().abs().max()) for p, q in zip(sam.parameters(), plain.parameters(), strict=True))
    assert diff > 1e-3  # the forget gradient is taken at θ + δ̂, not at θ
