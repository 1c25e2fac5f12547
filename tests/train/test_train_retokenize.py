"""SFT with a student whose tokenizer is not the teacher's: the targets are the completion text in the
student's tokens, not the teacher's stored ids."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from transformers import AutoModelForCausalLM

from r1distill.models import load_tokenizer
from r1distill.train import build_trainer
from train_fixtures import trace_rows, train_config, write_traces


def test_sft_retokenizes_for_another_tokenizer(tmp_path, student_dir):
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
    feats = build_trainer(cfg, str(other)).data
    tok = load_tokenizer(str(other))
    want = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    want = [want[0] + [tok.eos_token_id], want[1], want[2] + [tok.eos_token_id]]
    got = [feats.row(i)["input_ids"][feats.row(i)["prompt_len"]:].tolist() for i in range(3)]
    assert got == want
    assert len(tok) - 1 in want[2]  # the student's own added token, which the teacher's ids could not hold

    # The same student tokenizer as the teacher's: the stored ids are kept as they are.
    cfg = train_config(tmp_path / "same", student_dir, traces, objective="sft", teacher=str(student_dir))
    feats = build_trainer(cfg, str(student_dir)).data
    r0 = feats.row(0)
    assert np.array_equal(r0["input_ids"][r0["prompt_len"]:], np.array(rows[0]["completion_ids"]))


def test_only_a_missing_teacher_tokenizer_means_another_tokenizer(monkeypatch, student_dir):
    from huggingface_hub.errors import RepositoryNotFoundError

    import r1distill.train.data as train
    from r1distill.config import UserError

    tok = load_tokenizer(str(student_dir))

    def not_a_model(name):  # what transformers raises for a name the hub does not know (deepseek-reasoner)
        import httpx2 as httpx

        response = httpx.Response(404, request=httpx.Request("GET", f"https://huggingface.co/{name}"))
        try:
            raise RepositoryNotFoundError("404 Client Error: Repository Not Found", response=response)
        except RepositoryNotFoundError as e:
            raise OSError(f"{name} is not a local folder and is not a valid model identifier") from e

    monkeypatch.setattr(train, "load_tokenizer", not_a_model)
    assert train.same_tokenizer(tok, "deepseek-reasoner") is False

    def hub_down(name):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(train, "load_tokenizer", hub_down)
    with pytest.raises(UserError, match=r"cannot tell whether the teacher's \(Qwen/Qwen2.5-7B\) tokenizer.*couldn't "
                                        r"connect.*train.retokenize"):
        train.same_tokenizer(tok, "Qwen/Qwen2.5-7B")


def test_kd_on_processed_logprobs_warns_unless_meant(tmp_path, student_dir, capsys):
    from r1distill.data.traces import CURATED_SCHEMA, KIND_KEY, rows_to_table, write_table_atomic

    d = tmp_path / "curated"
    write_table_atomic(rows_to_table(trace_rows(2), CURATED_SCHEMA), d / "data-00000.parquet",
                       metadata={KIND_KEY: "processed"})
    build_trainer(train_config(tmp_path / "a", student_dir, d), str(student_dir))
    out = " ".join("".join(capsys.readouterr()).split())  # rich wraps long lines
    assert "holds 'processed' top-k log-probs" in out and "train.allow_processed_logprobs" in out
    build_trainer(train_config(tmp_path / "b", student_dir, d, allow_processed_logprobs=True), str(student_dir))
    assert "holds 'processed'" not in " ".join("".join(capsys.readouterr()).split())
    write_table_atomic(rows_to_table(trace_rows(2), CURATED_SCHEMA), d / "data-00000.parquet",
                       metadata={KIND_KEY: "raw"})
    build_trainer(train_config(tmp_path / "c", student_dir, d), str(student_dir))
    assert "holds 'processed'" not in " ".join("".join(capsys.readouterr()).split())
