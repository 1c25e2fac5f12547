"""The KD loss against values computed by hand, and its limiting cases."""

from __future__ import annotations

import math

import pytest
import torch

from r1distill.train.losses import distill_loss, topk_forward_kl_sum


def _example():
    # One position; the student's distribution over a 3-token vocabulary is q = [1/4, 1/4, 1/2].
    student = torch.tensor([[[0.0, 0.0, math.log(2.0)]]])  # (B=1, T=1, V=3)
    labels = torch.tensor([[2]])
    # The teacher stored its top-2: token 2 with p=0.6, token 0 with p=0.2 (0.2 of its mass is elsewhere).
    ids = torch.tensor([[[2, 0]]])
    lps = torch.log(torch.tensor([[[0.6, 0.2]]]))
    return student, labels, ids, lps


def test_kd_loss_by_hand_tau1():
    student, labels, ids, lps = _example()
    out = distill_loss(student, labels, ids, lps, alpha=0.5, temperature=1.0)
    # Teacher renormalised over its top-2: p = [0.75, 0.25]; the student's q at those ids is [1/2, 1/4].
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.25)
    ce = -math.log(0.5)
    assert out["kd"].item() == pytest.approx(kl, abs=1e-6)
    assert out["ce"].item() == pytest.approx(ce, abs=1e-6)
    assert out["loss"].item() == pytest.approx(0.5 * ce + 0.5 * kl, abs=1e-6)


def test_kd_loss_by_hand_tau2():
    student, labels, ids, lps = _example()
    out = distill_loss(student, labels, ids, lps, alpha=0.25, temperature=2.0)
    # At τ=2 the teacher's top-2 become ∝ sqrt(0.6), sqrt(0.2); the student is softmax([0, 0, ln2]/2).
    p = [math.sqrt(0.6), math.sqrt(0.2)]
    p = [x / sum(p) for x in p]
    z = 2 + math.sqrt(2)
    q = {2: math.sqrt(2) / z, 0: 1 / z}
    kl = p[0] * math.log(p[0] / q[2]) + p[1] * math.log(p[1] / q[0])
    ce = -math.log(0.5)  # CE stays at temperature 1
    assert out["kd"].item() == pytest.approx(kl, abs=1e-6)
    assert out["loss"].item() == pytest.approx(0.25 * ce + 0.75 * 4 * kl, abs=1e-6)


def test_masking_and_normalisation():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[-100, 1, 2, -100], [3, -100, -100, -100]])
    ids = torch.randint(0, 7, (2, 4, 3))
    lps = torch.log_softmax(torch.randn(2, 4, 3), -1)
    full = distill_loss(logits, labels, ids, lps, alpha=0.0)
    # Changing anything at masked positions changes nothing; the mean is over the 3 valid tokens.
    logits2, ids2 = logits.clone(), ids.clone()
    logits2[0, 0] += 5.0
    ids2[1, 2] = 0
    assert distill_loss(logits2, labels, ids2, lps, alpha=0.0)["loss"].item() == pytest.approx(full["loss"].item())
    per_sum = topk_forward_kl_sum(logits, ids, lps, labels)
    assert full["kd"].item() == pytest.approx(per_sum.item() / 3, rel=1e-6)
    # num_items (e.g. the whole accumulated batch) replaces the local count.
    assert distill_loss(logits, labels, ids, lps, alpha=0.0, num_items=6)["kd"].item() == pytest.approx(
        per_sum.item() / 6, rel=1e-6)


def test_full_vocab_topk_is_exact_kl_and_zero_when_equal():
    torch.manual_seed(1)
    V = 11
    teacher = torch.randn(2, 3, V)
    student = torch.randn(2, 3, V)
    labels = torch.zeros(2, 3, dtype=torch.long)
    lp_t = torch.log_softmax(teacher, -1)
    ids = torch.arange(V).expand(2, 3, V)
    kl = (lp_t.exp() * (lp_t - torch.log_softmax(student, -1))).sum(-1).mean()
    out = distill_loss(student, labels, ids, lp_t, alpha=0.0)
    assert out["kd"].item() == pytest.approx(kl.item(), abs=1e-5)
    assert distill_loss(teacher, labels, ids, lp_t, alpha=0.0)["kd"].item() == pytest.approx(0.0, abs=1e-6)


def test_alpha_one_is_plain_sft_and_needs_no_teacher():
    logits = torch.randn(1, 3, 5)
    labels = torch.tensor([[1, -100, 4]])
    out = distill_loss(logits, labels, alpha=1.0)
    ref = torch.nn.functional.cross_entropy(logits[0], labels[0], ignore_index=-100)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ValueError, match="topk"):
        distill_loss(logits, labels, alpha=0.5)
