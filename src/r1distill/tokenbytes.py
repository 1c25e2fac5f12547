"""Token ids -> the UTF-8 bytes each token stands for, and where the tokens of a completion lie in its bytes.

Cross-tokenizer KD lines up two tokenizations of one completion by byte offsets. A token's span comes from the
token's own bytes (its vocabulary entry), never from re-tokenizing the text: a sampled sequence need not be the
tokenizer's own split of its text, and the teacher's log-probs describe the tokens it sampled.

How a vocabulary spells bytes:
- byte-level BPE (GPT-2, Llama-3, Qwen, SmolLM, DeepSeek): every character of a token string stands for one byte
  (GPT-2's bytes_to_unicode table), so a token may hold part of a character (emoji, CJK);
- SentencePiece (Llama-2, Gemma, Mistral): "▁" is a space, "<0xNN>" the byte NN, anything else its UTF-8;
- added tokens: their content. Special ones (eos, chat markers) are zero bytes where the text is a decoded
  completion (`decode(skip_special_tokens=True)` drops them: `specials="empty"`, the teacher's side) and their
  content where the text was tokenized (`specials="text"`, the student's side, whose eos we append ourselves).

`spans` checks that the tokens' bytes, one after another, are exactly the completion's bytes; when they are not
(a decode that cleans up spaces, a completion cut inside a character, a normaliser), the row is flagged and
cross-tokenizer KD leaves it out. SentencePiece's dummy prefix (a "▁" the decoded text drops at its start) is
the one difference it forgives, by starting the first token one byte later.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np

SPECIALS = ("empty", "text")


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the printable character standing for each byte -> the byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _special_ids(tokenizer) -> set[int]:
    return set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}


def token_bytes(tokenizer, specials: str = "empty") -> list[bytes]:
    """The bytes of every id below len(tokenizer) (cached on the tokenizer). specials: "empty" or "text" (above)."""
    if specials not in SPECIALS:
        raise ValueError(f"specials must be one of {SPECIALS}, got {specials!r}")
    attr = f"_r1distill_token_bytes_{specials}"
    cached = getattr(tokenizer, attr, None)
    if cached is not None:
        return cached
    n = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    special = _special_ids(tokenizer)
    added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
    dec = byte_decoder()
    byte_level = _byte_level(pieces, added)
    table = []
    for i, piece in enumerate(pieces):
        if i in added:
            table.append(b"" if i in special and specials == "empty" else added[i].encode())
        elif piece is None:
            table.append(b"")
        elif byte_level:
            table.append(bytes(dec[c] for c in piece))
        elif m := re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece):  # SentencePiece byte fallback
            table.append(bytes([int(m[1], 16)]))
        else:
            table.append(piece.replace("▁", " ").encode())
    setattr(tokenizer, attr, table)
    return table


# What kind of vocabulary entry an id is (`token_kinds`), in the order a tokenizer prefers them for the same bytes:
# a non-special added token is split out of the text before the model sees it, an ordinary piece is what the
# model's merges produce, a SentencePiece byte-fallback token "<0xNN>" only stands for a byte no piece covers.
ADDED, PIECE, BYTE_FALLBACK, SPECIAL = 0, 1, 2, 3


def token_kinds(tokenizer) -> np.ndarray:
    """(len(tokenizer),) int8: ADDED, PIECE, BYTE_FALLBACK or SPECIAL for every id (cached on the tokenizer)."""
    cached = getattr(tokenizer, "_r1distill_token_kinds", None)
    if cached is not None:
        return cached
    special = _special_ids(tokenizer)
    added = set(tokenizer.added_tokens_decoder)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    byte_level = _byte_level(pieces, added)
    kinds = np.full(len(pieces), PIECE, dtype=np.int8)
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            kinds[i] = SPECIAL
        elif i in added:
            kinds[i] = ADDED
        elif not byte_level and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
            kinds[i] = BYTE_FALLBACK
    tokenizer._r1distill_token_kinds = kinds
    return kinds


def _byte_level(pieces: list, added) -> bool:
    dec = byte_decoder()
    normal = [p for i, p in enumerate(pieces) if p is not None and i not in added]
    return bool(normal) and all(c in dec for p in normal for c in p)


def fingerprint(tokenizer) -> str:
    """A short hash of what every id means: its bytes and whether it is special (a teacher-tokenizer stamp)."""
    special = _special_ids(tokenizer)
    h = hashlib.sha256()
    for i, b in enumerate(token_bytes(tokenizer, "text")):
        h.update(len(b).to_bytes(4, "little") + b + (b"\x01" if i in special else b"\x00"))
    return h.hexdigest()[:16]


def spans(ids, table: list[bytes], text: str) -> tuple[np.ndarray, bool]:
    """(bytes of each token as int32 (T,), whether the tokens' bytes make exactly `text`'s UTF-8 bytes).

    Token t covers bytes [sum(w[:t]), sum(w[:t+1])) of the text. Ids outside the table count as zero bytes and
    make the row fail the check."""
    n = len(table)
    widths, ok = check_parts([table[i] if 0 <= i < n else b"" for i in ids], text)
    return widths, ok and all(0 <= i < n for i in ids)


def check_parts(parts: list[bytes], text: str) -> tuple[np.ndarray, bool]:
    """`spans` for tokens given as their bytes (what an API server returns)."""
    widths = np.fromiter((len(p) for p in parts), dtype=np.int32, count=len(parts))
    joined, want = b"".join(parts), text.encode()
    if joined == want:
        return widths, True
    nonempty = np.flatnonzero(widths)
    if joined == b" " + want and nonempty.size and parts[nonempty[0]].startswith(b" "):  # SentencePiece's prefix
        widths[nonempty[0]] -= 1
        return widths, True
    return widths, False
