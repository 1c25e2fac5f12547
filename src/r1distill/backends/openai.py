"""The `openai` backend: any OpenAI-compatible server (`vllm serve`, SGLang, llama.cpp's server, hosted APIs).

Requests are async (asyncio + httpx2, the HTTP client huggingface_hub already installs), at most
`concurrency` in flight in total, each sent to the least-loaded of `base_urls`. 429, 408, 5xx,
timeouts and connection errors are retried with exponential backoff and jitter (a Retry-After
header is honoured); other 4xx answers fail at once with the server's message. The API key is read
from the environment variable named by `api_key_env` and only ever sent in the Authorization header:
it is not stored in the options, the saved config or any message.

Chain of thought: a `reasoning_content` (DeepSeek, vLLM's reasoning parser) or `reasoning` field
becomes `<think>\\n{reasoning}\\n</think>\\n\\n{content}`, which the generate stage splits into the
reasoning column.

Top-k log-probs -> token ids, per top-k entry:
  1. exact where the server gives ids: vLLM's `--return-tokens-as-token-ids` (or the request field
     `return_tokens_as_token_ids: true` in `extra_body`) prints tokens as "token_id:123";
     `return_token_ids: true` adds the sampled ids to each choice;
  2. through the token's `bytes` (OpenAI's API) and the tokenizer's byte table, exact;
  3. through the token string. llama.cpp prints each token's bytes decoded as UTF-8 with invalid bytes
     dropped, so "" stands for the special tokens and for ~270 partial-character byte tokens, and " "
     for the space and ~37 tokens that are a space plus part of a character. A string that several
     tokens print as is ambiguous and unmapped (`resolve_ambiguous: true` sends it to the one token whose
     bytes are complete UTF-8 text, " " -> the space token, which is a guess). Ambiguous sampled tokens are
     resolved by re-tokenizing the text: accepted when it has the same length, equals every certain id and
     prints as the server's string at every other position.
Every top-k entry that maps to no id (or that the server did not return: llama-cpp-python keys its
top-k by string, so colliding strings come back as one entry) is stored as id -1, log-prob -inf and
counted in `Completion.unmapped_tokens`.

When a completion stops at eos, servers that do not return the eos token (llama-cpp-python) get it
appended to `token_ids` (training needs it) with an all-unmapped top-k row: its distribution is unknown.

Which log-probs servers return (`logprobs_kind`; the default "auto" reads the server from GET /models, once):
  - llama-cpp-python 0.3.x (`owned_by: "me"`): log_softmax of the model's logits, before repeat penalty and
    temperature ("raw"). Its sampler defaults are not plain sampling (repeat_penalty 1.1, top_k 40, min_p 0.05):
    pass `extra_body: {repeat_penalty: 1.0, top_k: 0, min_p: 0.0}` to sample the model's own distribution.
  - vLLM >= 0.10 serve (`owned_by: "vllm"`): `--logprobs-mode` defaults to raw_logprobs ("raw");
    processed_logprobs gives post-temperature/top-p values: set `logprobs_kind: processed` for such a server.
  - anything else (hosted APIs, SGLang, ...): not documented; most give post-processing values: "processed".

Finish reasons are kept as the server gave them. Only "stop" is a clean stop (the completion ended at eos or a
stop string, and the eos is appended when the server left it out); "length" is a cut-off; any other value
("content_filter", DeepSeek's "insufficient_system_resource", vLLM's "abort") and a missing one ("unknown") are
neither, and curate drops them under their own reason. A missing reason with an eos among the returned tokens
counts as "stop".
A completion longer than max_new_tokens (a server that ignored max_tokens stored 571k tokens for 16) is cut to
max_new_tokens tokens and marked "length", with one warning per backend (`cut_completions` counts them).

`n` > 1: asked for with the API's `n`; a server that returns fewer choices (llama-cpp-python ignores
`n`) gets one request per missing sample, each with its own seed, and later prompts go straight to
one request per sample. `use_n: false` always sends one request per sample.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import numpy as np

from r1distill.backends import (
    Completion,
    OnResult,
    Progress,
    SamplingConfig,
    Scored,
    ScoreInput,
    from_prompt_logprobs,
    prompt_seeds,
)
from r1distill.config import ConfigError, UserError
from r1distill.tokenbytes import byte_decoder, check_parts, fingerprint, token_bytes

log = logging.getLogger(__name__)

ENDPOINTS = ("chat", "completions")
LOGPROBS_KINDS = ("auto", "raw", "processed")
RAW_SERVERS = {"vllm": "vLLM (its default --logprobs-mode raw_logprobs)", "me": "llama-cpp-python"}  # by owned_by
RETRY_STATUS = {408, 425, 429} | set(range(500, 600))
MAX_RETRY_AFTER_S = 300.0  # an absurd Retry-After must not stall a run for hours
DEFAULT_CONTEXT = 1 << 30  # no limit known: the server rejects what it cannot fit
_TOKEN_ID = re.compile(r"token_id:(-?\d+)")
_BEARER = re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)  # RFC 6750's token characters


@dataclass
class Options:
    """`backend_options` of the openai backend."""

    base_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8000/v1"])  # requests spread over them
    api_key_env: str = "OPENAI_API_KEY"  # env var holding the key; unset = no key sent (local servers)
    served_model: str | None = None  # model name sent to the server; default: the teacher name
    endpoint: str = "chat"  # chat (/chat/completions) | completions (/completions, prompt rendered here)
    concurrency: int = 16  # requests in flight, over all base_urls
    max_retries: int = 5  # retries of one request on 429/5xx/timeouts/connection errors
    timeout_s: float = 600  # per request (long generations take minutes)
    backoff_s: float = 1.0  # first retry delay; doubles each retry, with jitter
    backoff_max_s: float = 60.0
    tokenizer: str | None = None  # maps token strings -> ids, counts prompts; default: the teacher's, if loadable
    context_length: int | None = None  # default: the server's max_model_len (vLLM), else unlimited
    logprobs_kind: str = "auto"  # raw | processed | auto: from the server's /models (see the module docstring)
    use_n: bool = True  # ask for n samples in one request (servers that ignore it are detected)
    # A top-k string several tokens print as (llama.cpp's " ") -> the one token that is complete text. Off: such
    # entries are unmapped. Measured on llama.cpp with SmolLM2: 7 of 165 resolved " " entries were another token.
    resolve_ambiguous: bool = False
    extra_body: dict = field(default_factory=dict)  # merged into every request (server-specific settings)

    def __post_init__(self) -> None:
        if not self.base_urls:
            raise ConfigError("backend_options (openai).base_urls is empty: give at least one URL")
        urls = []
        for u in self.base_urls:
            parts = urlsplit(u)
            if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
                shown = u.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1]) if "@" in parts.netloc else u
                raise ConfigError(f"backend_options (openai).base_urls: {shown!r} is not an http(s) URL without "
                                  "credentials (e.g. http://127.0.0.1:8000/v1; the key goes in api_key_env)")
            urls.append(u.rstrip("/"))
        self.base_urls = urls
        if self.endpoint not in ENDPOINTS:
            raise ConfigError(f"backend_options (openai).endpoint must be one of {', '.join(ENDPOINTS)}, "
                              f"got {self.endpoint!r}")
        if self.logprobs_kind not in LOGPROBS_KINDS:
            raise ConfigError(f"backend_options (openai).logprobs_kind must be one of {', '.join(LOGPROBS_KINDS)}, "
                              f"got {self.logprobs_kind!r}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env or ""):
            raise ConfigError("backend_options (openai).api_key_env must be the NAME of an environment variable "
                              "(e.g. DEEPSEEK_API_KEY), never the key itself")
        for name in ("concurrency",):
            if getattr(self, name) < 1:
                raise ConfigError(f"backend_options (openai).{name} must be >= 1, got {getattr(self, name)}")
        if self.max_retries < 0:
            raise ConfigError(f"backend_options (openai).max_retries must be >= 0, got {self.max_retries}")
        for name in ("timeout_s", "backoff_max_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"backend_options (openai).{name} must be > 0, got {getattr(self, name)}")
        if self.backoff_s < 0:
            raise ConfigError(f"backend_options (openai).backoff_s must be >= 0, got {self.backoff_s}")
        if self.context_length is not None and self.context_length < 1:
            raise ConfigError(f"backend_options (openai).context_length must be >= 1, got {self.context_length}")


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
    """One API choice -> a Completion with (T, k) top-k arrays; see the module docstring for the mapping."""
    text, rebuilt = _text(choice, endpoint)
    finish = str(choice.get("finish_reason") or "unknown")  # as the server said (module docstring)
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


# ---------------------------------------------------------------------------------------------------------------
# The backend


@functools.lru_cache(maxsize=4)
def _tokenizer_and_map(name: str, trust_remote_code: bool) -> tuple[object, TokenMap]:
    """Loaded once per process: eval makes a backend per model, and the map takes ~1 s for a 49k vocabulary."""
    from r1distill.models import load_tokenizer

    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    return tokenizer, TokenMap(tokenizer)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, options: dict | Options | None = None, dtype: str = "auto", device: str = "auto",
                 batch_size: int = 32, trust_remote_code: bool = False):
        from r1distill.config import from_dict

        # dtype/device/batch_size are the server's business; concurrency bounds the requests instead.
        self.opts = from_dict(Options, options if isinstance(options, Options) else dict(options or {}),
                              "backend_options (openai)")
        self.model_name = model
        self.served_model = self.opts.served_model or model
        self._kind = None if self.opts.logprobs_kind == "auto" else self.opts.logprobs_kind
        self.tokenizer, self.tmap = self._load_tokenizer(model, trust_remote_code)
        if self.opts.endpoint == "completions" and self.tokenizer is None:
            raise ConfigError("backend_options (openai).endpoint: completions renders the chat prompt here and "
                              "needs a tokenizer: set backend_options.tokenizer to a model name or path")
        self._inflight = {u: 0 for u in self.opts.base_urls}
        self._next = 0  # round-robin start among equally loaded URLs
        self._n_ignored = not self.opts.use_n
        self.requests_per_url = {u: 0 for u in self.opts.base_urls}  # answered requests, for the record
        self._reached: set[str] = set()  # URLs that answered (any HTTP status) in this backend's life
        self._context = self.opts.context_length
        self._warned = False
        self.cut_completions = 0  # completions longer than max_new_tokens (the server ignored max_tokens), cut

    def __repr__(self) -> str:  # never show the key (it is not an attribute, but keep it that way)
        return f"OpenAIBackend({self.served_model!r}, base_urls={self.opts.base_urls})"

    def _load_tokenizer(self, model: str, trust_remote_code: bool) -> tuple[object, TokenMap | None]:
        name = self.opts.tokenizer or model
        try:
            return _tokenizer_and_map(name, trust_remote_code)
        except Exception as e:  # noqa: BLE001 - any failure means "no tokenizer", which is allowed for the default
            if self.opts.tokenizer:
                raise UserError(f"backend_options (openai).tokenizer {name!r} could not be loaded: {e}") from None
            from r1distill.console import console

            console.print(f"[yellow]warning[/]: openai backend: no tokenizer for {model!r} ({type(e).__name__}); "
                          "token strings cannot be mapped to ids (stored as -1) and prompts are not counted. "
                          "Set backend_options.tokenizer to the served model's tokenizer.")
            return None, None

    @property
    def tokenizer_fingerprint(self) -> str | None:
        return fingerprint(self.tmap.tokenizer) if self.tmap is not None else None

    def _api_key(self) -> str | None:
        return os.environ.get(self.opts.api_key_env) or None

    def _redact(self, text: str) -> str:
        """A server's text without the API key or any bearer token: a server may echo the request's headers in an
        error. Before any cut to length, so that no part of the key is left."""
        if key := self._api_key():
            text = text.replace(key, "***")
        return _BEARER.sub("Bearer ***", text)

    @property
    def context_length(self) -> int:
        if self._context is None:
            self._context = next((int(m["max_model_len"]) for m in self._models
                                  if m.get("id") == self.served_model and m.get("max_model_len")), DEFAULT_CONTEXT)
        return self._context

    @property
    def logprobs_kind(self) -> str:
        """What the server's top-k log-probs are; "auto" decides from GET /models (module docstring)."""
        if self._kind is None:
            owners = {m.get("owned_by") for m in self._models}
            server = next((RAW_SERVERS[o] for o in owners if o in RAW_SERVERS), None)
            self._kind = "raw" if server else "processed"
            from r1distill.console import console

            console.print(f"[dim]openai backend: logprobs_kind auto -> {self._kind} ("
                          + (f"{server}" if server else "not a server known to return raw log-probs")
                          + "); set backend_options.logprobs_kind to say otherwise[/]")
        return self._kind

    @functools.cached_property
    def _models(self) -> list[dict]:
        """The first server's GET /models entries, asked once ([] when it does not answer): vLLM's list
        max_model_len, and owned_by names the server."""
        import httpx2 as httpx

        key = self._api_key()
        try:
            r = httpx.get(f"{self.opts.base_urls[0]}/models", timeout=10,
                          headers={"Authorization": f"Bearer {key}"} if key else {})
            self._reached.add(self.opts.base_urls[0])
            data = r.json().get("data", []) if r.status_code == 200 else []
            return [m for m in data if isinstance(m, dict)]
        except Exception:  # noqa: BLE001 - only hints; the requests themselves report unreachable servers
            return []

    def prompt_lengths(self, prompts: list[list[dict]], think_prefix: bool = False) -> list[int]:
        """Prompt token counts by the tokenizer's chat template (0 when there is no tokenizer: not skipped here)."""
        if self.tokenizer is None:
            return [0] * len(prompts)
        from r1distill.prompts import render_prompt

        return [len(render_prompt(self.tokenizer, m, think_prefix)) for m in prompts]

    def generate(self, prompts: list[list[dict]], sampling: SamplingConfig, progress: Progress | None = None,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        if sampling.think_prefix and self.opts.endpoint == "chat":
            raise ConfigError("think_prefix needs backend_options.endpoint: completions with the openai backend "
                              "(the chat API cannot start the assistant's reply)")
        return _run_sync(self._generate(prompts, sampling, progress, on_result))

    def score(self, inputs: list[ScoreInput], k: int, progress: Progress | None = None) -> list[Scored]:
        """A server's prompt log-probs over prompt + completion ids (POST /completions with `prompt_logprobs`, a
        vLLM extension: `max_tokens` 1, the ids as the prompt). A server that does not return them (the OpenAI API,
        llama.cpp's, SGLang's) is a one-line error: it cannot score given tokens."""
        if self.tokenizer is None:
            raise ConfigError("scoring through the openai backend sends token ids: set backend_options.tokenizer to "
                              "the served model's tokenizer")
        return _run_sync(self._score(inputs, k, progress))

    async def _score(self, inputs: list[ScoreInput], k: int, progress: Progress | None) -> list[Scored]:
        async with self._client() as client:
            sem = asyncio.Semaphore(self.opts.concurrency)

            async def one(p: list[int], c: list[int]) -> Scored:
                body = {"model": self.served_model, "prompt": p + c, "max_tokens": 1, "temperature": 0,
                        "prompt_logprobs": k, **self.opts.extra_body}
                need = ("scoring given tokens needs a server that takes token ids as the prompt and returns "
                        "prompt_logprobs (vLLM's OpenAI server does; the OpenAI API, llama.cpp's and SGLang's servers "
                        "do not): use score.backend=vllm or hf with the teacher's weights")
                try:
                    data = await self._post(client, sem, body, path="/completions")
                except UserError as e:
                    raise UserError(f"{e} ({need})") from None
                got = ((data.get("choices") or [{}])[0]).get("prompt_logprobs")
                if not isinstance(got, list):
                    raise UserError(f"the server at {self.opts.base_urls[0]} returned no prompt_logprobs: {need}")
                positions = [None if e is None else
                             {int(str(key).removeprefix("token_id:")): _Lp(float(v["logprob"]), v.get("rank"))
                              for key, v in e.items()} for e in got]
                out = from_prompt_logprobs(positions, len(p), c, k)
                if progress:
                    progress(1, len(c))
                return out

            return list(await asyncio.gather(*(one(p, c) for p, c in inputs)))

    def _client(self):
        import httpx2 as httpx

        key = self._api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(self.opts.timeout_s, connect=min(10.0, self.opts.timeout_s))
        limits = httpx.Limits(max_connections=self.opts.concurrency, max_keepalive_connections=self.opts.concurrency)
        return httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits)

    def _body(self, messages: list[dict], sampling: SamplingConfig, n: int, seed: int) -> dict:
        body: dict = {"model": self.served_model, "max_tokens": sampling.max_new_tokens,
                      "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": seed}
        if n > 1:
            body["n"] = n
        k = sampling.logprobs
        if self.opts.endpoint == "chat":
            body["messages"] = messages
            if k:
                body["logprobs"], body["top_logprobs"] = True, k
        else:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            body["prompt"] = text + ("<think>\n" if sampling.think_prefix else "")
            if k:
                body["logprobs"] = k
        body.update(self.opts.extra_body)
        return body

    async def _generate(self, prompts: list[list[dict]], sampling: SamplingConfig, progress: Progress | None,
                        on_result: OnResult | None = None) -> list[list[Completion]]:

        n = sampling.n
        seeds = prompt_seeds(sampling, len(prompts))
        results: list[list[Completion | None]] = [[None] * n for _ in prompts]
        cut = [0, 0]  # completions cut to max_new_tokens, the longest one's tokens
        sem = asyncio.Semaphore(self.opts.concurrency)
        async with self._client() as client:

            async def ask(p: int, first: int, count: int) -> list[Completion]:
                # The prompt's own seed, shifted by its first sample: one-sample-per-request servers do not repeat
                # a sample, and a problem's requests do not depend on what else is in the call.
                seed = (seeds[p] + first) % (1 << 31)
                data = await self._post(client, sem, self._body(prompts[p], sampling, count, seed))
                choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))[:count]
                usage = (data.get("usage") or {}).get("completion_tokens")
                approx = usage // max(1, len(choices)) if isinstance(usage, int) else None
                outs = [parse_choice(c, self.opts.endpoint, sampling.logprobs, self.tmap, self.opts.resolve_ambiguous,
                                     approx) for c in choices]
                # A clean stop may end in an eos the server did not count (llama-cpp-python leaves it out).
                over = [i for i, c in enumerate(outs)
                        if len(c.token_ids) > sampling.max_new_tokens + (c.finish_reason == "stop")]
                for i in over:
                    cut[0] += 1
                    cut[1] = max(cut[1], len(outs[i].token_ids))
                    outs[i] = cut_to(outs[i], sampling.max_new_tokens, self.tokenizer)
                if not outs:
                    raise UserError(f"{self.opts.endpoint} answer without choices from the server: "
                                    f"{self._redact(str(data))[:300]}")
                for i, c in enumerate(outs):
                    results[p][first + i] = c
                    if on_result:
                        on_result(p, first + i, c)
                    if progress:
                        progress(1, len(c.token_ids))
                return outs

            async def one_prompt(p: int) -> None:
                got = 0
                if not self._n_ignored:
                    got = len(await ask(p, 0, n))
                    if got < n:
                        self._n_ignored = True  # the server ignores `n`: one request per sample from now on
                await asyncio.gather(*(ask(p, s, 1) for s in range(got, n)))

            tasks = [asyncio.ensure_future(one_prompt(p)) for p in range(len(prompts))]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
        from r1distill.console import console

        if cut[0] and not self.cut_completions:  # warned once per backend: a server that ignores it always does
            console.print(f"[yellow]warning[/]: openai backend: the server ignored max_tokens={sampling.max_new_tokens}"
                          f": {cut[0]} completions (the longest {cut[1]:,} tokens) were cut to "
                          f"{sampling.max_new_tokens} tokens and marked 'length'; later cuts are only counted")
        self.cut_completions += cut[0]
        unknown = sum(c.token_ids.count(-1) for cs in results for c in cs if c is not None)
        if unknown and self.tmap is not None:  # training cannot use such rows: say so rather than fail later
            console.print(f"[yellow]warning[/]: openai backend: {unknown} sampled tokens could not be identified "
                          "(stored as id -1); return_token_ids or --return-tokens-as-token-ids (vLLM) gives them")
        if sampling.logprobs and self.tmap is not None and not self._warned:
            done = [c for cs in results for c in cs if c is not None and c.topk_ids is not None]
            cells = sum(c.topk_ids.size for c in done)
            if cells and sum(c.unmapped_tokens for c in done) > cells / 2:
                self._warned = True
                console.print("[yellow]warning[/]: openai backend: most top-k tokens could not be mapped to ids: is "
                              f"the tokenizer ({self.opts.tokenizer or self.model_name}) the served model's? Set "
                              "backend_options.tokenizer, or start vLLM with --return-tokens-as-token-ids")
        return results  # type: ignore[return-value]

    def _pick_url(self) -> str:
        """The base URL with the fewest requests in flight; ties go round robin."""
        urls = self.opts.base_urls
        low = min(self._inflight.values())
        for j in range(len(urls)):
            u = urls[(self._next + j) % len(urls)]
            if self._inflight[u] == low:
                self._next = (self._next + j + 1) % len(urls)
                return u
        return urls[0]

    async def _post(self, client, sem: asyncio.Semaphore, body: dict, path: str | None = None) -> dict:
        import httpx2 as httpx

        path = path or ("/chat/completions" if self.opts.endpoint == "chat" else "/completions")
        attempts = self.opts.max_retries + 1
        failures: list[str] = []
        unreachable = True
        refused_url = None  # the URL of the last failure, when it was a connect error
        for attempt in range(attempts):
            wait_hint = None
            async with sem:
                url = self._pick_url()
                self._inflight[url] += 1
                try:
                    r = await client.post(url + path, json=body)
                except (httpx.TimeoutException, httpx.TransportError) as e:
                    failures.append(f"{url}: {type(e).__name__}: {self._redact(str(e))}".rstrip(": "))
                    # A slow answer (read timeout) means the server is there: only connect errors say it is not.
                    refused = isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))
                    unreachable &= refused
                    refused_url = url if refused else None
                    if not refused:  # it accepted the connection (then dropped it, or was slow): it was there
                        self._reached.add(url)
                    r = None
                finally:
                    self._inflight[url] -= 1
            if r is not None:
                unreachable = False
                refused_url = None
                self._reached.add(url)
                if r.status_code == 200:
                    try:
                        data = r.json()
                    except ValueError:
                        failures.append(f"{url}: HTTP 200 with a body that is not JSON: {self._redact(r.text)[:200]!r}")
                    else:
                        if isinstance(data, dict) and "error" not in data:
                            self.requests_per_url[url] += 1
                            return data
                        raise UserError(f"{url}{path} answered with an error: {self._redact(str(data))[:300]}")
                elif r.status_code in RETRY_STATUS:
                    failures.append(f"{url}: HTTP {r.status_code}: {self._redact(r.text)[:200]}")
                    wait_hint = _retry_after(r.headers.get("retry-after"))
                else:
                    hint = (f" (check the API key in ${self.opts.api_key_env})"
                            if r.status_code in (401, 403) else "")
                    raise UserError(f"{url}{path} answered HTTP {r.status_code}{hint}: {self._redact(r.text)[:300]}")
            if attempt + 1 == attempts:
                break
            delay = min(self.opts.backoff_max_s, self.opts.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
            if wait_hint is not None:
                delay = max(delay, min(wait_hint, MAX_RETRY_AFTER_S))
            log.warning("openai backend: %s; retry %d/%d in %.1fs", failures[-1][:200], attempt + 1,
                        self.opts.max_retries, delay)
            await asyncio.sleep(delay)
        last = failures[-1]
        if refused_url in self._reached:
            # It answered before and now refuses connections: it crashed or was stopped, it is not a wrong address.
            raise UserError(f"the server at {refused_url} went away: it answered earlier in this run, now it refuses "
                            f"connections ({last.split(': ', 1)[1]}, after {attempts} attempts); it crashed or was "
                            "stopped - check its log, then restart it and rerun")
        if unreachable:
            raise UserError(f"cannot reach {_urls(failures)}: {last.split(': ', 1)[1]} (after {attempts} attempts) "
                            "- is the server running?")
        raise UserError(f"the server kept failing after {attempts} attempts, last: {last}")


@dataclass
class _Lp:
    """One prompt log-prob entry as vLLM's Python objects have it (what from_prompt_logprobs reads)."""

    logprob: float
    rank: int | None


def _run_sync(coro):
    """Run a coroutine to its end from synchronous code, also when called inside a running event loop (a notebook):
    then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target() -> None:
        try:
            box["out"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["err"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["out"]


def _urls(failures: Iterable[str]) -> str:
    seen: list[str] = []
    for f in failures:
        u = f.split(": ", 1)[0]
        if u not in seen:
            seen.append(u)
    return ", ".join(seen)
