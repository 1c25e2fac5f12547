"""The score stage with the real built-in teacher: exact against generate's own top-k, re-tokenized text, resume
after SIGKILL, and offline KD on what it writes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from r1distill import generate, score
from r1distill.backends.hf import topk_of_hidden
from r1distill.config import ConfigError, UserError
from r1distill.data.problems import SourceConfig
from r1distill.data.traces import (
    KIND_KEY,
    TOKENIZER_KEY,
    TRACE_SCHEMA,
    check_schema,
    file_metadata,
    q8_error_bound,
    read_table,
    shard_paths,
    write_table_atomic,
)
from r1distill.models import load_tokenizer
from r1distill.prompts import render_prompt
from r1distill.tokenbytes import fingerprint
from teacher_forward import completion_logprobs, topk_agreement

K = 5


@pytest.fixture(scope="module")
def traces(tmp_path_factory, teacher_dir):
    """Traces the built-in teacher generated in fp32 (the suite's CPU dtype), 3 shards."""
    cfg = generate.GenerateConfig(output_dir=str(tmp_path_factory.mktemp("gen") / "traces"),
                                  source=SourceConfig(name="synthetic", num_problems=3), num_samples=2,
                                  max_new_tokens=24, temperature=0.8, topk_logprobs=K, batch_size=6, shard_size=2)
    generate.run(cfg)
    return Path(cfg.out)


def _score(tmp_path, inp, **kw) -> score.ScoreConfig:
    return score.ScoreConfig(input_dir=str(inp), output_dir=str(tmp_path / "scored"), topk_logprobs=K, **kw)


def test_topk_of_hidden_equals_a_full_log_softmax_in_chunks():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden, targets = torch.randn(23, 8), torch.randint(0, 50, (23,))
    ids, lps, chosen = topk_of_hidden(hidden, targets, head, k=4, chunk=5)  # 5 chunks, the last of 3
    full = torch.log_softmax(head(hidden), -1)
    torch.testing.assert_close(lps, full.topk(4, -1).values)
    assert torch.equal(ids.long(), full.topk(4, -1).indices) and ids.dtype == torch.int32
    torch.testing.assert_close(chosen, full.gather(-1, targets[:, None]).squeeze(-1))
    capped = topk_of_hidden(hidden, targets, head, k=4, chunk=5, softcap=2.0)[1]
    torch.testing.assert_close(capped, torch.log_softmax(torch.tanh(head(hidden) / 2) * 2, -1).topk(4, -1).values)


def test_scoring_generate_s_traces_gives_generate_s_own_topk(traces, tmp_path):
    cfg = _score(tmp_path, traces, batch_size=4)
    out = score.run(cfg)
    gen, got = read_table(traces).to_pylist(), read_table(out).to_pylist()
    assert len(got) == len(gen) == 6 and [s.name for s in shard_paths(out)] == [s.name for s in shard_paths(traces)]
    check_schema(read_table(out), TRACE_SCHEMA, str(out))
    kl, differ, compared = [], 0, 0
    for g, s in zip(gen, got):
        assert s["completion_ids"] == g["completion_ids"]  # its own tokens: the shard's tokenizer is the teacher's
        assert (s["prompt_id"], s["sample_idx"], s["completion"]) == (g["prompt_id"], g["sample_idx"], g["completion"])
        m, d, c = topk_agreement(g, s)
        kl.append(m)
        differ, compared = differ + d, compared + c
        np.testing.assert_allclose(np.asarray(s["token_logprobs"], np.float32),
                                   np.asarray(g["token_logprobs"], np.float32), atol=2e-3)
        assert s["token_nbytes"] == g["token_nbytes"] and s["token_bytes_ok"] is True
    assert float(np.mean(kl)) < 1e-4, np.mean(kl)
    assert differ == 0 and compared > 6 * 10 * K // 2, (differ, compared)
    meta = file_metadata(shard_paths(out)[0])
    assert meta[KIND_KEY] == "raw" and meta[score.SCORER_KEY] == "smollm2-135m-instruct"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 6 and summary["retokenized_rows"] == 0 and summary["tokens"] == sum(
        len(r["completion_ids"]) for r in gen)
    # a rerun has nothing to do, and says so
    assert score.run(cfg) == out and json.loads((out / "summary.json").read_text())["rows"] == 6


def test_text_only_traces_are_tokenized_as_the_teacher_would_end_them(traces, tmp_path, teacher_dir, teacher_fp32):
    """Traces without ids of the teacher's tokenizer (imported, another tokenizer): the completion text in the
    teacher's tokens, eos after a clean stop, none after a cut-off, scored against a plain forward pass; q8."""
    table = read_table(traces)
    rows = table.to_pylist()
    rows[0]["finish_reason"], rows[1]["finish_reason"] = "stop", "length"
    for r in rows:
        r.update(completion_ids=None, topk_ids=None, topk_logprobs=None, teacher="someone's API")
    inp = tmp_path / "text"
    write_table_atomic(pa.Table.from_pylist(rows, schema=table.schema.remove_metadata()), inp / "data-00000.parquet")
    assert TOKENIZER_KEY not in file_metadata(inp / "data-00000.parquet")
    out = score.run(_score(tmp_path, inp, topk_format="q8"))
    tok = load_tokenizer(str(teacher_dir))
    got = read_table(out).to_pylist()
    for r, s in zip(rows, got):
        text_ids = tok(r["completion"], add_special_tokens=False)["input_ids"]
        assert s["completion_ids"] == text_ids + ([tok.eos_token_id] if r["finish_reason"] == "stop" else [])
        assert s["num_tokens"] == len(s["completion_ids"]) == len(s["topk_ids"]) and s["teacher"] == "someone's API"
    for s in got[:2]:
        full = completion_logprobs(teacher_fp32, render_prompt(tok, s["teacher_prompt"]), s["completion_ids"])
        assert torch.equal(torch.tensor(s["topk_ids"])[:, 0].long(), full.argmax(-1))
        exact = full.gather(-1, torch.tensor(s["topk_ids"]).long()).numpy()
        err = np.abs(np.asarray(s["topk_logprobs"], np.float32) - exact)  # q8: within its error bound
        assert (err <= q8_error_bound(exact) + 1e-4).all(), float(err.max())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["retokenized_rows"] == 6 and file_metadata(shard_paths(out)[0])[TOKENIZER_KEY] == fingerprint(tok)


def test_rows_past_the_context_are_left_out_and_counted(traces, tmp_path, monkeypatch):
    from r1distill.backends.hf import HFBackend

    lengths = {len(r["completion_ids"]) for r in read_table(traces).to_pylist()}
    monkeypatch.setattr(HFBackend, "context_length", property(lambda self: 0))
    out = score.run(_score(tmp_path, traces))
    assert read_table(out).num_rows == 0 and lengths
    assert json.loads((out / "summary.json").read_text())["skipped"] == {"too_long": 6}


def test_bad_input_is_one_line_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="No Parquet shards"):
        score.run(_score(tmp_path, tmp_path / "nothing"))
    write_table_atomic(pa.table({"prompt": [[{"role": "user", "content": "hi"}]]}), tmp_path / "x" / "a.parquet")
    with pytest.raises(UserError, match=r"a\.parquet: missing column 'completion'"):
        score.run(_score(tmp_path, tmp_path / "x"))
    assert not (tmp_path / "scored").exists()
    with pytest.raises(ConfigError, match="max_logprobs"):
        score.ScoreConfig(backend="vllm", topk_logprobs=40)


def test_a_killed_score_resumes_without_losing_or_doubling_a_row(traces, tmp_path):
    """SIGKILL once the first output shard is in place; the rerun scores the rest: every row once."""
    out = tmp_path / "scored"
    cmd = [sys.executable, "-m", "r1distill.cli", "score", f"score.input_dir={traces}", f"score.output_dir={out}",
           f"score.topk_logprobs={K}", "score.batch_size=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not shard_paths(out) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(shard_paths(out))
    assert 1 <= first < 3, first  # killed mid-way
    score.run(score.ScoreConfig(input_dir=str(traces), output_dir=str(out), topk_logprobs=K))
    pairs = [(r["prompt_id"], r["sample_idx"]) for r in read_table(out).to_pylist()]
    assert len(pairs) == len(set(pairs)) == 6
    assert not list(out.glob(".*.tmp"))


def test_workers_split_the_shards(traces, tmp_path):
    for i in (1, 0):
        score.run(_score(tmp_path, traces, shard=f"{i}/2"))
    assert [s.name for s in shard_paths(tmp_path / "scored")] == [s.name for s in shard_paths(traces)]
    assert read_table(tmp_path / "scored").num_rows == 6
    assert json.loads((tmp_path / "scored" / "r1distill_stamp.json").read_text())["complete"] is True


def test_offline_kd_on_scored_traces_is_kd_on_generate_s_traces(traces, tmp_path):
    """train.objective=kd reads scored traces unchanged, and since they hold generate's top-k, the same student
    trained on either set has the same loss."""
    from r1distill import train
    from r1distill.models import StudentConfig
    from r1distill.train.config import TrainConfig

    out = score.run(_score(tmp_path, traces))
    losses = []
    for name, inp in (("gen", traces), ("scored", out)):
        cfg = TrainConfig(run_dir=str(tmp_path / name), input_dir=str(inp), objective="kd", epochs=1, batch_size=2,
                          student=StudentConfig(derive_from="teacher", num_layers=2), report_to=[],
                          cache_dir=str(tmp_path / "cache"), init_dir=str(tmp_path / "init"))
        student = Path(train.run(cfg))
        losses.append(json.loads((student / "summary.json").read_text())["train_loss"])
    assert np.isfinite(losses[0]) and losses[0] > 0
    assert abs(losses[0] - losses[1]) < 1e-3 * losses[0], losses
