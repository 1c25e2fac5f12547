"""The model's own next-token log-probs over a prompt + completion, from one plain transformers forward pass: what
every backend's stored top-k (hf, vllm, a server's) is checked against."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def completion_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """(T, V) float32: the log-softmax of the distribution each of the T completion tokens was drawn from (the
    forward pass's positions len(prompt) - 1 ... len(prompt) + T - 2)."""
    logits = model(torch.tensor([prompt + completion])).logits[0].float()
    P, T = len(prompt), len(completion)
    return torch.log_softmax(logits[P - 1:P - 1 + T], -1)


def topk_agreement(a: dict, b: dict) -> tuple[float, int, int]:
    """(mean KL(a || b) per token over a's renormalised top-k, with b's log-probs looked up by id (missing: the
    smallest of b's row), ids that differ at untied ranks, ranks compared). a, b: rows with topk_ids/topk_logprobs."""
    kls, differ, compared = [], 0, 0
    for ia, la, ib, lb in zip(a["topk_ids"], a["topk_logprobs"], b["topk_ids"], b["topk_logprobs"]):
        la, lb = np.asarray(la, np.float64), np.asarray(lb, np.float64)
        pb = dict(zip(ib, lb))
        qa = np.exp(la - np.logaddexp.reduce(la))
        lb_on_a = np.array([pb.get(i, lb.min()) for i in ia])
        qb = np.exp(lb_on_a - np.logaddexp.reduce(lb_on_a))
        kls.append(float(np.sum(qa * (np.log(qa) - np.log(qb)))))
        for r in range(len(ia)):
            gaps = [abs(la[r] - la[j]) for j in (r - 1, r + 1) if 0 <= j < len(la)]
            if min(gaps) > 2e-3:  # not tied with a neighbour (float16 storage: ~1e-3 apart is a tie)
                compared += 1
                differ += ia[r] != ib[r]
    return float(np.mean(kls)), differ, compared
