"""SFT with a student whose tokenizer is not the teacher's: the targets are the completion text in the
student's tokens, not the teacher's stored ids."""

from __future__ import annotations

import shutil

import numpy as np
from transformers import AutoModelForCausalLM

from r1distill.models import load_tokenizer
from r1distill.train import build_trainer
from train_fixtures import student_dir, trace_rows, train_config, write_traces  # noqa: F401


def test_sft_retokenizes_for_another_tokenizer(tmp_path, student_dir):  # noqa: F811
    other = tmp_path / "other_student"
    shutil.copytree(student_dir, other)
    tok = load_tokenizer(str(other))
    tok.add_tokens(["<r1distill_extra>"])  # a different vocabulary: the teacher's ids no longer apply
    tok.save_pretrained(str(other))
    model = AutoModelForCausalLM.from_pretrained(str(other))
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(str(other))
    rows = trace_rows(3, lengths=[5, 5, 5], topk=False)
    texts = ["So 1 + 1 = 2. The answer is 2.", "Adding, 2 + 2 = 4.", "Six <r1distill_extra> twelve"]
    for row, text, finish in zip(rows, texts, ["stop", "length", "stop"]):
        row.update(completion=text, finish_reason=finish)
    traces = write_traces(tmp_path / "curated", rows)
    cfg = train_config(tmp_path, other, traces, objective="sft", teacher=str(student_dir))
    feats = build_trainer(cfg, str(other)).features
    tok = load_tokenizer(str(other))
    want = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    want = [want[0] + [tok.eos_token_id], want[1], want[2] + [tok.eos_token_id]]
    got = [feats.comp_ids[feats.comp_off[i]:feats.comp_off[i + 1]].tolist() for i in range(3)]
    assert got == want
    assert len(tok) - 1 in want[2]  # the student's own added token, which the teacher's ids could not hold

    # The same student tokenizer as the teacher's: the stored ids are kept as they are.
    cfg = train_config(tmp_path / "same", student_dir, traces, objective="sft", teacher=str(student_dir))
    feats = build_trainer(cfg, str(student_dir)).features
    assert np.array_equal(feats.comp_ids[:5], np.array(rows[0]["completion_ids"]))
