"""Token rows -> padded batches with the teacher's top-k aligned to the labels.

We tokenize ourselves (train/data.py) rather than let TRL do it because the teacher's top-k rows must stay
aligned with the completion tokens they were generated with: re-tokenizing the completion text could split it
differently. The prompt is masked (-100); the completion is the teacher's own ids (ending in eos when it
stopped), so the loss is on completion tokens only.
"""

from __future__ import annotations

import numpy as np
import torch

from r1distill.train.losses import IGNORE


class DistillCollator:
    """Right-pads a list of features into a batch.

    A feature is a dict (input_ids, prompt_len, and for KD topk_ids (c, k) / topk_logprobs (c, k) for its c
    completion tokens) or, when the collator holds `rows` (a `data.TokenData`), {"idx": r} for its row r.
    Returns input_ids (B, T), attention_mask (B, T), labels (B, T) = input ids on completion positions and -100
    elsewhere, and, for KD, topk_ids (B, T, k) / topk_logprobs (B, T, k) placed at the same positions as the
    labels they describe (zeros elsewhere). `topk`: keep only each token's first `topk` stored entries (the
    stored top-k is sorted, so these are the teacher's most likely ones).
    """

    def __init__(self, pad_token_id: int, rows=None, topk: int | None = None):
        self.pad = pad_token_id
        self.rows = rows
        self.topk = topk

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if self.rows is not None:
            features = [self.rows.row(int(f["idx"])) if "idx" in f else f for f in features]
        B = len(features)
        T = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((B, T), self.pad, dtype=torch.long)
        attention = torch.zeros((B, T), dtype=torch.long)
        labels = torch.full((B, T), IGNORE, dtype=torch.long)
        has_topk = "topk_ids" in features[0]
        if has_topk:
            k = np.asarray(features[0]["topk_ids"]).shape[-1]
            k = min(k, self.topk) if self.topk else k
            topk_ids = torch.zeros((B, T, k), dtype=torch.long)
            topk_lp = torch.zeros((B, T, k), dtype=torch.float32)
        for b, f in enumerate(features):
            ids = torch.as_tensor(np.asarray(f["input_ids"], dtype=np.int64))
            n, p = len(ids), int(f["prompt_len"])
            input_ids[b, :n] = ids
            attention[b, :n] = 1
            labels[b, p:n] = ids[p:]
            if has_topk:
                c = n - p  # completion tokens kept after truncation
                topk_ids[b, p:n] = torch.as_tensor(np.asarray(f["topk_ids"])[:c, :k].astype(np.int64))
                topk_lp[b, p:n] = torch.as_tensor(np.asarray(f["topk_logprobs"])[:c, :k].astype(np.float32))
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if has_topk:
            batch["topk_ids"], batch["topk_logprobs"] = topk_ids, topk_lp
        return batch
