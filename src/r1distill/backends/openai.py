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

The HTTP side (client, retries, the key) is `r1distill.backends.openai_http`; the reading of the answers (token
strings -> ids, choices -> Completions) is `r1distill.backends.openai_parse`.
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

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
from r1distill.backends.openai_http import Transport, run_sync
from r1distill.backends.openai_parse import TokenMap, cut_to, parse_choice, prompt_positions
from r1distill.config import ConfigError, UserError
from r1distill.tokenbytes import fingerprint

ENDPOINTS = ("chat", "completions")
LOGPROBS_KINDS = ("auto", "raw", "processed")
RAW_SERVERS = {"vllm": "vLLM (its default --logprobs-mode raw_logprobs)", "me": "llama-cpp-python"}  # by owned_by
DEFAULT_CONTEXT = 1 << 30  # no limit known: the server rejects what it cannot fit


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


@functools.lru_cache(maxsize=4)
def _tokenizer_and_map(name: str, trust_remote_code: bool) -> tuple[object, TokenMap]:
    """Loaded once per process: eval makes a backend per model, and the map takes ~1 s for a 49k vocabulary."""
    from r1distill.models import load_tokenizer

    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    return tokenizer, TokenMap(tokenizer)


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
        self.http = Transport(self.opts)  # the requests: URLs, retries, the key (openai_http)
        self._n_ignored = not self.opts.use_n
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

    @property
    def requests_per_url(self) -> dict[str, int]:
        """Answered requests per base URL, for the record."""
        return self.http.requests_per_url

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
        return self.http.models()

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
        return run_sync(self._generate(prompts, sampling, progress, on_result))

    def score(self, inputs: list[ScoreInput], k: int, progress: Progress | None = None) -> list[Scored]:
        """A server's prompt log-probs over prompt + completion ids (POST /completions with `prompt_logprobs`, a
        vLLM extension: `max_tokens` 1, the ids as the prompt). A server that does not return them (the OpenAI API,
        llama.cpp's, SGLang's) is a one-line error: it cannot score given tokens."""
        if self.tokenizer is None:
            raise ConfigError("scoring through the openai backend sends token ids: set backend_options.tokenizer to "
                              "the served model's tokenizer")
        return run_sync(self._score(inputs, k, progress))

    async def _score(self, inputs: list[ScoreInput], k: int, progress: Progress | None) -> list[Scored]:
        async with self.http.client() as client:
            sem = asyncio.Semaphore(self.opts.concurrency)

            async def one(p: list[int], c: list[int]) -> Scored:
                body = {"model": self.served_model, "prompt": p + c, "max_tokens": 1, "temperature": 0,
                        "prompt_logprobs": k, **self.opts.extra_body}
                need = ("scoring given tokens needs a server that takes token ids as the prompt and returns "
                        "prompt_logprobs (vLLM's OpenAI server does; the OpenAI API, llama.cpp's and SGLang's servers "
                        "do not): use score.backend=vllm or hf with the teacher's weights")
                try:
                    data = await self.http.post(client, sem, body, path="/completions")
                except UserError as e:
                    raise UserError(f"{e} ({need})") from None
                got = ((data.get("choices") or [{}])[0]).get("prompt_logprobs")
                if not isinstance(got, list):
                    raise UserError(f"the server at {self.opts.base_urls[0]} returned no prompt_logprobs: {need}")
                out = from_prompt_logprobs(prompt_positions(got), len(p), c, k)
                if progress:
                    progress(1, len(c))
                return out

            return list(await asyncio.gather(*(one(p, c) for p, c in inputs)))

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
        async with self.http.client() as client:

            async def ask(p: int, first: int, count: int) -> list[Completion]:
                # The prompt's own seed, shifted by its first sample: one-sample-per-request servers do not repeat
                # a sample, and a problem's requests do not depend on what else is in the call.
                seed = (seeds[p] + first) % (1 << 31)
                data = await self.http.post(client, sem, self._body(prompts[p], sampling, count, seed))
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
                                    f"{self.http.redact(str(data))[:300]}")
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

