"""Bad training input stops with one clear line naming the file, row and field, before any model is loaded."""

from __future__ import annotations

import pyarrow as pa
import pytest

from r1distill.cli import main
from r1distill.config import UserError
from r1distill.data.traces import CURATED_SCHEMA, rows_to_table, write_table_atomic
from r1distill.models import StudentConfig
from r1distill.train import run
from train_fixtures import trace_rows, train_config, write_traces


def test_kd_without_topk_columns(tmp_path, student_dir, capsys):
    traces = write_traces(tmp_path / "null_topk", trace_rows(3, topk=False))
    with pytest.raises(UserError, match=r"null_topk: topk_ids is empty in all 3 rows.*generate.topk_logprobs > 0"):
        run(train_config(tmp_path, student_dir, traces))
    # A table of the user's own, without the columns at all.
    table = rows_to_table(trace_rows(2), CURATED_SCHEMA).drop_columns(["topk_ids", "topk_logprobs"])
    write_table_atomic(table, tmp_path / "own" / "data-00000.parquet")
    with pytest.raises(UserError, match=r"own/data-00000.parquet: no topk_ids/topk_logprobs column.*objective=kd"):
        run(train_config(tmp_path, student_dir, tmp_path / "own"))
    # sft reads the same table without complaint up to training (checked here through the CLI's exit code).
    args = ["train", f"run_dir={tmp_path}", f"train.student.name={student_dir}", f"train.input_dir={traces}",
            "train.objective=kd"]
    capsys.readouterr()  # what the runs above printed
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "topk_ids is empty" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_topk_length_differs_from_completion(tmp_path, student_dir):
    rows = trace_rows(5, lengths=[12] * 5)
    write_traces(tmp_path / "a", rows[:2])
    bad = rows[2:]
    bad[1]["topk_ids"] = bad[1]["topk_ids"][:11]
    bad[1]["topk_logprobs"] = bad[1]["topk_logprobs"][:11]
    write_table_atomic(rows_to_table(bad, CURATED_SCHEMA), tmp_path / "a" / "data-00001.parquet")
    # The third row of the dataset is row 1 of the second shard.
    with pytest.raises(UserError, match=r"data-00001.parquet row 1 \(prompt_id p3, sample 0\): topk_ids has 11 "
                                        r"positions but completion_ids has 12 tokens"):
        run(train_config(tmp_path, student_dir, tmp_path / "a"))
    rows = trace_rows(5, lengths=[12] * 5)
    rows[4]["topk_ids"][5] = rows[4]["topk_ids"][5][:3]  # one position with 3 ids instead of 4
    # (our writer refuses ragged top-k; a table of the user's own may hold it)
    write_table_atomic(pa.Table.from_pylist(rows, schema=CURATED_SCHEMA), tmp_path / "b" / "data-00000.parquet")
    with pytest.raises(UserError, match=r"row 4 \(prompt_id p4, sample 0\): the top-k lists have different lengths"):
        run(train_config(tmp_path, student_dir, tmp_path / "b"))
    rows = trace_rows(2)
    rows[1]["topk_ids"][0][2] = 60000  # beyond the 49,152-token vocabulary
    write_traces(tmp_path / "c", rows)
    with pytest.raises(UserError, match=r"row 1 .*top-k id 60000 is outside the student's vocabulary of 49152"):
        run(train_config(tmp_path, student_dir, tmp_path / "c"))


def test_empty_dataset(tmp_path, student_dir):
    write_table_atomic(pa.Table.from_pylist([], schema=CURATED_SCHEMA), tmp_path / "empty" / "data-00000.parquet")
    with pytest.raises(UserError, match=r"empty: 0 rows to train on \(curation kept none"):
        run(train_config(tmp_path, student_dir, tmp_path / "empty", objective="sft"))
    traces = write_traces(tmp_path / "t", trace_rows(3))
    # The chat-rendered prompts are ~30 tokens: with max_length 8 nothing of any completion is left.
    with pytest.raises(UserError, match=r"all 3 rows were dropped.*train.max_length=8; raise it"):
        run(train_config(tmp_path, student_dir, traces, max_length=8))
    with pytest.raises(UserError, match=r"No Parquet shards in .*nothing"):
        run(train_config(tmp_path, student_dir, tmp_path / "nothing"))
    # Said before any model is loaded or derived: no student_init was written for a student to derive.
    derive = train_config(tmp_path / "d", student_dir, tmp_path / "nothing")
    derive.student = StudentConfig(derive_from=str(student_dir), num_layers=1)
    with pytest.raises(UserError, match=r"No Parquet shards in .*nothing"):
        run(derive)
    assert not (tmp_path / "d" / "student_init").exists()


def test_topk_logprobs_that_carry_nothing(tmp_path, student_dir, capsys):
    import json
    import math

    # Every log-prob NaN, +inf or -inf: KD has nothing to learn from, and the shard is named.
    rows = trace_rows(3, lengths=[12] * 3)
    for r, bad in zip(rows, (math.nan, math.inf, -math.inf)):
        r["topk_logprobs"] = [[bad] * 4 for _ in r["topk_logprobs"]]
    write_traces(tmp_path / "nan", rows)
    with pytest.raises(UserError, match=r"nan/data-00000.parquet: none of the teacher's top-k log-probs at its 36 "
                                        r"completion tokens is usable \(96 NaN or \+inf"):
        run(train_config(tmp_path, student_dir, tmp_path / "nan"))
    # A log-prob above 0 (beyond fp16 rounding) is not a log-prob: the row is named.
    rows = trace_rows(3, lengths=[12] * 3)
    rows[2]["topk_logprobs"][4][1] = 0.5
    write_traces(tmp_path / "high", rows)
    with pytest.raises(UserError, match=r"high/data-00000.parquet row 2 \(prompt_id p2, sample 0\): top-k log-prob "
                                        r"0.5 is above 0"):
        run(train_config(tmp_path, student_dir, tmp_path / "high"))
    # Some broken entries: counted, one line, and training goes on (a log-prob of ~0 rounded up is kept).
    rows = trace_rows(4, lengths=[12] * 4)
    rows[1]["topk_logprobs"][3][1:3] = [math.nan, math.nan]
    rows[2]["topk_logprobs"][0][0] = math.inf
    rows[2]["topk_logprobs"][5] = [-math.inf] * 4  # a position with no entry at all: CE only there
    rows[3]["topk_logprobs"][2][0] = 5e-4
    write_traces(tmp_path / "some", rows)
    capsys.readouterr()
    cfg = train_config(tmp_path, student_dir, tmp_path / "some")
    run(cfg)
    out = " ".join("".join(capsys.readouterr()).split())  # rich wraps long lines
    assert ("3 top-k log-probs are NaN or +inf (2 of 48 positions, 2 rows): read as missing entries; 1 positions "
            "have no usable entry") in out
    summary = json.loads((cfg.out / "summary.json").read_text())
    assert summary["steps"] == 2 and math.isfinite(summary["train_loss"])
    log = [json.loads(x) for x in (cfg.out / "train_log.jsonl").read_text().splitlines()][:-1]
    assert all(math.isfinite(r["kd"]) and r["kd"] > 0 for r in log)
    (meta,) = [json.loads(p.read_text()) for p in (tmp_path / "token_cache").glob("*/meta.json")
               if "some" in json.loads(p.read_text())["shards"][0]]
    assert meta["counts"] == {"topk_positions": 48, "topk_invalid_entries": 3, "topk_invalid_positions": 2,
                              "topk_invalid_rows": 2, "topk_empty_positions": 1}
