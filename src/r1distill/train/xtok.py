"""Cross-tokenizer KD, the alignment: byte-span groups between the teacher's and the student's tokens of one
completion, the tokens the two vocabularies share, and the batch tensors the loss (xtok_loss.py) reads.

Spans: token t of a side covers bytes [sum(w[:t]), sum(w[:t+1])) of the completion, w its tokens' byte counts
(r1distill.tokenbytes: the teacher's from the trace's `token_nbytes`, the student's from its own tokens).

Groups: a group is a stretch of bytes that both sides' tokens start and end on and that no smaller such stretch
divides, i.e. it ends at the next byte where both sides have a token boundary (TRL GOLD's two pointers, here the
common boundaries of the two cumulative sums). Every token with bytes belongs to exactly one group on its side.
A zero-byte token (a special token a decoded text leaves out) joins the group before it (the one after it when
it leads) as one more factor of that group's probability; the trailing ones of both sides (the eos the teacher
emitted and the eos the student learns to emit) form a last group of their own when both sides have them, where
both distributions describe the same place: the end of the text.

Each group has a base position per side, whose whole distribution the loss uses: its first token with bytes
(merge "first") or its last one ("last"); the group's other tokens enter by the probability of the token emitted
there. With one tokenizer on both sides every group is one token to one token.

Shared tokens (gold's exact term): ids of the two vocabularies with identical bytes (where the student has
several ids for the same bytes, the one its tokenizer writes: `shared_ids`), plus every teacher stop token to the
student's eos. A shared token means the same event on both sides only when neither vocabulary can extend it
where the other cannot: with a teacher that writes every digit as a token and a student that has tokens of up to
three digits, the teacher's p("1") holds "12" and "123" too while the student's "1" is almost never its way of
starting "123", so matching them pushes the student to spell numbers digit by digit (the multi-digit numeral
risk). `shared_tokens` rule "runs" drops digit and whitespace runs that a token of only one vocabulary extends
with the same kind of byte; "prefix_closed" drops every shared token that a token of only one vocabulary
extends; "all" keeps them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from r1distill.tokenbytes import token_bytes, token_kinds
from r1distill.train.collate import DistillCollator

DIGITS = frozenset(b"0123456789")
SPACES = frozenset(b" \t\n\r")


@dataclass
class Alignment:
    """One completion's groups: group id of every token (−1: none), and each group's base position."""

    t_group: np.ndarray  # (n,) int64, teacher tokens
    s_group: np.ndarray  # (m,) int64, student tokens
    t_base: np.ndarray  # (G,) int64, index of the teacher base token of each group
    s_base: np.ndarray  # (G,) int64

    @property
    def num_groups(self) -> int:
        return len(self.t_base)


def _assign(widths: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group of each token, index of the first token after the last one with bytes)."""
    n = len(widths)
    ends = np.cumsum(widths)
    full = widths > 0
    group = np.full(n, -1, dtype=np.int64)
    group[full] = np.searchsorted(bounds, ends[full], side="left")
    if not full.any():
        return group, 0
    idx = np.arange(n)
    prev = np.maximum.accumulate(np.where(full, idx, -1))  # the last token with bytes at or before each
    nxt = np.minimum.accumulate(np.where(full, idx, n)[::-1])[::-1]  # the first one at or after
    owner = np.where(prev >= 0, prev, nxt)
    group[~full] = group[owner[~full]]
    return group, int(np.flatnonzero(full)[-1]) + 1


def _bases(group: np.ndarray, widths: np.ndarray, G: int, merge: str) -> np.ndarray:
    idx = np.flatnonzero((widths > 0) & (group >= 0))
    if merge == "last":
        idx = idx[::-1]
    base = np.full(G, -1, dtype=np.int64)
    g, first = np.unique(group[idx], return_index=True)
    base[g] = idx[first]
    return base


def align(t_widths, s_widths, merge: str = "first") -> Alignment:
    """The groups of two tokenizations of one text, given each token's byte count (both must sum to the same
    number of bytes: `tokenbytes.spans` checked it). merge: which token of a group is its base."""
    tw, sw = np.asarray(t_widths, np.int64), np.asarray(s_widths, np.int64)
    if tw.sum() != sw.sum():
        raise ValueError(f"the two tokenizations cover {tw.sum()} and {sw.sum()} bytes")
    bounds = np.intersect1d(np.cumsum(tw)[tw > 0], np.cumsum(sw)[sw > 0])  # bytes where both sides have a boundary
    G = len(bounds)
    t_group, t_tail = _assign(tw, bounds)
    s_group, s_tail = _assign(sw, bounds)
    t_base, s_base = _bases(t_group, tw, G, merge), _bases(s_group, sw, G, merge)
    if t_tail < len(tw) and s_tail < len(sw):  # both end in zero-byte tokens (eos): a group of their own
        t_group[t_tail:], s_group[s_tail:] = G, G
        t_base, s_base = np.append(t_base, t_tail), np.append(s_base, s_tail)
    return Alignment(t_group, s_group, t_base, s_base)


# The special tokens that end a turn or a text in the chat conventions we know (ChatML, Llama-3, Gemma, Llama-2,
# Phi-3, DeepSeek, gpt-oss): where the teacher puts mass on any of them it says "stop here", which for the student
# is its own eos, the token its training rows end with (xtok_data).
END_MARKERS = frozenset({"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<eos>",
                         "</s>", "<|end|>", "<｜end▁of▁sentence｜>", "<|return|>"})


def stop_ids(tokenizer) -> list[int]:
    """The tokenizer's eos and every special token of END_MARKERS it has."""
    ids = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special and t.content in END_MARKERS}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def shared_tokens(teacher_tok, student_tok, rule: str = "runs") -> np.ndarray:
    """(V_teacher,) int64: the student id with the same bytes as each teacher id (−1: none), every teacher stop
    token -> the student's eos; `rule` leaves out shared tokens whose meaning differs between the vocabularies
    (module doc)."""
    return shared_ids(token_bytes(teacher_tok, "empty"), token_bytes(student_tok, "empty"), stop_ids(teacher_tok),
                      student_tok.eos_token_id, rule, token_kinds(student_tok))


def shared_ids(t_bytes: list[bytes], s_bytes: list[bytes], t_stops: int | Iterable[int] | None, s_eos: int | None,
               rule: str = "runs", s_kinds: np.ndarray | None = None) -> np.ndarray:
    """`shared_tokens` on the two vocabularies' byte tables (empty entries: special tokens, never shared).

    Where several student ids have the same bytes, the teacher's id maps to the one the student's tokenizer
    emits for them: by `s_kinds` (tokenbytes.token_kinds) an added token before an ordinary piece before a
    byte-fallback token ("5" and "<0x35>" are both b"5" in a SentencePiece vocabulary, and the student only ever
    writes "5"), then the lowest id."""
    rank = s_kinds if s_kinds is not None else np.zeros(len(s_bytes), np.int8)
    s_index: dict[bytes, int] = {}
    for i, b in enumerate(s_bytes):
        if b and ((j := s_index.get(b)) is None or rank[i] < rank[j]):
            s_index[b] = i
    only_one = {b for b in t_bytes if b} ^ set(s_index)  # tokens of exactly one vocabulary
    unsafe: set[bytes] = set()
    for u in only_one if rule != "all" else ():
        if rule == "prefix_closed" or set(u) <= DIGITS or set(u) <= SPACES:
            unsafe.update(u[:i] for i in range(1, len(u)))
    out = np.full(len(t_bytes), -1, dtype=np.int64)
    for i, b in enumerate(t_bytes):
        if b and b not in unsafe and (j := s_index.get(b)) is not None:
            out[i] = j
    if s_eos is not None:
        stops = [t_stops] if isinstance(t_stops, int) else list(t_stops or ())
        out[[t for t in stops if 0 <= t < len(out)]] = s_eos
    return out


def teacher_groups(topk_ids: torch.Tensor, topk_lp: torch.Tensor, token_lp: torch.Tensor, t_group: torch.Tensor,
                   t_base: torch.Tensor, shared: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The teacher's side of every group, from its per-token arrays (stored or computed online).

    topk_ids, topk_lp: (M, k) over the batch's teacher completion tokens; token_lp: (M,) the emitted tokens'
    log-probs; t_group: (M,) group id in the batch (−1: none); t_base: (G,) index of each group's base token;
    shared: (V_t,) `shared_tokens` as a tensor (None: no exact term). Returns t_topk_lp (G, k) (invalid entries
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

