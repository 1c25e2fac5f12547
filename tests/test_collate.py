"""Teacher top-k rows must land on the positions of the tokens they describe."""

from __future__ import annotations

import numpy as np
import torch

from r1distill.train.collate import DistillCollator


def test_topk_aligned_with_labels_and_padding_masked():
    feats = [
        {"input_ids": [5, 6, 7, 8, 9], "prompt_len": 2, "topk_ids": np.array([[7, 1], [8, 1], [9, 1]]),
         "topk_logprobs": np.array([[-0.1, -3], [-0.2, -3], [-0.3, -3]])},
        {"input_ids": [5, 6, 7], "prompt_len": 2, "topk_ids": np.array([[7, 2]]),
         "topk_logprobs": np.array([[-0.4, -2]])},
    ]
    b = DistillCollator(pad_token_id=0)(feats)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert b["labels"].tolist() == [[-100, -100, 7, 8, 9], [-100, -100, 7, -100, -100]]
    # Each labelled position holds the teacher's top-k for that very token (its first id is the token here).
    pos = b["labels"] != -100
    assert torch.equal(b["topk_ids"][..., 0][pos], b["labels"][pos])
    assert b["topk_logprobs"][0, 2:, 0].tolist() == [np.float32(-0.1), np.float32(-0.2), np.float32(-0.3)]
    assert b["topk_logprobs"][1, 3:].abs().sum() == 0
