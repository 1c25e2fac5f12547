"""Our divergences against TRL's own generalized JSD (the loss GKDTrainer trains with).

TRL 1.16 (trl/experimental/gkd/gkd_trainer.py) defines, with q the student and p the teacher at
temperature τ: β = 0 -> KL(p‖q) (forward), β = 1 -> KL(q‖p) (reverse), otherwise
β·KL(p‖m) + (1−β)·KL(q‖m) with m = β·p + (1−β)·q. Its result is masked by labels != -100 and reduced
by `reduction` ("sum": Σ over valid tokens and vocabulary; "batchmean": that / number of valid tokens)
or, when given, divided by `num_items_in_batch`: we compare each against the same normalisation of ours.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from loss_oracle import forward_kl, jsd, reverse_kl
from r1distill.train.losses import distill_loss

with warnings.catch_warnings():  # trl.experimental warns that its API may change
    warnings.simplefilter("ignore")
    from trl.experimental.gkd import GKDTrainer

trl_jsd = GKDTrainer.generalized_jsd_loss


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(3, 6, 17, generator=g) * 2).requires_grad_()
    teacher = torch.randn(3, 6, 17, generator=g) * 2
    labels = torch.randint(0, 17, (3, 6), generator=g)
    labels[0, :3] = -100
    labels[2, 4:] = -100
    return student, teacher, labels


@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_jsd_matches_trl(beta, tau):
    student, teacher, labels = _inputs(int(beta * 10) + int(tau))
    n_valid = int((labels != -100).sum())
    ours = jsd(student, teacher, labels, beta, tau)
    ref = trl_jsd(student, teacher, labels, beta=beta, temperature=tau, reduction="sum")
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
    batchmean = trl_jsd(student, teacher, labels, beta=beta, temperature=tau)  # reduction="batchmean"
    assert ours.item() / n_valid == pytest.approx(batchmean.item(), rel=1e-5, abs=1e-6)
    # num_items_in_batch (the accumulated batch's token count) <-> our num_items; kd is not scaled by τ².
    kd = distill_loss(student, labels, alpha=0.0, temperature=tau, num_items=40, teacher_logits=teacher,
                      divergence="jsd", beta=beta)["kd"]
    assert kd.item() == pytest.approx(trl_jsd(student, teacher, labels, beta=beta, temperature=tau,
                                              num_items_in_batch=40).item(), rel=1e-5, abs=1e-6)
    # Same gradient for the student.
    (g_ours,) = torch.autograd.grad(ours, student)
    (g_ref,) = torch.autograd.grad(ref, student)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_named_kls_are_trl_endpoints(tau):
    student, teacher, labels = _inputs(7)
    fwd = trl_jsd(student, teacher, labels, beta=0.0, temperature=tau, reduction="sum")
    rev = trl_jsd(student, teacher, labels, beta=1.0, temperature=tau, reduction="sum")
    assert forward_kl(student, teacher, labels, tau).item() == pytest.approx(fwd.item(), rel=1e-5)
    assert reverse_kl(student, teacher, labels, tau).item() == pytest.approx(rev.item(), rel=1e-5)
    assert fwd.item() != pytest.approx(rev.item(), rel=1e-2)  # the two really differ here
