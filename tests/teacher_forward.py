"""The model's own next-token log-probs over a prompt + completion, from one plain transformers forward pass: what
every backend's stored top-k (hf, vllm, a server's) is checked against."""

from __future__ import annotations

import torch


@torch.no_grad()
def completion_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """(T, V) float32: the log-softmax of the distribution each of the T completion tokens was drawn from (the
    forward pass's positions len(prompt) - 1 ... len(prompt) + T - 2)."""
    logits = model(torch.tensor([prompt + completion])).logits[0].float()
    P, T = len(prompt), len(completion)
    return torch.log_softmax(logits[P - 1:P - 1 + T], -1)
