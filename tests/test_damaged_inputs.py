"""Damaged inputs and bad options (issue 25): a one-line UserError naming the file or dir, found before anything
is written or moved aside; never a traceback, never a silently changed value."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from r1distill import curate
from r1distill.cli import main
from r1distill.config import UserError
from r1distill.data.traces import read_table, rows_to_table, write_table_atomic
from r1distill.train import run
from train_fixtures import trace_rows, train_config, write_traces


def _flip_page_bytes(path: Path, column: str) -> None:
    """Flip 3 bytes in the middle of `column`'s data page (its payload: the page header and the footer untouched)."""
    group = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(group.column(c) for c in range(group.num_columns)
                 if group.column(c).path_in_schema.split(".")[0] == column)
    end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
    at = (chunk.data_page_offset + end) // 2
    data = bytearray(path.read_bytes())
    data[at:at + 3] = bytes(b ^ 0x5A for b in data[at:at + 3])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _traces(n: int) -> list[dict]:
    """trace_rows (random top-k) with completions the curate filters keep: a boxed right answer."""
    return [{**r, "completion": f"So the answer is \\boxed{{{r['answer']}}}."} for r in trace_rows(n)]


@pytest.mark.parametrize("column", ["topk_logprobs", "topk_ids", "completion_ids"])
def test_a_changed_byte_in_a_data_page_is_an_error_naming_the_shard(tmp_path, column):
    shard = write_traces(tmp_path / "curated", trace_rows(8)) / "data-00000.parquet"
    _flip_page_bytes(shard, column)
    with pytest.raises(UserError, match=rf"^{re.escape(str(shard))}: cannot read .*CRC checksum"):
        read_table(tmp_path / "curated")


def test_curate_writes_checksummed_pages_and_stops_on_a_damaged_trace_shard(tmp_path, capsys):
    shard = tmp_path / "traces" / "shard-00000.parquet"
    write_table_atomic(rows_to_table(_traces(4)), shard)
    out = curate.run(curate.CurateConfig(run_dir=str(tmp_path), decontaminate=[], num_workers=1))
    kept = out / "data-00000.parquet"
    assert read_table(out).num_rows == 4
    _flip_page_bytes(kept, "topk_logprobs")  # curate's own (streamed) writer sets page checksums too
    with pytest.raises(UserError, match=rf"^{re.escape(str(kept))}: cannot read .*CRC checksum"):
        read_table(out)
    # A trace shard that is not whole Parquet (no footer): one line naming it, exit 2, through the CLI.
    _truncate(shard)
    capsys.readouterr()
    assert main(["curate", f"run_dir={tmp_path}", "curate.decontaminate=[]", "curate.overwrite=true"]) == 2
    err = capsys.readouterr().err
    assert f"{shard}: cannot read this Parquet file" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def _eval_student(run_dir: Path, capsys) -> str:
    """`r1distill eval` of run_dir/student on 2 synthetic problems: it must stop with one line (returned)."""
    bench = "eval.benchmarks=[{name: synthetic, split: test, level: easy, num_problems: 2}]"
    capsys.readouterr()
    assert main(["eval", f"run_dir={run_dir}", "eval.models=[student]", bench, "eval.device=cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_eval_of_a_student_killed_while_saving_names_what_is_missing(tmp_path, student_dir, capsys):
    """config.json written, model.safetensors cut short, the tokenizer not yet written (save_student's order)."""
    student = tmp_path / "a" / "student"
    student.mkdir(parents=True)
    shutil.copy(student_dir / "config.json", student)
    (student / "model.safetensors").write_bytes((student_dir / "model.safetensors").read_bytes()[:100_000])
    err = _eval_student(tmp_path / "a", capsys)
    assert f"Model dir {student} is incomplete" in err and "model.safetensors is truncated" in err
    assert "no tokenizer" in err
    student = tmp_path / "b" / "student"  # the tokenizer whole, the weights gone
    student.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(student_dir / name, student)
    err = _eval_student(tmp_path / "b", capsys)
    assert f"Model dir {student} is incomplete" in err and "model.safetensors is missing" in err


def test_a_damaged_curated_shard_leaves_the_finished_student_in_place(tmp_path, student_dir):
    traces = write_traces(tmp_path / "curated", trace_rows(4))
    out = run(train_config(tmp_path, student_dir, traces))
    stamp = (out / "r1distill_stamp.json").read_text()
    weights = (out / "model.safetensors").stat().st_mtime_ns
    shard = traces / "data-00000.parquet"
    _truncate(shard)
    with pytest.raises(UserError, match=rf"^{re.escape(str(shard))}: cannot read this Parquet file"):
        run(train_config(tmp_path, student_dir, traces, learning_rate=2e-3))
    assert not list(tmp_path.glob("student.old-*"))
    assert (out / "r1distill_stamp.json").read_text() == stamp and json.loads(stamp)["complete"]
    assert (out / "model.safetensors").stat().st_mtime_ns == weights


@pytest.mark.parametrize("overrides", [["generate.backend_options={nosuch: 1}"],
                                       ["generate.backend=openai", "generate.backend_options={endpoint: nosuch}"],
                                       ["generate.dtype=float64"]])
def test_bad_generate_options_create_no_output_dir(tmp_path, capsys, overrides):
    assert main(["generate", f"run_dir={tmp_path}", *overrides]) == 2
    assert not (tmp_path / "traces").exists()  # no dir, no config.yaml: the options are checked first
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
