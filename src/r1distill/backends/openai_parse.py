"""Reading an OpenAI-compatible server's answers for the openai backend: `TokenMap` (the tokens a server prints ->
a tokenizer's ids), `parse_choice` (one API choice -> a Completion with top-k arrays), `cut_to` and the prompt
log-probs of a scoring request (`prompt_positions`).

Pure functions of the JSON and a tokenizer, tested without a server too: apart from the backend
(`r1distill.backends.openai`), which sends the requests and whose module docstring gives the rules they follow
(how top-k entries map to ids, the appended eos, finish reasons, cut completions).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

from r1distill.backends import Completion
from r1distill.config import UserError
from r1distill.tokenbytes import byte_decoder, check_parts, token_bytes

_TOKEN_ID = re.compile(r"token_id:(-?\d+)")


# ---------------------------------------------------------------------------------------------------------------
# Token strings -> ids


class TokenMap:
    """Maps the tokens a server prints (strings, bytes, "token_id:N") to the ids of a tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        n = len(tokenizer)
        pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
        special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        normal = [p for i, p in enumerate(pieces) if p is not None and i not in special]
        dec = byte_decoder()
        byte_level = bool(normal) and all(c in dec for p in normal for c in p)
        self.by_bytes: dict[bytes, int] = {}
        self.by_raw: dict[str, int] = {}  # the vocabulary's own spelling ("Ġthe"), a last resort
        texts: dict[str, set[int]] = {}
        clean: set[int] = set()
        for i, piece in enumerate(pieces):
            if piece is None:
                continue
            self.by_raw.setdefault(piece, i)
            if i in special:  # printed as itself, or as "" by servers that skip special tokens
                for t in (piece, ""):
                    texts.setdefault(t, set()).add(i)
                continue
            if byte_level:
                b = bytes(dec[c] for c in piece)
            elif m := re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece):  # sentencepiece byte fallback
                b = bytes([int(m[1], 16)])
            elif "▁" in piece:
                b = piece.replace("▁", " ").encode()
            else:
                b = tokenizer.decode([i]).encode()
            self.by_bytes.setdefault(b, i)
            try:
                b.decode("utf-8")
                clean.add(i)
            except UnicodeDecodeError:
                pass
            for t in {b.decode("utf-8", "ignore"), b.decode("utf-8", "replace")}:
                texts.setdefault(t, set()).add(i)
        self.exact = {t: next(iter(ids)) for t, ids in texts.items() if len(ids) == 1}
        self.preferred = {}  # ambiguous string -> its one clean candidate
        for t, ids in texts.items():
            if len(ids) > 1 and len(cands := ids & clean) == 1:
                self.preferred[t] = next(iter(cands))
        self.ambiguous = {t for t, ids in texts.items() if len(ids) > 1}
        self.texts = texts
        eos = tokenizer.eos_token_id
        self.eos_id = eos if isinstance(eos, int) else None

    def lookup(self, token: str | None, raw_bytes: list[int] | None = None, resolve: bool = False) -> tuple[int, bool]:
        """(id or -1, whether the id is certain)."""
        if token is not None and (m := _TOKEN_ID.fullmatch(token)):
            return int(m[1]), True
        if raw_bytes is not None:
            i = self.by_bytes.get(bytes(raw_bytes))
            if i is not None:
                return i, True
        if token is None:
            return -1, False
        if token in self.exact:
            return self.exact[token], True
        if token in self.ambiguous:
            return (self.preferred[token], False) if resolve and token in self.preferred else (-1, False)
        if token in self.by_raw:
            return self.by_raw[token], True
        return -1, False

    def candidates(self, token: str | None) -> set[int]:
        """Every id that a server could have printed as `token`."""
        if token is None:
            return set()
        if m := _TOKEN_ID.fullmatch(token):
            return {int(m[1])}
        found = set(self.texts.get(token, ()))
        if token in self.by_raw:
            found.add(self.by_raw[token])
        return found


# ---------------------------------------------------------------------------------------------------------------
# Response parsing (pure functions of the JSON, tested without a server too)


def _entries(choice: dict, endpoint: str) -> list[dict]:
    """Per generated token: {"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}."""
    lp = choice.get("logprobs")
    if not lp:
        return []
    if endpoint == "chat":
        return list(lp.get("content") or [])
    # /completions: parallel lists, top-k as {token string: log-prob} dicts
    tops = lp.get("top_logprobs") or [None] * len(lp.get("tokens") or [])
    return [{"token": t, "logprob": v, "bytes": None,
             "top_logprobs": [{"token": a, "logprob": b, "bytes": None} for a, b in (top or {}).items()]}
            for t, v, top in zip(lp.get("tokens") or [], lp.get("token_logprobs") or [], tops)]


def _text(choice: dict, endpoint: str) -> tuple[str, bool]:
    """(completion text, whether it was rebuilt from a separate reasoning field)."""
    if endpoint == "completions":
        return choice.get("text") or "", False
    msg = choice.get("message") or {}
    content = msg.get("content") or ""
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if reasoning:
        return f"<think>\n{reasoning}\n</think>\n\n{content}", True
    return content, False


def parse_choice(choice: dict, endpoint: str, k: int, tmap: TokenMap | None, resolve: bool = False,
                 approx_tokens: int | None = None) -> Completion:
    """One API choice -> a Completion with (T, k) top-k arrays; see the openai module docstring for the mapping."""
    text, rebuilt = _text(choice, endpoint)
    finish = str(choice.get("finish_reason") or "unknown")  # as the server said (openai module docstring)
    entries = _entries(choice, endpoint)
    tokenizer = tmap.tokenizer if tmap else None
    sure: list[bool]
    if entries:
        # Sampled ids: ambiguous strings get a tentative id here, kept only if the re-tokenized text confirms it.
        looked = [tmap.lookup(e.get("token"), e.get("bytes"), resolve=True) if tmap else
                  ((int(m[1]), True) if (m := _TOKEN_ID.fullmatch(e.get("token") or "")) else (-1, False))
                  for e in entries]
        ids = [i for i, _ in looked]
        sure = [s for _, s in looked]
    elif tokenizer is not None:  # no log-probs asked for: the text re-tokenized (usually the sampled ids)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        sure = [True] * len(ids)
    else:
        ids, sure = [-1] * (approx_tokens or 0), [False] * (approx_tokens or 0)
    given = choice.get("token_ids")  # vLLM's return_token_ids: the sampled ids themselves
    if isinstance(given, list) and (not entries or len(given) == len(entries)):
        ids, sure = [int(i) for i in given], [True] * len(given)
    elif entries and tokenizer is not None and not rebuilt and not all(sure):
        # The re-tokenized text confirms the uncertain sampled ids when it has the same length, equals every
        # certain id and, at each uncertain position, is one of the tokens that print as the server's string.
        retok = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(retok) == len(ids) and all(r == i if s else r in tmap.candidates(e.get("token"))
                                          for r, i, s, e in zip(retok, ids, sure, entries)):
            ids, sure = list(retok), [True] * len(retok)
    if not resolve:
        ids = [i if s else -1 for i, s in zip(ids, sure)]
    eos = tmap.eos_id if tmap else None
    if finish == "unknown" and eos is not None and ids and ids[-1] == eos:
        finish = "stop"  # no reason given, but the server's own tokens end at eos
    if finish == "stop" and eos is not None and entries and ids[-1] == -1 and not entries[-1].get("token"):
        ids[-1] = eos  # the eos itself, printed as "" by servers that skip special tokens
    topk_ids = topk_lp = None
    unmapped = 0
    if k and ids and not entries:
        raise UserError("the server returned no log-probs although top_logprobs were asked for: use a server that "
                        "supports them, or set topk_logprobs: 0")
    if k:
        T = len(entries)
        topk_ids = np.full((T, k), -1, dtype=np.int32)
        topk_lp = np.full((T, k), -np.inf, dtype=np.float32)
        for t, e in enumerate(entries):
            tops = sorted(e.get("top_logprobs") or [], key=lambda x: -_num(x.get("logprob")))[:k]
            for j, top in enumerate(tops):
                if top.get("token") == e.get("token") and top.get("logprob") == e.get("logprob") and ids[t] >= 0:
                    i = ids[t]  # the sampled token's own entry
                elif tmap is not None:
                    i = tmap.lookup(top.get("token"), top.get("bytes"), resolve)[0]
                else:
                    i = int(m[1]) if (m := _TOKEN_ID.fullmatch(top.get("token") or "")) else -1
                if i >= 0 and i not in topk_ids[t, :j]:  # two strings resolved to one id: keep the first only
                    topk_ids[t, j], topk_lp[t, j] = i, _num(top.get("logprob"))
        if finish == "stop" and eos is not None and (not ids or ids[-1] != eos):
            # The server left out the eos step (llama-cpp-python): its distribution is unknown.
            topk_ids = np.concatenate([topk_ids, np.full((1, k), -1, np.int32)])
            topk_lp = np.concatenate([topk_lp, np.full((1, k), -np.inf, np.float32)])
        unmapped = int((topk_ids < 0).sum())
    appended = finish == "stop" and eos is not None and (not ids or ids[-1] != eos)
    if appended:
        ids = ids + [eos]
    comp = Completion(text=text, token_ids=ids, finish_reason=finish, topk_ids=topk_ids, topk_logprobs=topk_lp,
                      unmapped_tokens=unmapped)
    if entries:  # the sampled tokens' own log-probs and bytes; an appended eos: zero bytes, log-prob unknown (NaN)
        comp.token_logprobs = np.array([_num(e.get("logprob")) for e in entries] + [math.nan] * appended,
                                       dtype=np.float32)
        table = token_bytes(tokenizer) if tokenizer is not None else None
        parts = [bytes(e["bytes"]) if e.get("bytes") is not None
                 else table[i] if table is not None and 0 <= i < len(table) else (e.get("token") or "").encode()
                 for e, i in zip(entries, ids)]
        comp.token_nbytes, comp.token_bytes_ok = check_parts(parts + [b""] * appended, text)
    return comp


def _num(x) -> float:
    return float(x) if x is not None else -math.inf


def cut_to(c: Completion, limit: int, tokenizer=None) -> Completion:
    """`c` cut to its first `limit` tokens and marked "length": what a server that honoured max_tokens would have
    returned. The text is cut where the kept tokens' bytes end (exact), else where the re-tokenized text's
    `limit`-th token ends, else (no tokenizer) in proportion."""
    nbytes = c.token_nbytes[:limit] if c.token_nbytes is not None else None
    if nbytes is not None and c.token_bytes_ok:
        text = c.text.encode()[:int(nbytes.sum())].decode("utf-8", "ignore")
    elif tokenizer is not None and getattr(tokenizer, "is_fast", False):
        ends = tokenizer(c.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        text = c.text[:ends[limit - 1][1]] if len(ends) >= limit else c.text
    else:
        text = c.text[:len(c.text) * limit // max(1, len(c.token_ids))]
    topk_ids = c.topk_ids[:limit] if c.topk_ids is not None else None
    return replace(c, text=text, token_ids=c.token_ids[:limit], finish_reason="length", topk_ids=topk_ids,
                   topk_logprobs=c.topk_logprobs[:limit] if c.topk_logprobs is not None else None,
                   unmapped_tokens=int((topk_ids < 0).sum()) if topk_ids is not None else 0,
                   token_logprobs=c.token_logprobs[:limit] if c.token_logprobs is not None else None,
                   token_nbytes=nbytes,
                   token_bytes_ok=None if nbytes is None else bool(c.token_bytes_ok)
                   and len(text.encode()) == int(nbytes.sum()))


@dataclass
class _Lp:
    """One prompt log-prob entry as vLLM's Python objects have it (what from_prompt_logprobs reads)."""

    logprob: float
    rank: int | None


def prompt_positions(prompt_logprobs: list) -> list[dict | None]:
    """A server's `prompt_logprobs` (per position None or {"token_id:N" or "N": {"logprob", "rank"}}) as
    `from_prompt_logprobs` reads them: {token id: entry with .logprob and .rank}."""
    return [None if e is None else
            {int(str(key).removeprefix("token_id:")): _Lp(float(v["logprob"]), v.get("rank"))
             for key, v in e.items()} for e in prompt_logprobs]
