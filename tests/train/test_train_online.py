"""Online KD (a teacher model beside the student) and the vocabulary checks between teacher and student."""

from __future__ import annotations

import json
import shutil

import pytest

from r1distill.config import UserError
from r1distill.models import load_tokenizer
from r1distill.train import build_trainer, run
from train_fixtures import trace_rows, train_config, write_traces


@pytest.fixture(scope="module")
def resized_dir(tmp_path_factory, student_dir):
    """The 1-layer student with 64 padded embedding rows (49,216 vs its tokenizer's 49,152), like families
    whose checkpoints pad the vocabulary to a multiple (e.g. 151,936 vs 152,064)."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("resized")
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    model.resize_token_embeddings(model.config.vocab_size + 64)
    model.save_pretrained(out)
    load_tokenizer(str(student_dir)).save_pretrained(out)
    return out


def _steps(cfg, student, n: int = 1) -> list[dict]:
    trainer = build_trainer(cfg, str(student)).trainer
    trainer.args.max_steps = n
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h]


def test_padded_vocabulary_is_aligned_to_the_tokenizer(tmp_path, student_dir, resized_dir):
    traces = write_traces(tmp_path / "traces", trace_rows(4))
    ref = _steps(train_config(tmp_path / "a", student_dir, traces, batch_size=4), student_dir)[0]
    # The padded rows are dropped from the softmax: the same loss and gradient as the unpadded student, chunked
    # or with full logits (with them the loss would change: 64 more logits in each normaliser).
    for i, chunk_size in enumerate((1024, 0)):
        got = _steps(train_config(tmp_path / f"b{i}", resized_dir, traces, batch_size=4, chunk_size=chunk_size),
                     resized_dir)[0]
        for key in ("loss", "ce", "kd", "grad_norm"):
            assert got[key] == pytest.approx(ref[key], rel=1e-5), (chunk_size, key)
    # Online, a 49,152-row teacher against the 49,216-row student with the same weights: no divergence at all.
    online = _steps(train_config(tmp_path / "c", resized_dir, traces, batch_size=4, objective="kd_online",
                                 teacher=str(student_dir)), resized_dir)[0]
    assert online["kd"] == pytest.approx(0.0, abs=1e-6) and online["ce"] == pytest.approx(ref["ce"], rel=1e-5)


def test_cross_tokenizer_kd_is_refused(tmp_path, student_dir):
    tok = load_tokenizer(str(student_dir))
    tok.add_tokens(["<extra_token>"])
    tok.save_pretrained(tmp_path / "other_tok")
    shutil.copy(student_dir / "config.json", tmp_path / "other_tok")  # a model dir's files, without weights
    traces = write_traces(tmp_path / "traces", trace_rows(2))
    for objective in ("kd", "kd_online"):
        with pytest.raises(UserError, match="tokenizers differ.*cross-tokenizer KD is not in this objective"):
            run(train_config(tmp_path, student_dir, traces, objective=objective, teacher=str(tmp_path / "other_tok")))


@pytest.mark.parametrize("chunk_size", [1024, 0])
def test_online_kd_with_the_student_as_teacher_starts_at_zero(tmp_path, student_dir, chunk_size):
    traces = write_traces(tmp_path / "traces", trace_rows(4))
    out = run(train_config(tmp_path, student_dir, traces, objective="kd_online", teacher=str(student_dir),
                           divergence="reverse_kl", chunk_size=chunk_size, teacher_device="cpu"))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    # Step 1: the student is its teacher's copy, so KD is 0; after one update it has moved away.
    assert log[0]["kd"] == pytest.approx(0.0, abs=1e-6) and log[0]["ce"] > 1.0
    assert log[0]["loss"] == pytest.approx(0.5 * log[0]["ce"], rel=1e-6)
    assert log[1]["kd"] > 1e-4


def test_online_kd_from_the_built_in_teacher(tmp_path, student_dir, teacher_dir):
    traces = write_traces(tmp_path / "traces", trace_rows(4))
    cfg = train_config(tmp_path, student_dir, traces, objective="kd_online", teacher=str(teacher_dir), chunk_size=16,
                       divergence="jsd", alpha=0.0)
    (step,) = _steps(cfg, student_dir, n=1)
    # A 1-layer student against the 30-layer teacher: a real, finite divergence that is the whole loss (α = 0).
    assert 0.01 < step["kd"] < 1.0 and step["loss"] == pytest.approx(step["kd"], rel=1e-5)
