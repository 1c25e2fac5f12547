"""The KD loss against values computed by hand, and its limiting cases."""

from __future__ import annotations

import math

import pytest
import torch

from loss_oracle import (
    divergence_sum,
    forward_kl,
    jsd,
    reverse_kl,
    topk_divergence_sum,
    topk_forward_kl_sum,
    topk_log_probs,
    tvd,
)
from r1distill.train.losses import TAIL_FLOOR, chunked_distill_loss, distill_loss


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


# ---- Divergences on full distributions: a 2×3×5 example checked against plain Python float math. ----

STUDENT = [[[1.0, 0.5, -0.3, 2.0, 0.0], [0.2, 0.2, 1.5, -1.0, 0.7], [3.0, -2.0, 0.1, 0.4, 1.1]],
           [[-0.5, 0.9, 0.3, 0.0, -1.2], [2.2, 1.0, -0.4, 0.6, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0]]]
TEACHER = [[[0.3, 1.4, -0.8, 1.1, 0.2], [-0.6, 0.9, 2.1, 0.0, 0.4], [1.7, -0.9, 0.6, 0.0, 2.0]],
           [[0.1, 1.3, -0.2, 0.5, -0.7], [1.2, 1.8, 0.3, -0.5, 0.9], [2.5, -1.0, 0.0, 0.0, 0.0]]]
LABELS = [[3, 2, -100], [-100, 0, 1]]
DIVERGENCES = ["forward_kl", "reverse_kl", "jsd", "tvd"]


def _softmax(xs: list[float], tau: float) -> list[float]:
    m = max(xs)
    e = [math.exp((x - m) / tau) for x in xs]
    return [x / sum(e) for x in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _by_hand(name: str, p: list[float], q: list[float], beta: float) -> float:
    if name == "forward_kl" or (name == "jsd" and beta == 0):
        return _kl(p, q)
    if name == "reverse_kl" or (name == "jsd" and beta == 1):
        return _kl(q, p)
    if name == "jsd":
        m = [beta * a + (1 - beta) * b for a, b in zip(p, q)]
        return beta * _kl(p, m) + (1 - beta) * _kl(q, m)
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q))


def _expected(name: str, tau: float, beta: float = 0.5) -> float:
    return sum(_by_hand(name, _softmax(TEACHER[b][t], tau), _softmax(STUDENT[b][t], tau), beta)
               for b in range(2) for t in range(3) if LABELS[b][t] != -100)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_divergences_by_hand(tau):
    s, t, y = torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS)
    assert forward_kl(s, t, y, tau).item() == pytest.approx(_expected("forward_kl", tau), abs=1e-5)
    assert reverse_kl(s, t, y, tau).item() == pytest.approx(_expected("reverse_kl", tau), abs=1e-5)
    assert tvd(s, t, y, tau).item() == pytest.approx(_expected("tvd", tau), abs=1e-5)
    for beta in (0.0, 0.3, 0.5, 1.0):
        assert jsd(s, t, y, beta, tau).item() == pytest.approx(_expected("jsd", tau, beta), abs=1e-5)
    # distill_loss averages the same sums over the 4 valid tokens and scales kd by τ² in the loss.
    out = distill_loss(s, y, alpha=0.0, temperature=tau, teacher_logits=t, divergence="tvd")
    assert out["kd"].item() == pytest.approx(_expected("tvd", tau) / 4, abs=1e-6)
    assert out["loss"].item() == pytest.approx(tau**2 * _expected("tvd", tau) / 4, abs=1e-5)


def test_jsd_endpoints_are_trl_special_cases():
    # The mixture formula alone tends to 0 at β→0, as β·KL(p‖q); β=0 is forward KL exactly, not that limit.
    s, t, y = torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS)
    near0 = jsd(s, t, y, 1e-4).item()
    assert near0 == pytest.approx(1e-4 * _expected("forward_kl", 1.0), rel=1e-2)
    assert jsd(s, t, y, 0.0).item() == pytest.approx(forward_kl(s, t, y).item(), abs=1e-6)
    with pytest.raises(ValueError, match="beta"):  # the implementation checks β
        distill_loss(s, y, teacher_logits=t, alpha=0.0, divergence="jsd", beta=1.5)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_zero_when_student_equals_teacher(name):
    torch.manual_seed(2)
    x, y = torch.randn(2, 4, 9), torch.tensor([[0, 1, -100, 3], [4, 5, 6, -100]])
    assert divergence_sum(x, x.clone(), y, name, beta=0.3, temperature=1.5).item() == pytest.approx(0.0, abs=1e-5)
    # Tail mode sees the same k+1 buckets on both sides when the stored top-k is the student's own; renorm
    # forward KL does not vanish (the student is charged for its mass outside the top-k).
    lp, ids = torch.log_softmax(x, -1).topk(4, dim=-1)
    assert topk_divergence_sum(x, ids, lp, y, name, "tail", beta=0.3).item() == pytest.approx(0.0, abs=1e-5)
    if name == "forward_kl":
        assert topk_divergence_sum(x, ids, lp, y, name, "renorm").item() > 0.1


@pytest.mark.parametrize("name", DIVERGENCES)
def test_masked_positions_count_for_nothing(name):
    torch.manual_seed(3)
    s, t = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    y = torch.tensor([[-100, 1, 2, -100], [3, -100, -100, -100]])
    ref = divergence_sum(s, t, y, name)
    s2, t2 = s.clone(), t.clone()
    s2[0, 0] += 7.0
    t2[1, 3] = float("nan")  # even garbage at a masked position stays out of the sum
    assert divergence_sum(s2, t2, y, name).item() == pytest.approx(ref.item(), abs=1e-6)
    each = sum(divergence_sum(s[b:b + 1, i:i + 1], t[b:b + 1, i:i + 1], y[b:b + 1, i:i + 1], name)
               for b, i in ((0, 1), (0, 2), (1, 0)))
    assert ref.item() == pytest.approx(each.item(), abs=1e-6)
    assert divergence_sum(s, t, torch.full_like(y, -100), name).item() == 0.0


def test_symmetries():
    torch.manual_seed(4)
    s, t, y = torch.randn(2, 3, 7), torch.randn(2, 3, 7), torch.tensor([[1, 2, 3], [4, -100, 6]])
    assert tvd(s, t, y).item() == pytest.approx(tvd(t, s, y).item(), abs=1e-6)
    assert jsd(s, t, y, 0.5).item() == pytest.approx(jsd(t, s, y, 0.5).item(), abs=1e-6)
    assert jsd(s, t, y, 0.3).item() == pytest.approx(jsd(t, s, y, 0.7).item(), abs=1e-6)
    assert forward_kl(s, t, y).item() == pytest.approx(reverse_kl(t, s, y).item(), abs=1e-5)
    assert forward_kl(s, t, y).item() != pytest.approx(forward_kl(t, s, y).item(), abs=1e-3)
    assert 0 < tvd(s, t, y).item() <= 5  # ≤ 1 per valid token


# ---- Top-k offline KD: renorm vs tail. ----

def test_tail_mode_and_renorm_reverse_kl_by_hand():
    student, labels, ids, lps = _example()  # q = [1/4, 1/4, 1/2]; teacher top-2 ids [2, 0] with p [0.6, 0.2]
    fwd = topk_divergence_sum(student, ids, lps, labels, "forward_kl", "tail")
    # 3 buckets: the teacher's [0.6, 0.2, tail 0.2] against the student's [1/2, 1/4, tail 1/4].
    assert fwd.item() == pytest.approx(0.6 * math.log(0.6 / 0.5) + 2 * 0.2 * math.log(0.2 / 0.25), abs=1e-6)
    rev = topk_divergence_sum(student, ids, lps, labels, "reverse_kl", "tail")
    assert rev.item() == pytest.approx(0.5 * math.log(0.5 / 0.6) + 2 * 0.25 * math.log(0.25 / 0.2), abs=1e-6)
    tv = topk_divergence_sum(student, ids, lps, labels, "tvd", "tail")
    assert tv.item() == pytest.approx(0.5 * (0.1 + 0.05 + 0.05), abs=1e-6)
    # Renorm reverse KL: p = [0.75, 0.25] against the sub-normalised q = [1/2, 1/4], plus the missing 1/4.
    rev = topk_divergence_sum(student, ids, lps, labels, "reverse_kl", "renorm")
    assert rev.item() == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.25 * math.log(0.25 / 0.25) + 0.25, abs=1e-6)


@pytest.mark.parametrize("mode", ["renorm", "tail"])
@pytest.mark.parametrize("name", DIVERGENCES)
def test_topk_with_k_equal_v_is_the_full_divergence(name, mode):
    torch.manual_seed(5)
    V = 11
    s, t = torch.randn(2, 3, V), torch.randn(2, 3, V)
    y = torch.tensor([[0, -100, 2], [3, 4, 5]])
    ids = torch.stack([torch.randperm(V) for _ in range(6)]).view(2, 3, V)  # any order of the V ids
    lps = torch.log_softmax(t, -1).gather(-1, ids)
    for tau in (1.0, 2.0):
        full = divergence_sum(s, t, y, name, beta=0.4, temperature=tau)
        top = topk_divergence_sum(s, ids, lps, y, name, mode, beta=0.4, temperature=tau)
        assert top.item() == pytest.approx(full.item(), abs=1e-5)
    if mode == "tail":  # both tail buckets hold nothing but the floor
        log_q, log_p = topk_log_probs(torch.log_softmax(s, -1), ids, lps, topk_mode="tail")
        assert log_q[..., -1].exp().max().item() <= 1.01 * TAIL_FLOOR
        assert log_p[..., -1].exp().max().item() <= 1.01 * TAIL_FLOOR


def test_unknown_names_are_rejected():
    student, labels, ids, lps = _example()
    with pytest.raises(ValueError, match="divergence"):
        distill_loss(student, labels, ids, lps, alpha=0.5, divergence="kl")
    with pytest.raises(ValueError, match="topk_mode"):
        distill_loss(student, labels, ids, lps, alpha=0.5, topk_mode="drop")


# ---- Chunked loss from hidden states == distill_loss on the full logits, values and gradients. ----

B, T, H, V, K = 2, 7, 8, 13, 4
CHUNKS = [1, 3, 4, 64]  # 11 valid tokens: 3 and 4 leave a ragged last chunk


def _chunk_inputs(seed: int, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g).to(dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=g) / 2).to(dtype).requires_grad_()
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :2] = -100
    labels[1, 5:] = -100
    t_hidden = torch.randn(B, T, 5, generator=g).to(dtype)
    t_weight = torch.randn(V, 5, generator=g).to(dtype)
    t_lp, ids = torch.log_softmax(torch.randn(B, T, V, generator=g) * 2, -1).topk(K, dim=-1)
    return hidden, weight, labels, t_hidden, t_weight, ids, t_lp


def _check_chunked(kwargs_full: dict, kwargs_chunked: dict, hidden, weight, labels, atol=1e-5):
    ref = distill_loss(hidden @ weight.T, labels, **kwargs_full)
    ref_grads = torch.autograd.grad(ref["loss"], [hidden, weight])
    for chunk_size in CHUNKS:
        out = chunked_distill_loss(hidden, weight, labels, chunk_size=chunk_size, **kwargs_chunked)
        for key in ("loss", "ce", "kd"):
            assert out[key].item() == pytest.approx(ref[key].item(), abs=atol), (key, chunk_size)
        grads = torch.autograd.grad(out["loss"], [hidden, weight])
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want, atol=atol, rtol=0)
        assert not out["ce"].requires_grad and not out["kd"].requires_grad


def test_chunked_ce_only():
    hidden, weight, labels, *_ = _chunk_inputs(0)
    _check_chunked({}, {}, hidden, weight, labels)
    _check_chunked({"num_items": 20}, {"num_items": 20}, hidden, weight, labels)


@pytest.mark.parametrize("mode", ["renorm", "tail"])
@pytest.mark.parametrize("name", DIVERGENCES)
def test_chunked_topk(name, mode):
    hidden, weight, labels, _, _, ids, lps = _chunk_inputs(1)
    for tau, alpha in ((1.0, 0.3), (2.0, 0.0)):
        kw = {"alpha": alpha, "temperature": tau, "divergence": name, "topk_mode": mode, "beta": 0.3}
        _check_chunked({"topk_ids": ids, "topk_logprobs": lps, **kw}, {"topk_ids": ids, "topk_logprobs": lps, **kw},
                       hidden, weight, labels)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_chunked_full_vocab_teacher(name):
    hidden, weight, labels, t_hidden, t_weight, *_ = _chunk_inputs(2)
    t_logits = t_hidden @ t_weight.T
    for tau, alpha in ((1.0, 0.5), (1.5, 0.0)):
        kw = {"alpha": alpha, "temperature": tau, "divergence": name, "beta": 0.7}
        full = {"teacher_logits": t_logits, **kw}
        _check_chunked(full, full, hidden, weight, labels)
        _check_chunked(full, {"teacher_hidden": t_hidden, "teacher_lm_head_weight": t_weight, **kw},
                       hidden, weight, labels)


def test_chunked_shifted_views_no_grad_and_errors():
    hidden, weight, labels, t_hidden, t_weight, ids, lps = _chunk_inputs(3)
    t_logits = t_hidden @ t_weight.T
    # The trainer passes [:, :-1] / [:, 1:] views, which are not contiguous.
    kw = {"alpha": 0.2, "divergence": "jsd", "teacher_logits": t_logits[:, :-1]}
    _check_chunked(kw, kw, hidden[:, :-1], weight, labels[:, 1:])
    with torch.no_grad():
        ref = distill_loss(hidden @ weight.T, labels, ids, lps, alpha=0.4, topk_mode="tail")
        out = chunked_distill_loss(hidden, weight, labels, ids, lps, alpha=0.4, topk_mode="tail", chunk_size=3)
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), abs=1e-5) and not out["loss"].requires_grad
    with pytest.raises(ValueError, match="topk"):
        chunked_distill_loss(hidden, weight, labels, alpha=0.5)
    with pytest.raises(ValueError, match="not both"):
        chunked_distill_loss(hidden, weight, labels, ids, lps, teacher_logits=t_logits, alpha=0.5)


def test_chunked_bf16_accumulates_head_gradient_in_fp32():
    hidden, weight, labels, _, _, ids, lps = _chunk_inputs(4, torch.bfloat16)
    ref = distill_loss(hidden.float() @ weight.float().T, labels, ids, lps, alpha=0.5)
    ref_gw = torch.autograd.grad(ref["loss"], weight)[0]
    out = chunked_distill_loss(hidden, weight, labels, ids, lps, alpha=0.5, chunk_size=3)
    gw = torch.autograd.grad(out["loss"], weight)[0]
    assert gw.dtype == torch.bfloat16
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), abs=2e-2)
    torch.testing.assert_close(gw.float(), ref_gw.float(), atol=2e-2, rtol=2e-2)


def test_chunked_frozen_head_gets_no_gradient():
    hidden, weight, labels, _, _, ids, lps = _chunk_inputs(5)
    ref = distill_loss(hidden @ weight.T, labels, ids, lps, alpha=0.5)
    (ref_gh,) = torch.autograd.grad(ref["loss"], hidden)
    frozen = weight.detach()  # e.g. LoRA, where the LM head is not trained
    out = chunked_distill_loss(hidden, frozen, labels, ids, lps, alpha=0.5, chunk_size=4)
    (gh,) = torch.autograd.grad(out["loss"], hidden)
    torch.testing.assert_close(gh, ref_gh, atol=1e-5, rtol=0)
    out = chunked_distill_loss(hidden.detach(), weight, labels, ids, lps, alpha=0.5, chunk_size=4)
    out["loss"].backward()
    assert weight.grad is not None and hidden.grad is None


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd", "tvd"])
@pytest.mark.parametrize("mode", ["renorm", "tail"])
def test_unmapped_topk_entries_count_as_absent(divergence, mode):
    # An API server's top-k entry whose token string could not be mapped is stored as id -1, log-prob -inf:
    # the loss must equal the loss over the remaining entries, and a position with none left gets no KD term.
    g = torch.Generator().manual_seed(0)
    B, T, V, k = 2, 5, 11, 4
    student = torch.randn(B, T, V, generator=g, requires_grad=True)
    teacher = torch.log_softmax(torch.randn(B, T, V, generator=g), -1)
    lps, ids = teacher.topk(k, dim=-1)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, 0] = -100
    kw = dict(alpha=0.3, temperature=2.0, divergence=divergence, topk_mode=mode, num_items=9)
    # Column 1 unmapped everywhere == that column dropped.
    ids_u, lps_u = ids.clone(), lps.clone()
    ids_u[..., 1], lps_u[..., 1] = -1, float("-inf")
    keep = [0, 2, 3]
    got = distill_loss(student, labels, ids_u, lps_u, **kw)
    want = distill_loss(student, labels, ids[..., keep], lps[..., keep], **kw)
    for key in ("loss", "ce", "kd"):
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-6)
    (ga,) = torch.autograd.grad(got["loss"], student)
    (gb,) = torch.autograd.grad(want["loss"], student)
    torch.testing.assert_close(ga, gb, atol=1e-6, rtol=1e-6)
    # A position with every entry unmapped (llama.cpp's eos step) adds nothing to KD; CE is unchanged.
    ids_e, lps_e = ids.clone(), lps.clone()
    ids_e[1, 3], lps_e[1, 3] = -1, float("-inf")
    masked = labels.clone()
    masked[1, 3] = -100
    got = distill_loss(student, labels, ids_e, lps_e, **kw)
    assert torch.isfinite(got["loss"])
    torch.testing.assert_close(got["kd"], distill_loss(student, masked, ids, lps, **kw)["kd"])
    torch.testing.assert_close(got["ce"], distill_loss(student, labels, ids, lps, **kw)["ce"])
    # The chunked path agrees.
    w = torch.randn(V, 6, generator=g)
    h = torch.randn(B, T, 6, generator=g)
    ch = chunked_distill_loss(h, w, labels, ids_u, lps_u, chunk_size=3, **kw)
    torch.testing.assert_close(ch["loss"], distill_loss(h @ w.t(), labels, ids_u, lps_u, **kw)["loss"])
    assert torch.isfinite(topk_divergence_sum(student, ids_e, lps_e, labels, divergence, mode))


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd", "tvd"])
@pytest.mark.parametrize("mode", ["renorm", "tail"])
def test_masked_entries_at_real_ids_count_as_absent(divergence, mode):
    # A real id with log-prob -inf is a masked entry (vLLM's processed_logprobs after top-p, processed API
    # log-probs). Before valid_topk, 0·(−inf) made forward KL NaN and reverse KL +inf. Now the loss is finite and
    # equals the loss with those entries removed, values and gradients, chunked too.
    g = torch.Generator().manual_seed(1)
    B, T, V, k = 2, 5, 11, 4
    student = torch.randn(B, T, V, generator=g, requires_grad=True)
    teacher = torch.log_softmax(torch.randn(B, T, V, generator=g), -1)
    lps, ids = teacher.topk(k, dim=-1)
    labels = torch.randint(0, V, (B, T), generator=g)
    kw = dict(alpha=0.3, temperature=1.5, divergence=divergence, topk_mode=mode)
    masked = lps.clone()
    masked[..., 3] = float("-inf")  # the last entry cut by top-p at every position, its id kept
    got = distill_loss(student, labels, ids, masked, **kw)
    want = distill_loss(student, labels, ids[..., :3], lps[..., :3], **kw)
    for key in ("loss", "ce", "kd"):
        assert torch.isfinite(got[key]), (key, got[key])
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-6)
    (ga,) = torch.autograd.grad(got["loss"], student)
    (gb,) = torch.autograd.grad(want["loss"], student)
    assert torch.isfinite(ga).all()
    torch.testing.assert_close(ga, gb, atol=1e-6, rtol=1e-6)
    # Per-row masks that differ (2 and 3 entries masked) and a NaN: each row as if those entries were not there.
    m2 = lps.clone()
    m2[0, :, 2:] = float("-inf")
    m2[1, 1, 1] = float("nan")
    got = topk_divergence_sum(student, ids, m2, labels, divergence, mode)
    want = (topk_divergence_sum(student[:1], ids[:1, :, :2], lps[:1, :, :2], labels[:1], divergence, mode)
            + topk_divergence_sum(student[1:, [0, 2, 3, 4]], ids[1:, [0, 2, 3, 4]], lps[1:, [0, 2, 3, 4]],
                                  labels[1:, [0, 2, 3, 4]], divergence, mode)
            + topk_divergence_sum(student[1:, 1:2], ids[1:, 1:2, [0, 2, 3]], lps[1:, 1:2, [0, 2, 3]],
                                  labels[1:, 1:2], divergence, mode))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    w = torch.randn(V, 6, generator=g)
    h = torch.randn(B, T, 6, generator=g)
    ch = chunked_distill_loss(h, w, labels, ids, masked, chunk_size=3, **kw)
    torch.testing.assert_close(ch["loss"], distill_loss(h @ w.t(), labels, ids[..., :3], lps[..., :3], **kw)["loss"])
