"""Cross-tokenizer KD, the batches: the groups of align.py for every row of a batch, and the teacher's side of
them (from its stored top-k, or from its forward pass over its own tokens), as the tensors the loss (loss.py)
reads.
"""

from __future__ import annotations

import numpy as np
import torch

from r1distill.train.collate import DistillCollator
from r1distill.train.xtok.align import align


def teacher_groups(topk_ids: torch.Tensor, topk_lp: torch.Tensor, token_lp: torch.Tensor, t_group: torch.Tensor,
                   t_base: torch.Tensor, shared: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The teacher's side of every group, from its per-token arrays (stored or computed online).

    topk_ids, topk_lp: (M, k) over the batch's teacher completion tokens; token_lp: (M,) the emitted tokens'
    log-probs; t_group: (M,) group id in the batch (−1: none); t_base: (G,) index of each group's base token;
    shared: (V_t,) `vocab.shared_tokens` as a tensor (None: no exact term). Returns t_topk_lp (G, k) (invalid entries
    −inf), t_mapped (G, k) the student ids of shared entries (−1 otherwise), t_rest (G,) Σ log-probs of the
    group's other emitted tokens, t_chunk (G,) Σ over all of them, g_valid (G,) whether all were finite and the
    base has a valid top-k entry."""
    G = t_base.shape[0]
    ids, lp = topk_ids[t_base].long(), topk_lp[t_base].float()
    ok = (ids >= 0) & torch.isfinite(lp)
    lp = torch.where(ok, lp, -torch.inf)
    member = t_group >= 0
    emitted = token_lp.double()
    finite = torch.isfinite(emitted)
    dev = ids.device
    chunk = torch.zeros(G, dtype=torch.float64, device=dev).index_add_(0, t_group[member],
                                                                       torch.where(finite, emitted, 0.0)[member])
    bad = torch.zeros(G, dtype=torch.long, device=dev).index_add_(0, t_group[member], (~finite[member]).long())
    mapped = shared.to(dev)[ids.clamp_min(0)] if shared is not None else torch.full_like(ids, -1)
    return {"t_topk_lp": lp, "t_mapped": torch.where(ok, mapped, -1), "t_chunk": chunk.float(),
            "t_rest": (chunk - torch.where(finite[t_base], emitted[t_base], 0.0)).float(),
            "g_valid": (bad == 0) & ok.any(-1)}


class XtokCollator:
    """Batches for cross-tokenizer KD: the student's (DistillCollator: input_ids, attention_mask, labels) plus
    `xtok`, the groups of every row and the teacher's side of them (`teacher_groups`).

    Rows (data.TokenData, xtok cache) hold the student's `s_nbytes`/`s_ok` and the teacher's `t_nbytes`/`t_ok`,
    and either its stored `t_topk_ids`/`t_topk_lp`/`t_lp` (offline) or its own tokens `t_input_ids` and
    `t_prompt_len` (online: `xtok["online"]` then holds what `online_teacher` needs, and the teacher's side is
    filled in after its forward pass). Rows whose bytes did not round-trip on either side get no KD term; a
    student completion cut by max_length keeps the groups that end before the cut.
    xtok: s_group (N,) over the valid label positions in row-major order, s_base (G,), and the teacher_groups
    fields (offline)."""

    def __init__(self, pad_token_id: int, rows, merge: str = "first", shared: np.ndarray | None = None,
                 topk: int | None = None, teacher_pad: int | None = None):
        self.base = DistillCollator(pad_token_id)
        self.rows, self.merge, self.topk = rows, merge, topk
        self.shared = torch.as_tensor(shared) if shared is not None else None
        self.teacher_pad = teacher_pad

    def __call__(self, features: list[dict]) -> dict:
        feats = [self.rows.row(int(f["idx"])) for f in features]
        batch = self.base([{"input_ids": f["input_ids"], "prompt_len": f["prompt_len"]} for f in feats])
        s_group, s_base, t_group, t_base, t_rows = [], [], [], [], []
        n_s = n_t = G = 0
        for f in feats:
            c = len(f["input_ids"]) - f["prompt_len"]  # completion tokens kept after max_length
            tw = np.asarray(f["t_nbytes"])
            sg, tg = np.full(c, -1, np.int64), np.full(len(tw), -1, np.int64)
            if f["s_ok"] and f["t_ok"]:
                a = align(tw, f["s_nbytes"], self.merge)
                cut = np.unique(a.s_group[c:])  # groups that reach past the cut
                keep = np.flatnonzero(~np.isin(np.arange(a.num_groups), cut))
                new = np.full(a.num_groups + 1, -1, np.int64)
                new[keep] = G + np.arange(len(keep))
                sg, tg = new[a.s_group[:c]], new[a.t_group]
                s_base.append(n_s + a.s_base[keep])
                t_base.append(n_t + a.t_base[keep])
                G += len(keep)
            s_group.append(sg)
            t_group.append(tg)
            t_rows.append(f)
            n_s, n_t = n_s + c, n_t + len(tw)
        cat = lambda xs: torch.as_tensor(np.concatenate(xs) if xs else np.zeros(0, np.int64))  # noqa: E731
        xt = {"s_group": cat(s_group), "s_base": cat(s_base)}
        structure = {"t_group": cat(t_group), "t_base": cat(t_base)}
        if "t_topk_ids" in feats[0]:
            k = self.topk or feats[0]["t_topk_ids"].shape[-1]
            ids = torch.as_tensor(np.concatenate([f["t_topk_ids"][:, :k] for f in feats]).astype(np.int64))
            lps = torch.as_tensor(np.concatenate([f["t_topk_lp"][:, :k] for f in feats]).astype(np.float32))
            lp = torch.as_tensor(np.concatenate([f["t_lp"] for f in feats]).astype(np.float32))
            xt.update(teacher_groups(ids, lps, lp, structure["t_group"], structure["t_base"], self.shared))
        else:
            xt["online"] = {**structure, **self._teacher_inputs(feats)}
        batch["xtok"] = xt
        return batch

    def _teacher_inputs(self, feats: list[dict]) -> dict:
        """The teacher's own tokens (right-padded), and for each of its completion tokens the flat index of the
        position that predicts it in the (B, L−1) shifted frame, and its id."""
        L = max(len(f["t_input_ids"]) for f in feats)
        ids = torch.full((len(feats), L), self.teacher_pad, dtype=torch.long)
        mask = torch.zeros((len(feats), L), dtype=torch.long)
        pos, emitted = [], []
        for b, f in enumerate(feats):
            x = np.asarray(f["t_input_ids"], dtype=np.int64)
            ids[b, :len(x)], mask[b, :len(x)] = torch.as_tensor(x), 1
            p = int(f["t_prompt_len"])
            pos.append(b * (L - 1) + np.arange(p - 1, len(x) - 1))
            emitted.append(x[p:])
        return {"input_ids": ids, "attention_mask": mask, "pos": torch.as_tensor(np.concatenate(pos)),
                "ids": torch.as_tensor(np.concatenate(emitted))}


@torch.no_grad()
def online_teacher(teacher, head: torch.Tensor, online: dict, k: int, chunk_size: int,
                   shared: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """kd_online with another tokenizer: the teacher's forward pass over its own tokens (`XtokCollator`'s
    `online`), its top-k (k = 0: the whole vocabulary) and emitted log-probs at its completion tokens, computed
    `chunk_size` tokens at a time through `head` (V_t, H_t, logit scale applied by the caller's head), then
    `teacher_groups`: the same tensors the stored top-k gives offline."""
    from r1distill.train.head import head_scale, last_hidden

    dev = head.device
    hidden = last_hidden(teacher, online["input_ids"].to(dev), online["attention_mask"].to(dev))  # (B, L−1, H)
    rows = hidden.reshape(-1, hidden.shape[-1])[online["pos"].to(dev)] * head_scale(teacher.config)  # (M, H)
    emitted = online["ids"].to(dev)
    kk = k or head.shape[0]
    ids, lps, lp = [], [], []
    for s in range(0, rows.shape[0], max(chunk_size, 1)):
        logp = torch.log_softmax((rows[s:s + chunk_size] @ head.t()).float(), -1)
        v, i = logp.topk(kk, -1)
        ids.append(i)
        lps.append(v)
        lp.append(logp.gather(-1, emitted[s:s + chunk_size, None]).squeeze(-1))
    cat = lambda xs, shape: torch.cat(xs) if xs else torch.zeros(shape, device=dev)  # noqa: E731
    return teacher_groups(cat(ids, (0, kk)).long(), cat(lps, (0, kk)), cat(lp, (0,)), online["t_group"].to(dev),
                          online["t_base"].to(dev), shared)

