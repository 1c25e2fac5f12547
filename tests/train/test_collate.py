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


def test_token_rows_cut_completions_and_keep_topk_aligned(tmp_path, teacher_dir):
    from r1distill.models import load_tokenizer
    from r1distill.prompts import render_prompt
    from r1distill.train import TrainConfig
    from r1distill.train.data import TokenData, prepare_tokens
    from train_fixtures import trace_rows, write_traces

    tok = load_tokenizer(str(teacher_dir))
    rows = trace_rows(3, lengths=[5, 40, 10])
    cfg = TrainConfig(input_dir=str(write_traces(tmp_path / "curated", rows)), cache_dir=str(tmp_path / "cache"))
    prompts = [render_prompt(tok, r["prompt"]) for r in rows]
    max_length = len(prompts[1]) + 8
    cache = prepare_tokens(cfg, tok, need_topk=True, retok=False)
    feats = TokenData(cache, max_length)
    # Row 0 fits; rows 1 and 2 keep the first 8 completion tokens, with their top-k.
    assert len(feats) == 3 and feats.truncated == 2 and feats.completion_tokens == 5 + 8 + 8 and feats.k == 4
    r1 = feats.row(1)
    assert r1["input_ids"].tolist() == prompts[1] + rows[1]["completion_ids"][:8]
    assert r1["prompt_len"] == len(prompts[1])
    assert r1["topk_ids"].tolist() == rows[1]["topk_ids"][:8] and r1["topk_logprobs"].dtype == np.float16
    np.testing.assert_array_equal(r1["topk_logprobs"], np.asarray(rows[1]["topk_logprobs"][:8], np.float16))
    batch = DistillCollator(tok.pad_token_id, feats)([{"idx": 0}, {"idx": 1}])
    pos = batch["labels"] != -100
    assert pos.sum().item() == 13 and torch.equal(batch["topk_ids"][..., 0][pos], batch["labels"][pos])
    # The cache is keyed by content: the same inputs find it, another max_length reads the same cache.
    assert prepare_tokens(cfg, tok, need_topk=True, retok=False) == cache
    assert len(TokenData(cache, 10_000)) == 3 and TokenData(cache, 10_000).truncated == 0
    # A prompt that fills max_length leaves nothing to learn: the row is dropped and counted as cut.
    plain = prepare_tokens(cfg, tok, need_topk=False, retok=False)
    assert plain != cache
    none = TokenData(plain, len(prompts[0]))
    assert len(none) == 0 and none.truncated == 3 and none.k is None
    # The collator can keep only the first entries of each stored top-k (train.loss.topk).
    two = DistillCollator(tok.pad_token_id, feats, topk=2)([{"idx": 1}])
    assert two["topk_ids"].shape[-1] == 2 and two["topk_ids"][0, len(prompts[1]):].tolist() == \
        [ids[:2] for ids in rows[1]["topk_ids"][:8]]
