"""Cross-tokenizer KD, the alignment: byte-span groups between the teacher's and the student's tokens of one
completion. The tokens the two vocabularies share are in vocab.py, the batch tensors the loss (loss.py) reads in
collate.py.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

