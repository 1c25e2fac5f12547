"""Reference cross-tokenizer KD for the tests, written apart from train/xtok/ (align.py, loss.py): groups by
TRL GOLD's two pointers over byte end offsets (plus the zero-byte rules of the spec), merged distributions as
explicit products of full probability vectors, ULD's sorted L1 with zero padding (TRL's `_compute_distillation_loss`
without top-k), the exact-token divergence over every shared pair, and ALM's Bernoulli KL. One row at a time,
float64, Python loops: slow and plain."""

from __future__ import annotations

import math

import torch


def groups(t_widths: list[int], s_widths: list[int]) -> list[tuple[list[int], list[int]]]:
    """[(teacher token indices, student token indices)] in text order."""
    def ends(widths):
        out, at = [], 0
        for w in widths:
            at += w
            out.append(at)
        return out

    te, se = ends(t_widths), ends(s_widths)
    tn = [i for i, w in enumerate(t_widths) if w > 0]
    sn = [i for i, w in enumerate(s_widths) if w > 0]
    pairs, a, b, ga, gb = [], 0, 0, [], []
    while a < len(tn) and b < len(sn):  # TRL's _align_by_byte_offsets on the tokens that have bytes
        x, y = te[tn[a]], se[sn[b]]
        if x < y:
            ga.append(tn[a])
            a += 1
        elif x > y:
            gb.append(sn[b])
            b += 1
        else:
            ga.append(tn[a])
            gb.append(sn[b])
            a, b = a + 1, b + 1
            pairs.append((ga, gb))
            ga, gb = [], []
    assert a == len(tn) and b == len(sn) and not ga and not gb

    def attach(widths, side):
        full = [i for i, w in enumerate(widths) if w > 0]
        where = {i: g for g, pair in enumerate(pairs) for i in pair[side]}
        trailing = [i for i in range(len(widths)) if widths[i] == 0 and (not full or i > full[-1])]
        for i, w in enumerate(widths):
            if w == 0 and i not in trailing:
                before = [j for j in full if j < i]
                where[i] = where[before[-1]] if before else where[min(j for j in full if j > i)]
        return where, trailing

    tw, tt = attach(t_widths, 0)
    sw, st = attach(s_widths, 1)
    out = [([i for i in sorted(tw) if tw[i] == g], [i for i in sorted(sw) if sw[i] == g]) for g in range(len(pairs))]
    if tt and st:
        out.append((tt, st))
    else:  # one side's trailing zero-byte tokens are factors of the last group
        for i in tt:
            out[-1][0].append(i)
        for i in st:
            out[-1][1].append(i)
    return out


def _merged(probs: torch.Tensor, emitted: list[int], idx: list[int], widths: list[int], merge: str):
    """(the group's base distribution (V,), the product of the other positions' emitted probabilities)."""
    full = [i for i in idx if widths[i] > 0] or idx
    base = full[0] if merge == "first" else full[-1]
    factor = 1.0
    for i in idx:
        if i != base:
            factor = factor * probs[i, emitted[i]]
    return probs[base], factor


def _sorted_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n = max(a.numel(), b.numel())
    a = torch.nn.functional.pad(a.sort(descending=True).values, (0, n - a.numel()))
    b = torch.nn.functional.pad(b.sort(descending=True).values, (0, n - b.numel()))
    return (a - b).abs().sum()


def _kl_bernoulli(lt: torch.Tensor, ls: torch.Tensor, tau: float) -> torch.Tensor:
    pt, ps = torch.exp(lt / tau), torch.exp(ls / tau)
    return pt * torch.log(pt / ps) + (1 - pt) * torch.log((1 - pt) / (1 - ps))


def row_kd(t_logprobs, t_ids, t_widths, s_logprobs, s_ids, s_widths, method="gold", merge="first",
           shared: dict[int, int] | None = None, exact_weight=1.0, alm_weight=0.0, alm_temperature=1.0,
           divergence="forward_kl"):
    """Σ over one row's groups of the KD terms. t_logprobs (n, V_t) / s_logprobs (m, V_s): each position's full
    log-probs; t_ids / s_ids the emitted tokens; shared: teacher id -> student id."""
    tp, sp = t_logprobs.double().exp(), s_logprobs.double().exp()
    shared = shared or {}
    total = torch.zeros((), dtype=torch.float64)
    for ti, si in groups(t_widths, s_widths):
        pt, ct = _merged(tp, t_ids, ti, t_widths, merge)
        ps, cs = _merged(sp, s_ids, si, s_widths, merge)
        if method in ("uld", "gold"):
            if method == "uld":
                total = total + _sorted_l1(ps * cs, pt * ct)
            else:
                a = sorted(shared)
                t_keep = torch.tensor([i for i in range(pt.numel()) if i not in shared])
                s_keep = torch.tensor([j for j in range(ps.numel()) if j not in {shared[i] for i in a}])
                total = total + _sorted_l1(ps[s_keep] * cs, pt[t_keep] * ct)
                if a and exact_weight:
                    p = torch.cat([pt[a], (1 - pt[a].sum()).clamp_min(1e-6)[None]])
                    qa = ps[[shared[i] for i in a]]
                    q = torch.cat([qa, (1 - qa.sum()).clamp_min(1e-6)[None]])
                    assert divergence == "forward_kl"
                    total = total + exact_weight * torch.where(p > 0, p * (p.log() - q.log()), 0.0).sum()
        if method == "alm" or alm_weight:
            lt = sum(math.log(float(tp[i, t_ids[i]])) for i in ti)
            ls = sum(torch.log(sp[i, s_ids[i]]) for i in si)
            total = total + (1.0 if method == "alm" else alm_weight) * _kl_bernoulli(
                torch.tensor(lt, dtype=torch.float64), ls, alm_temperature)
    return total
