"""Cross-tokenizer KD, the math: pure functions on the groups of align.py (see there for what a group is).

Shapes: N valid student label positions (row-major, as `(labels != -100).nonzero()` orders them), V the student's
vocabulary, H its hidden size, G groups, k the teacher's entries per token, K = min(k, V). Per group g, from the
student: its base position's log-probs log q(·) and the log-probs of the tokens it emitted at the group's other
positions, whose sum is log C_s; from the teacher (`collate.teacher_groups`): its base position's top-k log-probs,
log C_t (the same sum over its other tokens), and the group's whole log-likelihood. The merged distribution of a
group is the base distribution times C (GOLD's merge: exact for the emitted continuation, the others' continuations
taken as the emitted one's). Terms per group (config.XtokOptions picks and weighs them):

  sorted  Σ_r |S_r − T_r| + |S_tail − T_tail|: S the student's K most likely merged probabilities in order, T the
          teacher's k stored ones (zero-padded to one width), each tail the merged mass outside them
          (C·(1 − Σ)). ULD's Wasserstein-1 between sorted distributions, with the teacher's unknown tail as one
          bucket on each side, a lower bound of the full sum over ranks beyond k; exact at k = V.
          gold: over the tokens outside the shared entries of the teacher's top-k (the student's K exclude their
          ids; what the teacher left out of its top-k, shared or not, stays in its tail).
  exact   gold: D(p ‖ q) (train.loss.divergence, beta) over the shared entries of the teacher's top-k and one
          bucket for everything else, at both sides' base (first) positions, each side's own distribution there
          (no merge factors: both describe which token starts at the group's first byte).
  alm     ALM's chunk term: KL between Bernoulli(exp(ℓ_t/τ)) and Bernoulli(exp(ℓ_s/τ)), ℓ the two sides'
          log-likelihoods of the group's bytes (Σ of the emitted tokens' log-probs), τ alm_temperature.

kd = Σ over valid groups of the weighted terms; loss = α·CE + (1 − α)·kd, both sums divided by `num_items` (the
student's valid tokens, all ranks, accumulated), as the same-tokenizer loss is. `xtok_loss` works on full logits;
`chunked_xtok_loss` on hidden states, a chunk of rows through the head at a time: a first pass without gradient
collects the few numbers per row the terms need, the terms and their gradients w.r.t. those numbers are computed
on them, and a second pass recomputes each chunk's logits to push those gradients through the head, so no more
than chunk_size × V logits live at once (the price: the head's forward matmul twice; the second pass needs no
autograd: each per-row number is one log-prob, so its gradient is a scatter minus the softmax times their sum).
"""

from __future__ import annotations

import math

import torch

from r1distill.train.losses import IGNORE, TAIL_FLOOR, UNMAPPED, token_divergence, upcast


def reduce_rows(log_q: torch.Tensor, labels: torch.Tensor, base: torch.Tensor, mapped: torch.Tensor | None, K: int,
            exclude: bool, index: bool = False):
    """Per-row numbers: (log q of each row's label (n,), the base rows' K best log-probs (g, K), their log-probs
    at the shared ids (g, k) or None), and with `index` the ids of the K best (g, K). base: (g,) row indices in
    log_q; exclude: leave the shared ids out of the K best (gold)."""
    lab = log_q.gather(-1, labels[:, None]).squeeze(-1)
    lq = log_q[base]  # (g, V), a copy
    at = None
    if mapped is not None:
        ids = mapped.clamp_min(0)
        at = lq.gather(-1, ids)
        if exclude:  # -inf at the shared ids: written into the copy (no (g, V) mask); under autograd into another
            r, c = (mapped >= 0).nonzero(as_tuple=True)
            where, minf = (r, mapped[r, c]), torch.tensor(-torch.inf, dtype=lq.dtype, device=lq.device)
            lq = lq.index_put(where, minf) if lq.requires_grad else lq.index_put_(where, minf)
    top = lq.topk(K, dim=-1)
    return (lab, top.values, at, top.indices) if index else (lab, top.values, at)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x < 0."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def group_terms(lab: torch.Tensor, top: torch.Tensor, at: torch.Tensor | None, xt: dict, opts, divergence: str,
                beta: float) -> torch.Tensor:
    """(G,) the weighted KD terms of every group (0 for invalid ones), from the student's per-row numbers
    (`reduce_rows` over all N rows and the G base rows) and the batch's xtok tensors."""
    G = xt["s_base"].shape[0]
    member = xt["s_group"] >= 0
    s_chunk = torch.zeros(G, dtype=lab.dtype, device=lab.device).index_add(0, xt["s_group"][member], lab[member])
    s_rest = s_chunk - lab[xt["s_base"]]
    t_lp = xt["t_topk_lp"].to(lab.dtype)
    shared = xt["t_mapped"] >= 0
    gold = opts.method == "gold"
    total = torch.zeros(G, dtype=lab.dtype, device=lab.device)
    if opts.method in ("uld", "gold"):
        p = t_lp.exp()  # (G, k); invalid entries are -inf: 0
        c_t, c_s = xt["t_rest"].to(lab.dtype).exp()[:, None], s_rest.exp()[:, None]
        t_vals = (torch.where(shared, 0.0, p) if gold else p).sort(-1, descending=True).values * c_t
        t_tail = c_t * (1 - p.sum(-1, keepdim=True)).clamp_min(0)
        q = top.exp()
        q_out = q.sum(-1, keepdim=True) + (torch.where(shared, at.exp(), 0.0).sum(-1, keepdim=True) if gold else 0)
        s_vals, s_tail = q * c_s, c_s * (1 - q_out).clamp_min(0)
        width = max(s_vals.shape[-1], t_vals.shape[-1])
        s_vals = torch.nn.functional.pad(s_vals, (0, width - s_vals.shape[-1]))
        t_vals = torch.nn.functional.pad(t_vals, (0, width - t_vals.shape[-1]))
        total = total + (s_vals - t_vals).abs().sum(-1) + (s_tail - t_tail).abs().squeeze(-1)
    if gold and opts.exact_weight:
        lp_t = torch.where(shared, t_lp, UNMAPPED)
        lq_s = torch.where(shared, at, UNMAPPED)
        rest = lambda x: (1 - x.exp().sum(-1, keepdim=True)).clamp_min(TAIL_FLOOR).log()  # noqa: E731
        d = token_divergence(torch.cat([lq_s, rest(lq_s)], -1), torch.cat([lp_t, rest(lp_t)], -1), divergence, beta)
        total = total + opts.exact_weight * torch.where(shared.any(-1), d, 0.0)
    if opts.method == "alm" or opts.alm_weight:
        tau = opts.alm_temperature
        x_t = (xt["t_chunk"].to(lab.dtype) / tau).clamp_max(-1e-6)
        x_s = (s_chunk / tau).clamp_max(-1e-6)
        kl = x_t.exp() * (x_t - x_s) + (-torch.expm1(x_t)) * (_log1mexp(x_t) - _log1mexp(x_s))
        total = total + (1.0 if opts.method == "alm" else opts.alm_weight) * kl
    return torch.where(xt["g_valid"], total, 0.0)


def _sums(lab, top, at, xt, opts, divergence, beta) -> tuple[torch.Tensor, torch.Tensor]:
    return -lab.sum(), group_terms(lab, top, at, xt, opts, divergence, beta).sum()


def _mapped(xt: dict, opts) -> torch.Tensor | None:
    return xt["t_mapped"] if opts.method == "gold" else None


def _finish(ce, kd, alpha: float, n) -> dict[str, torch.Tensor]:
    return {"loss": alpha * ce / n + (1 - alpha) * kd / n, "ce": (ce / n).detach(), "kd": (kd / n).detach()}


def xtok_loss(student_logits: torch.Tensor, labels: torch.Tensor, xt: dict, opts, alpha: float = 0.5,
              divergence: str = "forward_kl", beta: float = 0.5,
              num_items: torch.Tensor | int | None = None) -> dict[str, torch.Tensor]:
    """α·CE + (1 − α)·kd from full student logits (B, T, V) and shifted labels (B, T); xt: the batch's xtok
    tensors (collate.XtokCollator, teacher side filled in). Returns {"loss", "ce", "kd"} (ce/kd without gradient)."""
    rows = (labels != IGNORE).nonzero(as_tuple=True)
    n = torch.as_tensor(rows[0].numel() if num_items is None else num_items, device=labels.device).clamp(min=1)
    log_q = torch.log_softmax(upcast(student_logits[rows]), -1)  # (N, V)
    K = min(xt["t_topk_lp"].shape[-1], log_q.shape[-1])
    lab, top, at = reduce_rows(log_q, labels[rows], xt["s_base"], _mapped(xt, opts), K, opts.method == "gold")
    ce, kd = _sums(lab, top, at, xt, opts, divergence, beta)
    return _finish(ce, kd, alpha, n)


class _ChunkedXtok(torch.autograd.Function):
    """The chunked loss through the head (module doc): gradients w.r.t. h (N, H) and w (V, H) computed in the
    forward, as losses._ChunkedHeadLoss does; the backward only scales them."""

    @staticmethod
    def forward(ctx, h, w, labels, xt, opts, alpha, divergence, beta, n, chunk_size):
        N, G = h.shape[0], xt["s_base"].shape[0]
        mapped = _mapped(xt, opts)
        K = min(xt["t_topk_lp"].shape[-1], w.shape[0])
        base = xt["s_base"]
        f32 = torch.promote_types(h.dtype, torch.float32)
        lab = torch.zeros(N, dtype=f32, device=h.device)
        top = torch.zeros(G, K, dtype=f32, device=h.device)
        at = torch.zeros(G, mapped.shape[-1], dtype=f32, device=h.device) if mapped is not None else None
        top_ids = torch.zeros(G, K, dtype=torch.long, device=h.device)
        spans = []
        need = h.requires_grad or w.requires_grad
        logits = None
        for start in range(0, N, chunk_size):
            s = slice(start, min(start + chunk_size, N))
            g0, g1 = (int(i) for i in torch.searchsorted(base, torch.tensor([s.start, s.stop], device=base.device)))
            spans.append((s, slice(g0, g1)))
            with torch.no_grad():
                logits = None  # the previous chunk's, freed before this one's matmul
                logits = upcast(h[s] @ w.t())
                r = reduce_rows(torch.log_softmax(logits, -1), labels[s], base[g0:g1] - s.start,
                            mapped[g0:g1] if mapped is not None else None, K, opts.method == "gold", index=True)
                if not need or s.stop < N:
                    logits = None
            lab[s], top[g0:g1], top_ids[g0:g1] = r[0], r[1], r[3]
            if at is not None:
                at[g0:g1] = r[2]
            del r
        leaves = [x.requires_grad_() for x in (lab, top, at) if x is not None]
        with torch.enable_grad():
            ce, kd = _sums(lab, top, at, xt, opts, divergence, beta)
            loss = alpha * ce / n + (1 - alpha) * kd / n
            grads = (torch.autograd.grad(loss, leaves, allow_unused=True)  # alm uses no top-k
                     if (h.requires_grad or w.requires_grad) else None)
        ctx.grads = None
        if grads is not None:
            held, logits = [logits], None  # handed over: _backprop frees them after their chunk
            ctx.grads = _backprop(h, w, labels, base, mapped, top_ids, spans, grads, held)
        del logits
        ctx.w_dtype = w.dtype
        ce, kd = ce.detach(), kd.detach()
        ctx.mark_non_differentiable(ce, kd)
        return (alpha * ce / n + (1 - alpha) * kd / n), ce, kd

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_kd):
        if ctx.grads is None:
            raise RuntimeError("chunked_xtok_loss supports a single backward pass")
        grad_h, grad_w = ctx.grads
        ctx.grads = None
        grad_h = None if grad_h is None else grad_h.mul_(grad_loss.to(grad_h.dtype))
        grad_w = None if grad_w is None else grad_w.mul_(grad_loss).to(ctx.w_dtype)
        return grad_h, grad_w, None, None, None, None, None, None, None, None


def _backprop(h, w, labels, base, mapped, top_ids, spans, grads, held: list | None = None):
    """The second pass: each chunk's logits again, the gradients of the per-row numbers pushed through them.
    Each number is log q at one id (the label, one of the K best found in the first pass, a shared id), so the
    gradient w.r.t. the logits is G − softmax·ΣG, G those gradients scattered at their ids (no autograd, no
    second top-k). The chunks go last to first: the last one's logits, still alive from the first pass
    (`held`: [logits] or [None], emptied here so that they die with their chunk), are not recomputed (with a
    single chunk the head's forward matmul runs once)."""
    g_lab, g_top = grads[0], grads[1]
    g_at = grads[2] if len(grads) > 2 else None
    grad_h = torch.empty_like(h) if h.requires_grad else None
    grad_w = torch.zeros_like(w, dtype=torch.promote_types(w.dtype, torch.float32)) if w.requires_grad else None
    for s, g in reversed(spans):
        logits = held.pop() if held else None
        if logits is None:
            logits = upcast(h[s] @ w.t())  # (n, V)
        n = logits.shape[0]
        gl = torch.zeros_like(logits)
        if g_lab is not None:
            gl[torch.arange(n, device=gl.device), labels[s]] = g_lab[s].to(gl.dtype)  # one label per row
        rows = (base[g] - s.start)[:, None]
        if g_top is not None:
            gl.index_put_((rows.expand_as(top_ids[g]), top_ids[g]), g_top[g].to(gl.dtype), accumulate=True)
        if g_at is not None:
            ids = mapped[g].clamp_min(0)
            gl.index_put_((rows.expand_as(ids), ids), g_at[g].to(gl.dtype), accumulate=True)
        total = gl.sum(-1, keepdim=True)
        gl -= torch.softmax(logits, -1).mul_(total)
        del logits
        gl = gl.to(w.dtype)
        if grad_h is not None:
            grad_h[s] = gl @ w
        if grad_w is not None and grad_w.dtype == w.dtype:
            grad_w.addmm_(gl.t(), h[s])  # in place: no (V, H) temporary per chunk
        elif grad_w is not None:
            grad_w += gl.t() @ h[s]  # low-precision head: accumulate the chunks in fp32
    return grad_h, grad_w


def chunked_xtok_loss(hidden: torch.Tensor, lm_head_weight: torch.Tensor, labels: torch.Tensor, xt: dict, opts,
                      alpha: float = 0.5, divergence: str = "forward_kl", beta: float = 0.5,
                      num_items: torch.Tensor | int | None = None, chunk_size: int = 256) -> dict[str, torch.Tensor]:
    """`xtok_loss` from the student's final hidden states (B, T, H), already shifted like labels (B, T), and the
    bias-free head (V, H), `chunk_size` rows at a time (module doc). Equal to xtok_loss on the full logits."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    rows = (labels != IGNORE).nonzero(as_tuple=True)
    n = torch.as_tensor(rows[0].numel() if num_items is None else num_items, device=hidden.device).clamp(min=1)
    h = hidden[rows]
    if torch.is_grad_enabled() and (hidden.requires_grad or lm_head_weight.requires_grad):
        loss, ce, kd = _ChunkedXtok.apply(h, lm_head_weight, labels[rows], xt, opts, alpha, divergence, beta, n,
                                          chunk_size)
    else:
        with torch.no_grad():
            loss, ce, kd = _ChunkedXtok.forward(_Ctx(), h, lm_head_weight, labels[rows], xt, opts, alpha, divergence,
                                                beta, n, chunk_size)
    return {"loss": loss, "ce": ce / n, "kd": kd / n}


class _Ctx:
    """A stand-in for autograd's ctx when the forward runs without a graph."""

    def mark_non_differentiable(self, *args) -> None:
        pass
