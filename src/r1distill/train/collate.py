"""Curated traces -> token features -> padded batches with the teacher's top-k aligned.

We tokenize ourselves rather than let TRL do it because the teacher's top-k rows must stay
aligned with the completion tokens they were generated with: re-tokenizing the completion text
could split it differently. The prompt is rendered with the chat template and masked (-100); the
completion is the teacher's own ids (ending in eos when it stopped), so the loss is on completion
tokens only.

The features stay in flat numpy arrays with row offsets (`Features`), read from the Arrow table
without a Python object per token: at k = 20, a million 4k-token traces hold 8·10¹⁰ top-k entries,
6 bytes each here against ~100 as Python lists. Batches are built from them by the collator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from r1distill.config import UserError
from r1distill.prompts import render_prompt
from r1distill.train.losses import IGNORE


@dataclass
class Features:
    """The kept rows' token features. Row r's completion is comp_ids[comp_off[r]:comp_off[r+1]], already cut
    to max_length with its prompt; its teacher top-k are the same rows of topk_ids / topk_logprobs (n_tokens, k)."""

    prompt_ids: list[list[int]]
    comp_ids: np.ndarray  # (n_tokens,) int32, every kept row's completion one after another
    comp_off: np.ndarray  # (rows + 1,) int64
    topk_ids: np.ndarray | None  # (n_tokens, k) int32
    topk_logprobs: np.ndarray | None  # (n_tokens, k) float16
    truncated: int  # rows whose completion was cut (or dropped) to fit max_length

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return int(self.comp_off[-1])

    def row(self, r: int) -> dict:
        """Row r as a feature dict (numpy views, no copy of the top-k)."""
        a, b = int(self.comp_off[r]), int(self.comp_off[r + 1])
        prompt = self.prompt_ids[r]
        feat = {"input_ids": np.concatenate([np.asarray(prompt, np.int64), self.comp_ids[a:b]]),
                "prompt_len": len(prompt)}
        if self.topk_ids is not None:
            feat["topk_ids"], feat["topk_logprobs"] = self.topk_ids[a:b], self.topk_logprobs[a:b]
        return feat


def _where(where: str | Callable[[int], str], table: pa.Table, i: int) -> str:
    loc = where(i) if callable(where) else f"{where} row {i}"
    if "prompt_id" in table.column_names and table["prompt_id"][i].is_valid:
        sample = table["sample_idx"][i].as_py() if "sample_idx" in table.column_names else None
        loc += f" (prompt_id {table['prompt_id'][i].as_py()}, sample {sample})"
    return loc


def _topk_arrays(table: pa.Table, comp_len: np.ndarray, vocab: int, name: Callable[[int], str]):
    """The top-k columns as two (n_tokens, k) arrays aligned with the completion tokens, checked: present
    in every row, one entry per completion token, the same k everywhere, ids inside the vocabulary."""
    off = np.concatenate([[0], np.cumsum(comp_len)])
    cols = {}
    for col, dtype in (("topk_ids", np.int32), ("topk_logprobs", np.float16)):
        arr = table[col].combine_chunks()
        if arr.null_count:
            i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise UserError(f"{name(i)}: no topk_ids/topk_logprobs; offline KD needs traces generated with "
                            "generate.topk_logprobs > 0 (or use train.objective=sft)")
        lens = pc.list_value_length(arr).to_numpy()
        if (bad := np.flatnonzero(lens != comp_len)).size:
            i = int(bad[0])
            raise UserError(f"{name(i)}: {col} has {lens[i]} positions but completion_ids has {comp_len[i]} "
                            "tokens; the teacher's top-k must align with the completion (regenerate the traces, "
                            "or use sft)")
        per_token = pc.list_flatten(arr)
        widths = pc.list_value_length(per_token).to_numpy()
        if widths.size and (bad := np.flatnonzero(widths != widths[0])).size:
            i = int(np.searchsorted(off, bad[0], side="right") - 1)
            raise UserError(f"{name(i)}: the top-k lists have different lengths from token to token ({widths[bad[0]]} "
                            f"vs {widths[0]}); all rows need the same k")
        k = int(widths[0]) if widths.size else 0
        cols[col] = pc.list_flatten(per_token).to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(-1, k)
    ids = cols["topk_ids"]
    if ids.shape != cols["topk_logprobs"].shape:
        width = cols["topk_logprobs"].shape[1]
        raise UserError(f"{name(0)}: topk_ids is {ids.shape[1]} wide but topk_logprobs {width}")
    # -1 marks an entry an API server named by a string the tokenizer could not map (losses.UNMAPPED).
    if ids.size and (ids.max() >= vocab or ids.min() < -1):
        t = int(np.flatnonzero(((ids >= vocab) | (ids < -1)).any(axis=1))[0])
        i = int(np.searchsorted(off, t, side="right") - 1)
        bad_id = int(ids[t][(ids[t] >= vocab) | (ids[t] < -1)][0])
        raise UserError(f"{name(i)}: top-k id {bad_id} is outside the student's vocabulary of {vocab}: the traces "
                        "come from another tokenizer (cross-tokenizer KD is not in this objective)")
    return ids, cols["topk_logprobs"]


def build_features(table: pa.Table, tokenizer, max_length: int, need_topk: bool,
                   where: str | Callable[[int], str]) -> Features:
    """Token features of a trace table (columns prompt, completion_ids and, for KD, topk_ids/topk_logprobs).

    Rows longer than max_length lose the end of their completion; rows whose prompt alone fills it are dropped.
    `where` names the data in errors: a dir (rows are numbered in it) or a function of the row index.
    """
    def name(i: int) -> str:
        return _where(where, table, i)

    comp = table["completion_ids"].combine_chunks()
    if comp.null_count:
        raise UserError(f"{name(int(np.flatnonzero(comp.is_null().to_numpy(zero_copy_only=False))[0]))}: "
                        "no completion_ids")
    comp_len = pc.list_value_length(comp).to_numpy().astype(np.int64)
    comp_flat = pc.list_flatten(comp).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    topk = _topk_arrays(table, comp_len, len(tokenizer), name) if need_topk else None
    prompts = [render_prompt(tokenizer, p) for p in table["prompt"].to_pylist()]
    prompt_len = np.array([len(p) for p in prompts], dtype=np.int64)
    keep_len = np.minimum(comp_len, np.maximum(max_length - prompt_len, 0))
    truncated = int((comp_len > keep_len).sum())
    kept = np.flatnonzero(keep_len > 0)
    # Gather the kept tokens: each kept row's first keep_len[r] completion tokens.
    src_start = np.concatenate([[0], np.cumsum(comp_len)])[kept]
    off = np.concatenate([[0], np.cumsum(keep_len[kept])]).astype(np.int64)
    index = np.arange(off[-1]) + np.repeat(src_start - off[:-1], keep_len[kept])
    return Features(
        prompt_ids=[prompts[r] for r in kept], comp_ids=comp_flat[index], comp_off=off,
        topk_ids=topk[0][index] if topk else None, topk_logprobs=topk[1][index] if topk else None,
        truncated=truncated,
    )


class DistillCollator:
    """Right-pads a list of features into a batch.

    A feature is a dict (input_ids, prompt_len, and for KD topk_ids (c, k) / topk_logprobs (c, k) for its c
    completion tokens) or, when the collator holds `features`, {"idx": r} for row r of them.
    Returns input_ids (B, T), attention_mask (B, T), labels (B, T) = input ids on completion
    positions and -100 elsewhere, and, for KD, topk_ids (B, T, k) / topk_logprobs (B, T, k) placed
    at the same positions as the labels they describe (zeros elsewhere).
    """

    def __init__(self, pad_token_id: int, features: Features | None = None):
        self.pad = pad_token_id
        self.features = features

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if self.features is not None:
            features = [self.features.row(int(f["idx"])) if "idx" in f else f for f in features]
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
            ids = torch.as_tensor(np.asarray(f["input_ids"]), dtype=torch.long)
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
