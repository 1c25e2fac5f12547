"""Distillation losses: pure functions on tensors.

Shapes: B batch, T positions, V vocabulary, H hidden size, k stored teacher log-probs per position,
N valid (label != -100) positions. Inputs are already shifted: `student_logits[:, t]` is the student's
prediction of `labels[:, t]`, and the teacher's distribution at [:, t] is for that same token. Positions
whose label is -100 (prompt, padding) count for nothing. Sums run over valid tokens and are divided once by
the number of valid tokens in the whole (accumulated, all-rank) batch (`num_items`): that keeps gradient
accumulation exact, as in transformers' `num_items_in_batch`.

One implementation: `distill_loss` (from logits) and `chunked_distill_loss` (from hidden states, the LM head
applied a chunk at a time) share `_loss_sums`. The tests check both against independent reference formulas
(tests/loss_oracle.py), TRL's `generalized_jsd_loss` and hand-computed values.

Notation: p is the teacher, q the student, both softened by the temperature τ (logits / τ). The teacher
is a fixed target: it never receives a gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

IGNORE = -100
# 1 − Σ of k fp32 probabilities is rounding noise below about this; flooring both tail buckets here keeps
# a vanishing tail on one side from making a KL infinite, at an error of O(TAIL_FLOOR).
TAIL_FLOOR = 1e-6
# A top-k entry is valid when its id is >= 0 and its log-prob finite (`valid_topk`, the one place that decides).
# Invalid ones: id -1, a token an API server named by a string the tokenizer could not map (stored with log-prob
# -inf); a real id with log-prob -inf, a masked entry (vLLM's processed_logprobs after top-p, processed API
# log-probs); NaN. Both sides' log-probs there become this finite floor: the entry then holds no mass on either
# side (exactly 0 after exp), its mass falls into the tail, and 0·(log p − log q) stays 0 rather than NaN or inf.
# A position with no valid entry at all (llama.cpp's eos step) gets no KD term.
UNMAPPED = -1e4

Divergence = Literal["forward_kl", "reverse_kl", "jsd", "tvd"]
TopkMode = Literal["renorm", "tail"]


def upcast(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32 for the softmax math; fp32 and fp64 stay as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log_softmax(logits / τ) in at least fp32 over the last dim; skips the division (a copy) at τ = 1."""
    x = upcast(logits)
    return torch.log_softmax(x if temperature == 1 else x / temperature, dim=-1)


def _masked_sum(per_token: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ per_token over positions whose label is not -100 (a `where`, so garbage there cannot leak in)."""
    return torch.where(labels != IGNORE, per_token, 0.0).sum()


def token_divergence(log_q: torch.Tensor, log_p: torch.Tensor, divergence: Divergence = "forward_kl",
                     beta: float = 0.5, sub_normalised: bool = False) -> torch.Tensor:
    """Per-position divergence between student log-probs `log_q` and teacher log-probs `log_p`.

    log_q, log_p: (..., K) over the same K outcomes (K = V, k or k+1). Returns (...).
      forward_kl  KL(p‖q) = Σ p (log p − log q)
      reverse_kl  KL(q‖p) = Σ q (log q − log p)
      jsd         TRL's generalized JSD: β·KL(p‖m) + (1−β)·KL(q‖m), m = β·p + (1−β)·q, with β = 0 meaning
                  forward_kl and β = 1 reverse_kl exactly (special cases, as in TRL: the mixture formula
                  itself tends to 0 at both ends, like β·KL(p‖q) and (1−β)·KL(q‖p)). β = 0.5 is symmetric.
      tvd         total variation ½ Σ |p − q|
    `sub_normalised`: q is the student's full-vocabulary probabilities read at k ids, so Σq ≤ 1. Only
    reverse_kl needs a fix then: it adds (1 − Σq), the generalized KL of a sub-normalised measure; without
    it the student could lower Σ q log(q/p) below 0 by moving mass off the teacher's ids. The other three
    stay ≥ 0 and reach 0 only at q = p.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"jsd beta must lie in [0, 1], got {beta}")
    if divergence == "jsd" and beta in (0.0, 1.0):
        divergence = "forward_kl" if beta == 0 else "reverse_kl"
    if divergence == "forward_kl":
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if divergence == "reverse_kl":
        q = log_q.exp()
        kl = (q * (log_q - log_p)).sum(-1)
        return kl + (1 - q.sum(-1)) if sub_normalised else kl
    if divergence == "jsd":
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
        return (beta * (log_p.exp() * (log_p - log_m)).sum(-1)
                + (1 - beta) * (log_q.exp() * (log_q - log_m)).sum(-1))
    if divergence == "tvd":
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    raise ValueError(f"unknown divergence {divergence!r}; expected forward_kl, reverse_kl, jsd or tvd")


def _tail_mass(log_probs: torch.Tensor) -> torch.Tensor:
    """1 − Σ exp(log_probs) over the last dim: (..., k) -> (..., 1)."""
    return -torch.expm1(torch.logsumexp(log_probs, dim=-1, keepdim=True))


def valid_topk(topk_ids: torch.Tensor, topk_logprobs: torch.Tensor) -> torch.Tensor:
    """(..., k) bool: the stored teacher entries that count (id >= 0 and a finite log-prob); see UNMAPPED."""
    return (topk_ids >= 0) & torch.isfinite(topk_logprobs)


def _topk_pair(log_q: torch.Tensor, topk_logprobs: torch.Tensor, temperature: float,
               topk_mode: TopkMode, mapped: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's and the teacher's distributions over the teacher's stored top-k, as (log_q, log_p).

    log_q: (..., k) the student's log-probs at τ (log_softmax(logits / τ) over the full vocabulary) read at the
    k ids; topk_logprobs: (..., k) the teacher's log-probs at τ = 1; `mapped`: (..., k) bool, the valid entries
    (`valid_topk`; None: all). Returns two (..., k) tensors for "renorm", two (..., k+1) for "tail":
      renorm  p = softmax(topk_logprobs / τ) over the k entries (the teacher's mass outside its top-k is
              dropped and the rest rescaled to 1, which is exact at any τ); q = the student's full-vocabulary
              probabilities at the k ids (sub-normalised, Σq ≤ 1, so mass it puts elsewhere still costs it).
      tail    (k+1)-way: p = [teacher's k probs, 1 − Σ], q = [student's k probs, its remaining mass]. The
              student side is exact at any τ. The teacher's tempered tail would need its whole distribution,
              so its k+1 log-probs are softened together, the tail as one pseudo-token: exact at τ = 1, an
              approximation otherwise (a lower bound on the tail for τ > 1). Both tails are floored at
              TAIL_FLOOR (the teacher's after softening).
    With k = V both modes give the full distributions (tail buckets at the floor, contributing ~0)."""
    lp = upcast(topk_logprobs.detach())
    if mapped is not None:
        lp = torch.where(mapped, lp, UNMAPPED)
        log_q = torch.where(mapped, log_q, UNMAPPED)
    if topk_mode == "renorm":
        return log_q, _log_softmax(lp, temperature)
    if topk_mode == "tail":
        # A teacher tail below the floor is rounding noise: zero it before softening (τ > 1 would inflate
        # it, ε -> ε^(1/τ)) and floor it after.
        t = _tail_mass(lp)
        log_p = _log_softmax(torch.cat([lp, torch.where(t >= TAIL_FLOOR, t, 0.0).log()], dim=-1), temperature)
        log_p = torch.cat([log_p[..., :-1], log_p[..., -1:].clamp_min(math.log(TAIL_FLOOR))], dim=-1)
        return torch.cat([log_q, _tail_mass(log_q).clamp_min(TAIL_FLOOR).log()], dim=-1), log_p
    raise ValueError(f"unknown topk_mode {topk_mode!r}; expected 'renorm' or 'tail'")


def ce_sum(student_logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Summed cross-entropy of the labels, each token's term times its weight when `weights` is given.

    student_logits: (B, T, V) (or any (..., V)); labels: (B, T) (or the matching (...)) with -100 for
    ignored positions; weights: like labels, no gradient (on-policy's per-token advantages). Returns a scalar.
    """
    flat = F.cross_entropy(upcast(student_logits.reshape(-1, student_logits.shape[-1])), labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum" if weights is None else "none")
    if weights is None:
        return flat
    return _masked_sum(flat.reshape(labels.shape) * upcast(weights.detach()), labels)


def _check_teacher(alpha: float, has_topk: bool, has_full: bool) -> None:
    if has_topk and has_full:
        raise ValueError("give the teacher as topk_ids/topk_logprobs or as full-vocabulary logits, not both")
    if alpha < 1.0 and not (has_topk or has_full):
        raise ValueError("distillation with alpha < 1 needs the teacher's topk_ids and topk_logprobs "
                         "(or its full-vocabulary logits)")


def _loss_sums(student_logits: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float,
               divergence: Divergence, beta: float, topk_mode: TopkMode, topk_ids: torch.Tensor | None,
               topk_logprobs: torch.Tensor | None, teacher_logits: torch.Tensor | None,
               token_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ CE, Σ KD divergence) over valid positions; logits (..., V), labels (...), teacher (..., k|V);
    token_weights (...): CE's per-token weights (alpha 1 only)."""
    if alpha >= 1.0:
        ce = ce_sum(student_logits, labels, token_weights)
        return ce, torch.zeros_like(ce)
    if token_weights is not None:
        raise ValueError("token_weights weigh the CE term alone: they need alpha = 1")
    log_q = _log_softmax(student_logits, temperature)
    # One gather for the label and the teacher's k ids: a single (…, V) scatter in the backward, not two.
    ids = labels.clamp_min(0).unsqueeze(-1)
    if teacher_logits is None:
        ids = torch.cat([ids, topk_ids.long().clamp_min(0)], dim=-1)
    picked = log_q.gather(-1, ids)
    # At τ = 1 the KD log-softmax serves CE too, rather than a second (…, V) one.
    ce = _masked_sum(-picked[..., 0], labels) if temperature == 1 else ce_sum(student_logits, labels)
    if teacher_logits is not None:
        log_p = _log_softmax(teacher_logits.detach(), temperature)
    else:
        mapped = valid_topk(topk_ids, topk_logprobs)
        log_q, log_p = _topk_pair(picked[..., 1:], topk_logprobs, temperature, topk_mode, mapped)
    per_token = token_divergence(log_q, log_p, divergence, beta,
                                 sub_normalised=teacher_logits is None and topk_mode == "renorm")
    if teacher_logits is None:
        per_token = torch.where(mapped.any(-1), per_token, 0.0)
    return ce, _masked_sum(per_token, labels)


def distill_loss(student_logits: torch.Tensor, labels: torch.Tensor, topk_ids: torch.Tensor | None = None,
                 topk_logprobs: torch.Tensor | None = None, alpha: float = 1.0, temperature: float = 1.0,
                 num_items: torch.Tensor | int | None = None, *, teacher_logits: torch.Tensor | None = None,
                 divergence: Divergence = "forward_kl", topk_mode: TopkMode = "renorm",
                 beta: float = 0.5, token_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """α·CE + (1−α)·τ²·D(teacher, student), each averaged over `num_items` valid tokens.

    student_logits: (B, T, V); labels: (B, T). The teacher is either its stored top-k (topk_ids,
    topk_logprobs: (B, T, k), see `topk_log_probs` for `topk_mode`) or full-vocabulary `teacher_logits`
    (B, T, V). D is `divergence` (see `token_divergence`; `beta` is the JSD's). CE is at τ = 1. alpha=1 is
    plain SFT (no teacher needed). `num_items` defaults to this batch's count of valid labels.
    token_weights: (B, T) weights of each token's CE term (alpha 1 only; no gradient): with w_t = log p(x_t) −
    log q(x_t) on the student's own samples x_t, Σ w_t·CE_t has the gradient of the sampled reverse KL
    (on-policy distillation's per-token advantage, on_policy.py).
    Returns {"loss", "ce", "kd"} as scalars (kd is 0 when alpha == 1; kd is not multiplied by τ²).
    """
    _check_teacher(alpha, topk_ids is not None and topk_logprobs is not None, teacher_logits is not None)
    n = (labels != IGNORE).sum() if num_items is None else num_items
    n = torch.as_tensor(n, device=student_logits.device).clamp(min=1)
    ce, kd = _loss_sums(student_logits, labels, alpha, temperature, divergence, beta, topk_mode, topk_ids,
                        topk_logprobs, teacher_logits, token_weights)
    ce, kd = ce / n, kd / n
    if alpha >= 1.0:
        return {"loss": ce, "ce": ce, "kd": kd}
    return {"loss": alpha * ce + (1 - alpha) * temperature**2 * kd, "ce": ce, "kd": kd}


# Given a slice of the valid rows and the student's logits for them (n, V), returns (Σ CE, Σ KD).
ChunkSums = Callable[[slice, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _chunk_pass(h: torch.Tensor, w: torch.Tensor, sums: ChunkSums, chunk_size: int, coef_ce: torch.Tensor,
                coef_kd: torch.Tensor, need_grad_h: bool, need_grad_w: bool):
    """Loss sums over row chunks of h (N, H) through the head w (V, H), and the gradients of
    coef_ce·CE + coef_kd·KD w.r.t. h and w that are asked for (None otherwise), built chunk by chunk so
    only one chunk's logits ever live. Returns (Σ CE, Σ KD, grad_h, grad_w)."""
    ce = torch.zeros((), device=h.device)
    kd = torch.zeros((), device=h.device)
    grad_h = torch.empty_like(h) if need_grad_h else None
    # A frozen head (LoRA) needs no (V, H) gradient, which saves a third of the head's matmuls.
    grad_w = torch.zeros_like(w, dtype=torch.promote_types(w.dtype, torch.float32)) if need_grad_w else None
    for start in range(0, h.shape[0], chunk_size):
        c, k = _chunk_step(h, w, slice(start, start + chunk_size), sums, coef_ce, coef_kd, grad_h, grad_w)
        ce, kd = ce + c, kd + k
    return ce, kd, grad_h, grad_w


def _chunk_step(h: torch.Tensor, w: torch.Tensor, s: slice, sums: ChunkSums, coef_ce: torch.Tensor,
                coef_kd: torch.Tensor, grad_h: torch.Tensor | None, grad_w: torch.Tensor | None):
    """One chunk's (Σ CE, Σ KD), its gradient written into grad_h[s] and added to grad_w (where given).
    A function of its own so that every (chunk, V) tensor is freed on return, before the next chunk."""
    logits = upcast(h[s] @ w.t())
    if grad_h is None and grad_w is None:
        return sums(s, logits)
    with torch.enable_grad():
        logits.requires_grad_()
        c, k = sums(s, logits)
        (g,) = torch.autograd.grad(coef_ce * c + coef_kd * k, logits)
    del logits  # one (chunk, V) tensor fewer during the two matmuls below
    g = g.to(w.dtype)
    if grad_h is not None:
        grad_h[s] = g @ w
    if grad_w is not None and grad_w.dtype == w.dtype:
        grad_w.addmm_(g.t(), h[s])  # in place: no (V, H) temporary per chunk
    elif grad_w is not None:
        grad_w += g.t() @ h[s]  # low-precision head: accumulate the chunks in fp32
    return c.detach(), k.detach()


class _ChunkedHeadLoss(torch.autograd.Function):
    """loss = coef_ce·CE + coef_kd·KD through the LM head, with its gradients computed during the forward
    (as in Liger's fused linear cross-entropy): no chunk is recomputed and backward only rescales them."""

    @staticmethod
    def forward(ctx, h, w, sums, chunk_size, coef_ce, coef_kd):
        ce, kd, grad_h, grad_w = _chunk_pass(h, w, sums, chunk_size, coef_ce, coef_kd, h.requires_grad,
                                             w.requires_grad)
        # Kept on ctx rather than saved for backward, so that backward can scale them in place and hand them
        # over: no second (V, H) head gradient, which at small T would cost as much as the logits saved.
        ctx.grads = (grad_h, grad_w)
        ctx.w_dtype = w.dtype
        ctx.mark_non_differentiable(ce, kd)
        return coef_ce * ce + coef_kd * kd, ce, kd

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_kd):
        if ctx.grads is None:
            raise RuntimeError("chunked_distill_loss supports a single backward pass (no retain_graph reuse)")
        grad_h, grad_w = ctx.grads
        ctx.grads = None
        grad_h = None if grad_h is None else grad_h.mul_(grad_loss.to(grad_h.dtype))
        grad_w = None if grad_w is None else grad_w.mul_(grad_loss).to(ctx.w_dtype)
        return grad_h, grad_w, None, None, None, None


def chunked_distill_loss(hidden: torch.Tensor, lm_head_weight: torch.Tensor, labels: torch.Tensor,
                         topk_ids: torch.Tensor | None = None, topk_logprobs: torch.Tensor | None = None, *,
                         teacher_logits: torch.Tensor | None = None, teacher_hidden: torch.Tensor | None = None,
                         teacher_lm_head_weight: torch.Tensor | None = None, alpha: float = 1.0,
                         temperature: float = 1.0, divergence: Divergence = "forward_kl",
                         topk_mode: TopkMode = "renorm", beta: float = 0.5, num_items: torch.Tensor | int | None = None,
                         chunk_size: int = 256, token_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`distill_loss` computed from the student's final hidden states, `chunk_size` valid tokens at a time.

    hidden: (B, T, H) final hidden states (already shifted like labels); lm_head_weight: (V, H), the
    bias-free LM head, so student logits = hidden @ lm_head_weight.T; labels: (B, T). Only the N valid
    rows go through the head, and never more than chunk_size × V logits exist at once, in the forward or
    the backward. Gradients flow to hidden and lm_head_weight (computed during the forward, so the
    backward is cheap and nothing is recomputed). The teacher, as in `distill_loss`, is either its stored
    top-k (topk_ids, topk_logprobs: (B, T, k)) or full-vocabulary: `teacher_logits` (B, T, V), read a
    chunk of rows at a time, or `teacher_hidden` (B, T, H_t) with `teacher_lm_head_weight` (V, H_t),
    projected a chunk at a time without gradient. token_weights: (B, T), as in `distill_loss`. Returns
    {"loss", "ce", "kd"}, normalised by num_items and equal to distill_loss on the full logits; "ce" and "kd"
    carry no gradient. Peak memory is a few chunk_size × V fp32 tensors plus a (V, H) fp32 head gradient
    (scripts/bench_losses.py measures it).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if (teacher_hidden is None) != (teacher_lm_head_weight is None):
        raise ValueError("teacher_hidden and teacher_lm_head_weight go together")
    has_full = teacher_logits is not None or teacher_hidden is not None
    _check_teacher(alpha, topk_ids is not None and topk_logprobs is not None, has_full)
    if teacher_logits is not None and teacher_hidden is not None:
        raise ValueError("give teacher_logits or teacher_hidden, not both")
    rows = (labels != IGNORE).nonzero(as_tuple=True)  # (N,), (N,): indexing by them copies no (B, T, V) tensor
    n = torch.as_tensor(rows[0].numel() if num_items is None else num_items, device=hidden.device).clamp(min=1)

    def sums(s: slice, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = (rows[0][s], rows[1][s])
        t_logits = None
        if alpha < 1.0 and has_full:
            with torch.no_grad():
                t_logits = teacher_logits[r] if teacher_logits is not None else \
                    teacher_hidden[r] @ teacher_lm_head_weight.t()
        kd_topk = alpha < 1.0 and not has_full
        return _loss_sums(logits, labels[r], alpha, temperature, divergence, beta, topk_mode,
                          topk_ids[r] if kd_topk else None, topk_logprobs[r] if kd_topk else None, t_logits,
                          token_weights[r] if token_weights is not None else None)

    h = hidden[rows]  # (N, H)
    coef_ce = alpha / n
    coef_kd = (1 - alpha) * temperature**2 / n if alpha < 1.0 else torch.zeros_like(coef_ce)
    if torch.is_grad_enabled() and (hidden.requires_grad or lm_head_weight.requires_grad):
        loss, ce, kd = _ChunkedHeadLoss.apply(h, lm_head_weight, sums, chunk_size, coef_ce, coef_kd)
    else:
        with torch.no_grad():
            ce, kd, _, _ = _chunk_pass(h, lm_head_weight, sums, chunk_size, coef_ce, coef_kd, False, False)
        loss = coef_ce * ce + coef_kd * kd
    return {"loss": loss, "ce": ce / n, "kd": kd / n}
