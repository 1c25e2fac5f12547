"""Cross-tokenizer KD, the tokens the two vocabularies share (the groups they are compared in: align.py).

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

import numpy as np

from r1distill.tokenbytes import token_bytes, token_kinds

DIGITS = frozenset(b"0123456789")
SPACES = frozenset(b" \t\n\r")

# The special tokens that end a turn or a text in the chat conventions we know (ChatML, Llama-3, Gemma, Llama-2,
# Phi-3, DeepSeek, gpt-oss): where the teacher puts mass on any of them it says "stop here", which for the student
# is its own eos, the token its training rows end with (data.py).
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
