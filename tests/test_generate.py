"""The generate stage with the real built-in teacher: schema, exact top-k, resume, bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from r1distill import generate, generate_dir
from r1distill.config import UserError
from r1distill.data.problems import SourceConfig
from r1distill.data.traces import (
    TRACE_SCHEMA,
    check_schema,
    file_metadata,
    q8_error_bound,
    read_shard,
    read_table,
    shard_paths,
)
from r1distill.models import load_tokenizer
from r1distill.prompts import render_prompt
from teacher_forward import completion_logprobs


def _cfg(tmp_path, **kw) -> generate.GenerateConfig:
    base = dict(output_dir=str(tmp_path / "traces"), source=SourceConfig(name="synthetic", num_problems=3),
                num_samples=2, max_new_tokens=20, temperature=0.8, topk_logprobs=5, batch_size=6, shard_size=2)
    base.update(kw)
    return generate.GenerateConfig(**base)


@pytest.fixture(scope="module")
def traces(tmp_path_factory, teacher_dir):
    cfg = _cfg(tmp_path_factory.mktemp("gen"))
    generate.run(cfg)
    return cfg


def test_traces_follow_the_schema(traces):
    t = read_table(traces.out)
    check_schema(t, TRACE_SCHEMA, str(traces.out))
    assert t.num_rows == 6 and len(shard_paths(traces.out)) == 3  # one problem (2 samples) per shard
    rows = t.to_pylist()
    assert len({(r["prompt_id"], r["sample_idx"]) for r in rows}) == 6
    for r in rows:
        assert r["num_tokens"] == len(r["completion_ids"]) == len(r["topk_ids"]) == len(r["topk_logprobs"])
        assert all(len(x) == 5 for x in r["topk_ids"])
        assert r["finish_reason"] in ("stop", "length")
        assert r["finish_reason"] == "stop" or r["num_tokens"] == 20
        assert "Please reason step by step" in r["prompt"][-1]["content"]
    assert t.schema.field("topk_logprobs").type.value_type.value_type == "halffloat"


def test_stored_topk_equals_a_full_forward_pass(traces, teacher_dir, teacher_fp32):
    tok = load_tokenizer(str(teacher_dir))
    for r in read_table(traces.out).to_pylist()[:3]:
        full = completion_logprobs(teacher_fp32, render_prompt(tok, r["prompt"]), r["completion_ids"])  # (T, V)
        stored_ids = torch.tensor(r["topk_ids"]).long()
        stored = torch.tensor(r["topk_logprobs"], dtype=torch.float32)
        # float16 storage: about 3 significant digits.
        torch.testing.assert_close(full.gather(-1, stored_ids), stored, atol=1e-3, rtol=1e-3)
        kth = full.topk(5, -1).values[:, -1]
        assert bool((stored.min(-1).values >= kth - 1e-2).all()), "stored ids must be the top-k"
        # The sampled token's own log-prob, also where it is outside the top-5 (float16 storage).
        emitted = full.gather(-1, torch.tensor(r["completion_ids"])[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(r["token_logprobs"], dtype=torch.float32), emitted, atol=2e-3,
                                   rtol=1e-3)


def test_token_bytes_make_the_completion_s_bytes(traces, teacher_dir):
    """The byte spans of what the built-in teacher really generated: its tokens' own vocabulary bytes, one after
    another, are the completion's UTF-8 bytes; eos is 0 bytes; the shards name the tokenizer's fingerprint."""
    from r1distill.tokenbytes import fingerprint, token_bytes

    tok = load_tokenizer(str(teacher_dir))
    table = token_bytes(tok)
    rows = read_table(traces.out).to_pylist()
    assert all(r["token_bytes_ok"] for r in rows)
    for r in rows:
        widths = np.array(r["token_nbytes"])
        assert len(widths) == r["num_tokens"] and widths.sum() == len(r["completion"].encode())
        data, at = r["completion"].encode(), np.concatenate([[0], np.cumsum(widths)])
        for t, i in enumerate(r["completion_ids"]):
            assert data[at[t]:at[t + 1]] == table[i]
        if r["finish_reason"] == "stop":
            assert widths[-1] == 0
    assert {file_metadata(p)["r1distill.teacher_tokenizer"] for p in shard_paths(traces.out)} == {fingerprint(tok)}


def test_resume_skips_finished_and_redoes_missing(traces):
    before = read_table(traces.out).to_pylist()
    first = json.loads((traces.out / "summary.json").read_text())
    generate.run(traces)  # nothing left to do
    assert read_table(traces.out).num_rows == 6
    again = json.loads((traces.out / "summary.json").read_text())  # the speed of the session that generated
    assert again["generate_seconds"] == first["generate_seconds"] > 0 and again["new_tokens_per_s"] > 0
    shard_paths(traces.out)[1].unlink()  # as if the run died before this shard was renamed into place
    generate.run(traces)
    after = read_table(traces.out).to_pylist()
    assert len(after) == 6
    assert {(r["prompt_id"], r["sample_idx"]) for r in after} == {(r["prompt_id"], r["sample_idx"]) for r in before}


def test_a_different_config_refuses_to_resume(traces):
    changed = _cfg(traces.out.parent, temperature=0.3)
    with pytest.raises(UserError, match="different config"):
        generate.run(changed)


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _file_cfg(tmp_path, path, **kw) -> generate.GenerateConfig:
    return _cfg(tmp_path, source=SourceConfig(name="file", path=str(path)), num_samples=1, max_new_tokens=4,
                topk_logprobs=0, **kw)


def test_a_prompt_longer_than_the_context_is_skipped_and_counted(tmp_path, teacher_dir):
    path = tmp_path / "problems.jsonl"
    too_long = " ".join(["seven"] * 9000)  # the teacher's context is 8192 tokens
    _write_jsonl(path, [{"problem": "What is 2 + 3?", "answer": "5"}, {"problem": too_long, "answer": "7"},
                        {"problem": "What is 4 + 4?", "answer": "8"}])
    cfg = _file_cfg(tmp_path, path)
    generate.run(cfg)
    summary = json.loads((cfg.out / "summary.json").read_text())
    assert summary["skipped"] == {"prompt_too_long": 1}
    assert summary["rows"] == summary["problems"] == 2 and summary["new_tokens"] == summary["total_tokens"] > 0
    assert sum(summary["finish_reasons"].values()) == 2 and summary["new_tokens_per_s"] > 0
    assert summary["bytes_per_token"] > summary["topk_bytes_per_token"] >= 0
    assert too_long not in read_table(cfg.out, columns=["problem"]).column("problem").to_pylist()


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_malformed_problem_file_names_file_line_field_and_keeps_the_output(tmp_path, teacher_dir, overwrite):
    path = tmp_path / "problems.jsonl"
    good = [{"problem": "What is 2 + 3?", "answer": "5"}, {"problem": "What is 4 + 4?", "answer": "8"}]
    _write_jsonl(path, good)
    generate.run(_file_cfg(tmp_path, path))
    out = tmp_path / "traces"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _write_jsonl(path, [good[0], {"question": "What is 4 + 4?", "answer": "8"}])
    with pytest.raises(UserError, match=re.escape(f"{path}: line 2: field 'problem'")):
        generate.run(_file_cfg(tmp_path, path, overwrite=overwrite))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_summary_and_config_record_the_logprobs_kind(traces):
    summary = json.loads((traces.out / "summary.json").read_text())
    assert summary["logprobs_kind"] == "raw" and summary["unmapped_tokens"] == 0 and summary["topk_format"] == "exact"
    assert json.loads((traces.out / "r1distill_stamp.json").read_text())["logprobs_kind"] == "raw"
    assert {file_metadata(p)["r1distill.logprobs_kind"] for p in shard_paths(traces.out)} == {"raw"}


def test_a_different_logprobs_kind_refuses_to_resume(tmp_path, teacher_dir):
    one = SourceConfig(name="synthetic", num_problems=1)
    cfg = _cfg(tmp_path, source=one, max_new_tokens=4)
    generate.run(cfg)
    shard_paths(cfg.out)[0].unlink()  # leave work to do
    # A dir whose config records another kind than the backend gives is refused before anything is written.
    path = cfg.out / "r1distill_stamp.json"
    path.write_text(path.read_text().replace('"logprobs_kind": "raw"', '"logprobs_kind": "processed"'))
    with pytest.raises(UserError, match="holds traces with processed top-k log-probs, but the hf backend"):
        generate.run(cfg)
    assert shard_paths(cfg.out) == []

    # vLLM's logprobs_mode is a backend option (outside the config hash), so only the kind check stops a
    # switch from raw to processed; it does so from the options, before vllm (not installed here) is imported.
    raw = _cfg(tmp_path, output_dir=str(tmp_path / "vllm"), source=one, backend="vllm")
    processed = _cfg(tmp_path, output_dir=str(tmp_path / "vllm"), source=one, backend="vllm",
                     backend_options={"logprobs_mode": "processed_logprobs"})
    assert raw.hash() == processed.hash()
    generate_dir.prepare_dir(raw)  # the state a raw vLLM run leaves once its backend is up
    generate_dir.check_kind(raw, "raw", set())
    with pytest.raises(UserError, match="holds traces with raw top-k log-probs, but the vllm backend"):
        generate.run(processed)


def test_q8_traces_match_the_exact_ones(traces):
    """The same config but topk_format=q8 draws the same tokens; read back, its log-probs are the exact
    ones to within the q8 error bound (plus float16 rounding of both)."""
    q8 = _cfg(traces.out.parent, output_dir=str(traces.out.parent / "q8"), topk_format="q8")
    assert q8.hash() != traces.hash()
    generate.run(q8)
    check_schema(read_table(q8.out), TRACE_SCHEMA, str(q8.out))
    # Shards of the same name were drawn with the same seed (the resume test above redid one under a new name).
    common = sorted({p.name for p in shard_paths(traces.out)} & {p.name for p in shard_paths(q8.out)})
    assert len(common) >= 2
    exact = [r for n in common for r in read_shard(traces.out / n).to_pylist()]
    small = [r for n in common for r in read_shard(q8.out / n).to_pylist()]
    assert [(r["prompt_id"], r["completion_ids"], r["topk_ids"]) for r in small] == \
        [(r["prompt_id"], r["completion_ids"], r["topk_ids"]) for r in exact]
    for a, b in zip(exact, small):
        e, q = np.asarray(a["topk_logprobs"], np.float32), np.asarray(b["topk_logprobs"], np.float32)
        bound = q8_error_bound(e) + (np.abs(e) + np.abs(q)) * 2.0 ** -11
        assert (np.abs(q - e) <= bound + 1e-6).all()
    summary = json.loads((q8.out / "summary.json").read_text())
    assert summary["topk_format"] == "q8" and summary["logprobs_kind"] == "raw"
    exact_summary = json.loads((traces.out / "summary.json").read_text())
    assert summary["topk_bytes_per_token"] < exact_summary["topk_bytes_per_token"]
