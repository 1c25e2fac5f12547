"""Generation backends behind one small interface, used by both `generate` and `eval`.

A backend turns chat prompts into completions (with optional top-k log-probabilities of each
generated token). Backends never write files: the calling stage owns batching across shards,
resuming and writing. Heavy imports happen inside the backend module that needs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from r1distill.config import ConfigError


@dataclass
class SamplingConfig:
    n: int = 1  # completions per prompt
    max_new_tokens: int = 256
    temperature: float = 0.6  # 0 = greedy
    top_p: float = 0.95
    logprobs: int = 0  # top-k log-probs to return per generated token (0 = none)
    think_prefix: bool = False  # force the response to begin with "<think>\n"
    seed: int = 0
    # One seed per prompt of a `generate` call: sample s of prompt p is drawn from the stream (seeds[p], s), so the
    # same problem gets the same samples whatever it is batched with, and no two problems share a stream. None: the
    # seeds come from `seed` and each prompt's index in the call.
    seeds: list[int] | None = None


@dataclass
class Completion:
    text: str  # decoded completion, special tokens removed
    token_ids: list[int]  # generated ids, including the final eos when finish_reason == "stop"
    # "stop" (a clean stop: eos or a stop string) | "length" (hit max_new_tokens) | anything else a server said
    # ("content_filter", "abort", "insufficient_system_resource", "unknown" when it said nothing): not a clean stop
    finish_reason: str
    # Raw (temperature-1) log-probs of the k most likely tokens at each generated position:
    topk_ids: np.ndarray | None = None  # (T, k) int32
    topk_logprobs: np.ndarray | None = None  # (T, k) float32
    # Tokens whose top-k entries could not be mapped to token ids (servers that return token strings);
    # their rows hold id -1 and log-prob -inf. The generate stage sums and reports them.
    unmapped_tokens: int = 0
    # For cross-tokenizer KD (None where the backend cannot tell):
    token_logprobs: np.ndarray | None = None  # (T,) float32: raw log-prob of each generated token, in the top-k or not
    token_nbytes: np.ndarray | None = None  # (T,) int32: each token's bytes in `text` (r1distill.tokenbytes.spans)
    token_bytes_ok: bool | None = None  # whether those bytes, one after another, are exactly `text`'s UTF-8 bytes


Progress = Callable[[int, int], None]  # (sequences finished in this call, tokens generated)
# (prompt index in the call, sample index, its completion), as each one is finished: what an interrupted call had
# done is not lost with it (the generate stage writes it out on Ctrl-C).
OnResult = Callable[[int, int, Completion], None]

ScoreInput = tuple[list[int], list[int]]  # (prompt ids as the chat template renders them, completion ids)


@dataclass
class Scored:
    """A model's next-token distributions over the given completion tokens (teacher forcing, no generation):
    what a generation of exactly those tokens would have recorded. Raw (temperature-1) log-probs."""

    topk_ids: np.ndarray  # (T, k) int32, by rank
    topk_logprobs: np.ndarray  # (T, k) float32
    token_logprobs: np.ndarray  # (T,) float32: the log-prob of each given completion token, in the top-k or not


def deliver(on_result: OnResult | None, results: list[list[Completion]], first: int = 0) -> None:
    """Give a finished part of a call (its prompts `first`, `first + 1`, ...) to `on_result`."""
    if on_result:
        for p, completions in enumerate(results, start=first):
            for s, c in enumerate(completions):
                on_result(p, s, c)


def fits_context(backend, prompts: list[list[dict]], max_new_tokens: int, think_prefix: bool = False) -> list[bool]:
    """Whether each chat prompt, rendered as `backend` renders it, leaves room for `max_new_tokens` in its context:
    generate and eval skip (and name) the others, since a prompt past the context does not fail alone (a 200 KB
    problem asked for 26.6 GB and took its batch down)."""
    lengths = backend.prompt_lengths(prompts, think_prefix)
    return [n + max_new_tokens <= backend.context_length for n in lengths]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any values (a base seed, a benchmark, a problem id, a sample index): distinct inputs give
    independent streams, the same inputs the same one, on every machine and Python (sha256, not hash())."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big") >> 1


def prompt_seeds(sampling: SamplingConfig, num_prompts: int) -> list[int]:
    """Each prompt's seed for this call (see `SamplingConfig.seeds`)."""
    if sampling.seeds is None:
        return [derive_seed(sampling.seed, p) for p in range(num_prompts)]
    if len(sampling.seeds) != num_prompts:
        raise ValueError(f"SamplingConfig.seeds holds {len(sampling.seeds)} seeds for {num_prompts} prompts")
    return list(sampling.seeds)


class Backend(Protocol):
    name: str
    model_name: str
    context_length: int  # prompt + completion tokens the model accepts
    # What the top-k log-probs are: "raw" = the model's temperature-1 distribution (what KD wants);
    # "processed" = after temperature/top-p (some engines and servers only return these); "none".
    logprobs_kind: str
    tokenizer_fingerprint: str | None  # r1distill.tokenbytes.fingerprint of the ids it returns (None: unknown)

    def prompt_lengths(self, prompts: list[list[dict]], think_prefix: bool = False) -> list[int]:
        """Token count of each rendered prompt (to skip prompts that leave no room to generate)."""
        ...

    def generate(self, prompts: list[list[dict]], sampling: SamplingConfig, progress: Progress | None = None,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        """One list of `sampling.n` completions per prompt, in prompt order; each also given to `on_result` once
        finished (hf: per batch, openai: per request, vllm: at the end of the call or of each replica's part)."""
        ...

    # Backends that can score existing tokens (the `score` stage) also have:
    #   score(inputs: list[ScoreInput], k: int, progress: Progress | None = None) -> list[Scored]


def from_prompt_logprobs(prompt_logprobs, prompt_len: int, completion: list[int], k: int) -> Scored:
    """Prompt log-probs of one request, as vLLM gives them (in process, or through its OpenAI server): one {token id:
    entry with .logprob and .rank} per position of prompt + completion, None at position 0, each holding the top-k and
    the position's own token -> the Scored completion positions (top-k by log-prob, then rank, then id)."""
    T = len(completion)
    if prompt_logprobs is None or len(prompt_logprobs) != prompt_len + T:
        got = "none" if prompt_logprobs is None else len(prompt_logprobs)
        raise RuntimeError(f"vLLM returned {got} prompt log-prob positions for {prompt_len + T} tokens")
    ids = np.full((T, k), -1, dtype=np.int32)
    lps = np.full((T, k), -np.inf, dtype=np.float32)
    chosen = np.full(T, np.nan, dtype=np.float32)
    for t in range(T):
        position = dict(prompt_logprobs[prompt_len + t].items())
        if (own := position.get(completion[t])) is not None:
            chosen[t] = own.logprob
        best = sorted(position.items(), key=lambda e: (-e[1].logprob, e[1].rank or 0, e[0]))[:k]
        ids[t, :len(best)] = [i for i, _ in best]
        lps[t, :len(best)] = [e.logprob for _, e in best]
    return Scored(ids, lps, chosen)


BACKENDS = ("hf", "vllm", "openai")


def close(backend) -> None:
    """Stop what a backend runs beside this process (vLLM's engine processes) now, not when it is collected: the
    next stage may need that memory (a GPU's). A backend without a `close` holds nothing outside Python objects."""
    stop = getattr(backend, "close", None)
    if stop is not None:
        stop()


def check_options(name: str, options: dict | None):
    """Validate a recipe's `backend_options` for backend `name` without loading anything heavy: each backend
    module defines an `Options` dataclass at its top and imports its engine (vllm, the HTTP client) lazily."""
    import importlib

    from r1distill.config import from_dict

    if name == "hf":
        if options:
            raise ConfigError(f"The hf backend takes no backend_options, got {sorted(options)}")
        return None
    module = importlib.import_module(f"r1distill.backends.{name}")
    return from_dict(module.Options, dict(options or {}), f"backend_options ({name})")


def get_backend(name: str, model: str, options: dict | None = None, **common) -> Backend:
    """The backend `name` serving `model`.

    common: settings every stage passes (dtype, device, batch_size, trust_remote_code); a backend uses
    those that apply to it. options: the recipe's `backend_options` mapping, settings of this backend only
    (e.g. vllm's tensor_parallel_size, openai's base_urls), which the backend validates itself.
    """
    options = dict(options or {})
    if name == "hf":
        from r1distill.backends.hf import HFBackend

        if options:
            raise ConfigError(f"The hf backend takes no backend_options, got {sorted(options)}")
        return HFBackend(model, **common)
    if name == "vllm":
        from r1distill.backends.vllm import VLLMBackend

        return VLLMBackend(model, options=options, **common)
    if name == "openai":
        from r1distill.backends.openai import OpenAIBackend

        return OpenAIBackend(model, options=options, **common)
    raise ConfigError(f"Unknown backend {name!r}; available: {', '.join(BACKENDS)}")
