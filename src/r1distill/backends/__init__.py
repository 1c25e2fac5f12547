"""Generation backends behind one small interface, used by both `generate` and `eval`.

A backend turns chat prompts into completions (with optional top-k log-probabilities of each
generated token). Backends never write files: the calling stage owns batching across shards,
resuming and writing. Heavy imports happen inside the backend module that needs them.
"""

from __future__ import annotations

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


@dataclass
class Completion:
    text: str  # decoded completion, special tokens removed
    token_ids: list[int]  # generated ids, including the final eos when finish_reason == "stop"
    finish_reason: str  # "stop" (eos) | "length" (hit max_new_tokens)
    # Raw (temperature-1) log-probs of the k most likely tokens at each generated position:
    topk_ids: np.ndarray | None = None  # (T, k) int32
    topk_logprobs: np.ndarray | None = None  # (T, k) float32
    # Tokens whose top-k entries could not be mapped to token ids (servers that return token strings);
    # their rows hold id -1 and log-prob -inf. The generate stage sums and reports them.
    unmapped_tokens: int = 0


Progress = Callable[[int, int], None]  # (sequences finished in this call, tokens generated)


class Backend(Protocol):
    name: str
    model_name: str
    context_length: int  # prompt + completion tokens the model accepts
    # What the top-k log-probs are: "raw" = the model's temperature-1 distribution (what KD wants);
    # "processed" = after temperature/top-p (some engines and servers only return these); "none".
    logprobs_kind: str

    def prompt_lengths(self, prompts: list[list[dict]], think_prefix: bool = False) -> list[int]:
        """Token count of each rendered prompt (to skip prompts that leave no room to generate)."""
        ...

    def generate(self, prompts: list[list[dict]], sampling: SamplingConfig,
                 progress: Progress | None = None) -> list[list[Completion]]:
        """One list of `sampling.n` completions per prompt, in prompt order."""
        ...


BACKENDS = ("hf", "vllm", "openai")


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
