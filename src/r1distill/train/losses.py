"""Distillation losses: pure functions on tensors.

Shapes: B batch, T positions, V vocabulary, k stored teacher log-probs per position. Inputs are
already shifted: `student_logits[:, t]` is the student's prediction of `labels[:, t]`, and the
teacher's top-k at [:, t] is its distribution for that same token. Positions whose label is -100
(prompt, padding) count for nothing. Each function returns a SUM over valid tokens, so the caller
divides once by the number of valid tokens in the whole (accumulated, all-rank) batch: that keeps
gradient accumulation exact, as in transformers' `num_items_in_batch`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def ce_sum(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the labels.

    student_logits: (B, T, V); labels: (B, T) with -100 for ignored positions. Returns a scalar.
    """
    return F.cross_entropy(student_logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE,
                           reduction="sum")


def topk_forward_kl_sum(student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
                        labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Summed KL(p_teacher ‖ q_student) over the teacher's top-k, with the teacher renormalised.

    p = softmax(topk_logprobs / τ) over the k stored entries (the teacher's mass outside its top-k
    is dropped and the rest rescaled to 1); log q = log_softmax(student_logits / τ) over the full
    vocabulary, read at the k ids. Per token: Σ_k p_k (log p_k − log q_k), which is minimised when
    the student matches the renormalised teacher on the top-k; with k = V it is the exact forward KL.

    student_logits: (B, T, V); topk_ids: (B, T, k) int; topk_logprobs: (B, T, k) teacher log-probs at
    temperature 1; labels: (B, T), -100 marks positions without a teacher distribution. Returns a scalar
    (not multiplied by τ²; the caller does that).
    """
    mask = labels != IGNORE  # (B, T)
    log_p = torch.log_softmax(topk_logprobs.float() / temperature, dim=-1)  # (B, T, k)
    log_q_all = torch.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, T, V)
    log_q = log_q_all.gather(-1, topk_ids.long())  # (B, T, k)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1)  # (B, T)
    return (per_token * mask).sum()


def distill_loss(student_logits: torch.Tensor, labels: torch.Tensor, topk_ids: torch.Tensor | None = None,
                 topk_logprobs: torch.Tensor | None = None, alpha: float = 1.0, temperature: float = 1.0,
                 num_items: torch.Tensor | int | None = None) -> dict[str, torch.Tensor]:
    """α·CE + (1−α)·τ²·KL(teacher top-k ‖ student), each averaged over `num_items` valid tokens.

    alpha=1 is plain SFT (no teacher log-probs needed). `num_items` defaults to this batch's count
    of valid labels. Returns {"loss", "ce", "kd"} (kd is 0 when alpha == 1).
    """
    n = (labels != IGNORE).sum() if num_items is None else num_items
    n = torch.as_tensor(n, device=student_logits.device).clamp(min=1)
    ce = ce_sum(student_logits, labels) / n
    if alpha >= 1.0:
        return {"loss": ce, "ce": ce, "kd": torch.zeros_like(ce)}
    if topk_ids is None or topk_logprobs is None:
        raise ValueError("distill_loss with alpha < 1 needs the teacher's topk_ids and topk_logprobs")
    kd = topk_forward_kl_sum(student_logits, topk_ids, topk_logprobs, labels, temperature) / n
    loss = alpha * ce + (1 - alpha) * temperature**2 * kd
    return {"loss": loss, "ce": ce, "kd": kd}
