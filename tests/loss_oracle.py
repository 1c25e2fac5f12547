"""Reference divergences for the tests: plain, unchunked formulas written apart from train/losses.py, so that the
training loss (`distill_loss`, `chunked_distill_loss`) is checked against an independent oracle rather than
against itself. Shapes as in losses.py: logits (B, T, V), labels (B, T) with -100 off the completion, top-k
(B, T, k). Every function returns a SUM over valid positions (not × τ²)."""

from __future__ import annotations

import math

import torch

IGNORE = -100
TAIL_FLOOR = 1e-6  # as in losses.py: both tail buckets are floored here


def _per_token(log_q: torch.Tensor, log_p: torch.Tensor, divergence: str, beta: float,
               sub_normalised: bool) -> torch.Tensor:
    p, q = log_p.exp(), log_q.exp()
    if divergence == "jsd" and beta in (0.0, 1.0):
        divergence = "forward_kl" if beta == 0 else "reverse_kl"
    if divergence == "forward_kl":
        return torch.where(p > 0, p * (log_p - log_q), 0.0).sum(-1)
    if divergence == "reverse_kl":
        kl = torch.where(q > 0, q * (log_q - log_p), 0.0).sum(-1)
        return kl + (1 - q.sum(-1)) if sub_normalised else kl
    if divergence == "jsd":
        m = beta * p + (1 - beta) * q
        log_m = m.log()
        return (beta * torch.where(p > 0, p * (log_p - log_m), 0.0).sum(-1)
                + (1 - beta) * torch.where(q > 0, q * (log_q - log_m), 0.0).sum(-1))
    if divergence == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    raise ValueError(divergence)


def _sum(per_token: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.where(labels != IGNORE, per_token, 0.0).sum()


def divergence_sum(student_logits, teacher_logits, labels, divergence="forward_kl", beta=0.5, temperature=1.0):
    log_q = torch.log_softmax(student_logits.double() / temperature, -1)
    log_p = torch.log_softmax(teacher_logits.detach().double() / temperature, -1)
    return _sum(_per_token(log_q, log_p, divergence, beta, False), labels).to(student_logits.dtype)


def forward_kl(student_logits, teacher_logits, labels, temperature=1.0):
    return divergence_sum(student_logits, teacher_logits, labels, "forward_kl", temperature=temperature)


def reverse_kl(student_logits, teacher_logits, labels, temperature=1.0):
    return divergence_sum(student_logits, teacher_logits, labels, "reverse_kl", temperature=temperature)


def jsd(student_logits, teacher_logits, labels, beta=0.5, temperature=1.0):
    return divergence_sum(student_logits, teacher_logits, labels, "jsd", beta, temperature)


def tvd(student_logits, teacher_logits, labels, temperature=1.0):
    return divergence_sum(student_logits, teacher_logits, labels, "tvd", temperature=temperature)


def topk_log_probs(student_log_probs, topk_ids, topk_logprobs, temperature=1.0, topk_mode="renorm"):
    """(log_q, log_p) over the stored top-k: (B, T, k) for renorm, (B, T, k+1) for tail. Entries with id < 0 or a
    log-prob that is not finite are absent (probability 0 on both sides, -inf here)."""
    valid = (topk_ids >= 0) & torch.isfinite(topk_logprobs)
    log_q = student_log_probs.gather(-1, topk_ids.long().clamp_min(0))
    log_q = torch.where(valid, log_q, -math.inf)
    lp = torch.where(valid, topk_logprobs.double(), -math.inf)
    if topk_mode == "renorm":
        scaled = lp / temperature
        log_p = scaled - torch.logsumexp(scaled, -1, keepdim=True)
        return log_q, torch.where(valid, log_p, -math.inf)
    tail_p = 1 - lp.exp().sum(-1, keepdim=True)
    tail_p = torch.where(tail_p >= TAIL_FLOOR, tail_p, 0.0)
    full = torch.cat([lp, tail_p.log()], -1) / temperature
    log_p = full - torch.logsumexp(full, -1, keepdim=True)
    log_p = torch.cat([log_p[..., :-1], log_p[..., -1:].clamp_min(math.log(TAIL_FLOOR))], -1)
    tail_q = (1 - log_q.exp().sum(-1, keepdim=True)).clamp_min(TAIL_FLOOR)
    return torch.cat([log_q, tail_q.log()], -1), log_p


def topk_divergence_sum(student_logits, topk_ids, topk_logprobs, labels, divergence="forward_kl",
                        topk_mode="renorm", beta=0.5, temperature=1.0):
    log_q, log_p = topk_log_probs(torch.log_softmax(student_logits.double() / temperature, -1), topk_ids,
                                  topk_logprobs, temperature, topk_mode)
    per = _per_token(log_q, log_p, divergence, beta, topk_mode == "renorm")
    any_valid = ((topk_ids >= 0) & torch.isfinite(topk_logprobs)).any(-1)
    return _sum(torch.where(any_valid, per, 0.0), labels).to(student_logits.dtype)


def topk_forward_kl_sum(student_logits, topk_ids, topk_logprobs, labels, temperature=1.0, topk_mode="renorm"):
    return topk_divergence_sum(student_logits, topk_ids, topk_logprobs, labels, "forward_kl", topk_mode,
                               temperature=temperature)
