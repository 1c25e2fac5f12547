"""Curated traces -> token features -> padded batches with the teacher's top-k aligned.

We tokenize ourselves rather than let TRL do it because the teacher's top-k rows must stay
aligned with the completion tokens they were generated with: re-tokenizing the completion text
could split it differently. The prompt is rendered with the chat template and masked (-100); the
completion is the teacher's own ids (ending in eos when it stopped), so the loss is on completion
tokens only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from r1distill.config import UserError
from r1distill.prompts import render_prompt
from r1distill.train.losses import IGNORE


def build_features(rows: list[dict], tokenizer, max_length: int, need_topk: bool,
                   where: str | Callable[[int], str]) -> tuple[list[dict], int]:
    """One feature dict per row; rows longer than max_length are cut (completion end dropped).

    `where` names the data in errors: a dir (rows are numbered in it) or a function of the row index.
    Returns (features, number of truncated rows).
    """
    loc = where if callable(where) else (lambda i: f"{where} row {i}")
    vocab = len(tokenizer)
    feats, truncated, width = [], 0, None
    for i, row in enumerate(rows):
        prompt_ids = render_prompt(tokenizer, row["prompt"])
        comp = list(row["completion_ids"])
        feat = {"input_ids": prompt_ids + comp, "prompt_len": len(prompt_ids)}
        if need_topk:
            feat["topk_ids"], feat["topk_logprobs"] = _topk_arrays(row, len(comp), vocab,
                                                                   partial(_name, loc, i, row))
            k = feat["topk_ids"].shape[1] if len(comp) else width
            if width is not None and k != width:
                raise UserError(f"{_name(loc, i, row)}: top-k width {k} differs from the earlier rows' {width}: "
                                "the traces mix generate runs with different topk_logprobs")
            width = k
        if len(feat["input_ids"]) > max_length:
            truncated += 1
            feat["input_ids"] = feat["input_ids"][:max_length]
        if len(feat["input_ids"]) <= feat["prompt_len"]:
            continue  # nothing left to learn from once the prompt fills max_length
        feats.append(feat)
    return feats, truncated


def _name(loc: Callable[[int], str], i: int, row: dict) -> str:
    ident = f" (prompt_id {row['prompt_id']}, sample {row.get('sample_idx')})" if row.get("prompt_id") else ""
    return loc(i) + ident


def _topk_arrays(row: dict, n: int, vocab: int, name: Callable[[], str]) -> tuple[np.ndarray, np.ndarray]:
    """The row's (n, k) top-k ids and log-probs, checked against its n completion tokens and the vocabulary."""
    ids, lps = row.get("topk_ids"), row.get("topk_logprobs")
    if ids is None or lps is None:
        raise UserError(f"{name()}: no topk_ids/topk_logprobs; offline KD needs traces generated with "
                        "generate.topk_logprobs > 0 (or use train.objective=sft)")
    for col, val in (("topk_ids", ids), ("topk_logprobs", lps)):
        if len(val) != n:
            raise UserError(f"{name()}: {col} has {len(val)} positions but completion_ids has {n} tokens; the "
                            "teacher's top-k must align with the completion (regenerate the traces, or use sft)")
    if n == 0:
        return np.zeros((0, 0), np.int32), np.zeros((0, 0), np.float16)
    try:
        ids_a = np.asarray(ids, dtype=np.int32).reshape(n, -1)
        lps_a = np.asarray(lps, dtype=np.float16).reshape(n, -1)
    except ValueError:
        raise UserError(f"{name()}: the top-k lists have different lengths from token to token") from None
    if ids_a.shape != lps_a.shape:
        raise UserError(f"{name()}: topk_ids is {ids_a.shape} but topk_logprobs {lps_a.shape}")
    if ids_a.size and (ids_a.max() >= vocab or ids_a.min() < 0):
        raise UserError(f"{name()}: top-k id {int(ids_a.max())} is outside the student's vocabulary of {vocab}: "
                        "the traces come from another tokenizer (cross-tokenizer KD is not in this objective)")
    return ids_a, lps_a


class DistillCollator:
    """Right-pads a list of features into a batch.

    Returns input_ids (B, T), attention_mask (B, T), labels (B, T) = input ids on completion
    positions and -100 elsewhere, and, for KD, topk_ids (B, T, k) / topk_logprobs (B, T, k) placed
    at the same positions as the labels they describe (zeros elsewhere).
    """

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        B = len(features)
        T = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((B, T), self.pad, dtype=torch.long)
        attention = torch.zeros((B, T), dtype=torch.long)
        labels = torch.full((B, T), IGNORE, dtype=torch.long)
        has_topk = "topk_ids" in features[0]
        if has_topk:
            k = np.asarray(features[0]["topk_ids"]).shape[-1]
            topk_ids = torch.zeros((B, T, k), dtype=torch.long)
            topk_lp = torch.zeros((B, T, k), dtype=torch.float32)
        for b, f in enumerate(features):
            ids = torch.as_tensor(f["input_ids"], dtype=torch.long)
            n, p = len(ids), int(f["prompt_len"])
            input_ids[b, :n] = ids
            attention[b, :n] = 1
            labels[b, p:n] = ids[p:]
            if has_topk:
                c = n - p  # completion tokens kept after truncation
                topk_ids[b, p:n] = torch.as_tensor(np.asarray(f["topk_ids"])[:c], dtype=torch.long)
                topk_lp[b, p:n] = torch.as_tensor(np.asarray(f["topk_logprobs"], dtype=np.float32)[:c])
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if has_topk:
            batch["topk_ids"], batch["topk_logprobs"] = topk_ids, topk_lp
        return batch
