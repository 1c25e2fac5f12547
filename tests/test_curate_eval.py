"""Curation and evaluation metrics on hand-written traces and outputs (no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from r1distill import curate
from r1distill.data.traces import CURATED_SCHEMA, check_schema, read_table, rows_to_table, write_table_atomic
from r1distill.eval_metrics import majority_correct
from r1distill.evaluate import summarize


def _row(pid, s, completion, answer="12", finish="stop", T=3):
    return {"prompt_id": pid, "sample_idx": s, "problem": "p", "answer": answer,
            "prompt": [{"role": "user", "content": "p"}], "completion": completion, "reasoning": None,
            "completion_ids": list(range(T)), "topk_ids": np.zeros((T, 2), np.int32),
            "topk_logprobs": np.full((T, 2), -0.7, np.float32), "finish_reason": finish, "num_tokens": T,
            "teacher": "t", "gen_config_hash": "h"}


def test_curate_counts_each_reject_reason(tmp_path):
    rows = [
        _row("a", 0, "7 + 5 = 12. The final answer is 12.", T=5),
        _row("a", 1, "So the answer is \\boxed{12}.", T=3),
        _row("a", 2, "The answer is 13.", T=3),  # incorrect
        _row("b", 0, "Tom has 7 + 5 = 12 apples and then", finish="length"),  # truncated
        _row("b", 1, "<think>I am thinking about it", T=4),  # unclosed <think>
        _row("b", 2, "I do not know.", T=4),  # no answer
        _row("d", 0, "The answer is 5.", answer=""),  # a gold answer that cannot be read: flagged, not "incorrect"
        {**_row("e", 0, "So the answer is \\boxed{12}.", T=3), "completion_ids": [5, -1, 7]},  # an unidentified token
    ]
    write_table_atomic(rows_to_table(rows), tmp_path / "traces" / "shard-00000.parquet")
    # Both prompt_ids share the problem text "p": keep problem dedup off so each row meets its own filter.
    out = curate.run(curate.CurateConfig(run_dir=str(tmp_path), max_per_problem=1, dedup_problems=False))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rejected"] == {**dict.fromkeys(curate.REASONS, 0), "unknown_tokens": 1, "truncated": 1,
                                 "unclosed_think": 1,
                                 "no_answer": 1, "gold_unparseable": 1, "incorrect": 1,
                                 "over_max_per_problem": 1}
    assert stats["gold_unparseable"] == 1
    kept = read_table(out)
    check_schema(kept, CURATED_SCHEMA, str(out))
    assert kept.num_rows == 1
    k = kept.to_pylist()[0]
    assert (k["sample_idx"], k["pred_answer"], k["correct"], k["reject_reason"]) == (1, "12", True, None)
    # The truncated row still ends in "12": it verifies, so it counts towards the pass rate.
    # Row e verifies too (its text is fine; its token ids are not).
    assert stats["correct"] == 4 and stats["teacher_pass_rate"] == pytest.approx((2 / 3 + 1 / 3 + 0 + 1) / 4)
    assert len((out / "rejected.jsonl").read_text().splitlines()) == 7


def test_curate_grades_asdiv_golds_with_units_by_their_value(tmp_path):
    rows = [_row("a", 0, "The answer is 15.", answer="15 (balls)"),
            _row("b", 0, "The answer is 9 cm.", answer="9 (cm)"), _row("c", 0, "The answer is 8.", answer="9 (cm)")]
    write_table_atomic(rows_to_table(rows), tmp_path / "traces" / "shard-00000.parquet")
    out = curate.run(curate.CurateConfig(run_dir=str(tmp_path), decontaminate=[], num_workers=1,
                                         dedup_problems=False))
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["kept"], stats["rejected"]["incorrect"], stats["gold_unparseable"]) == (2, 1, 0)


def test_curate_that_keeps_nothing_still_writes_its_funnel(tmp_path):
    """Every trace wrong: the error names stats.md and rejected.jsonl, which are written (every row, with pred_answer
    beside the gold), and a rerun curates again rather than "done"."""
    rows = [_row("a", 0, "The answer is 14.", answer="15 (balls)"), _row("b", 0, "The answer is 8.", answer="9 (cm)")]
    write_table_atomic(rows_to_table(rows), tmp_path / "traces" / "shard-00000.parquet")
    cfg = curate.CurateConfig(run_dir=str(tmp_path), decontaminate=[], num_workers=1, dedup_problems=False)
    out = cfg.out
    with pytest.raises(curate.UserError, match=r"kept no traces out of 2 .*curated/stats\.md.*rejected\.jsonl"):
        curate.run(cfg)
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(r["answer"], r["pred_answer"], r["reject_reason"]) for r in rejected] == [
        ("15 (balls)", "14", "incorrect"), ("9 (cm)", "8", "incorrect")]
    assert "| **kept** | | **0** |" in (out / "stats.md").read_text()
    assert json.loads((out / "stats.json").read_text())["kept"] == 0 and not list(out.glob("*.parquet"))
    with pytest.raises(curate.UserError, match="kept no traces"):  # not "already holds ... nothing to do"
        curate.run(cfg)
    assert not list(tmp_path.glob("curated.old-*"))  # the unfinished funnel is replaced, not set aside


def test_majority_vote_groups_equivalent_answers_and_breaks_ties_by_first_seen():
    assert majority_correct(["0.5", "\\frac12", "3"], [True, True, False])
    assert majority_correct(["1/2", "7", "7", "0.5"], [True, False, False, True]) is True
    assert majority_correct(["7", "1/2", "0.5", "7"], [False, True, True, False]) is False
    assert majority_correct([None, None, "4"], [False, False, True]) is True
    assert majority_correct([None, None], [False, False]) is False


def test_summarize_pass_at_1_is_the_mean_over_samples():
    samples = []
    for pid, verdicts in {"p1": [1, 1, 0, 0], "p2": [0, 0, 0, 1], "p3": [1, 1, 1, 1]}.items():
        for i, c in enumerate(verdicts):
            samples.append({"id": pid, "correct": bool(c), "pred_answer": "x" if c else str(i),
                            "num_tokens": 10 * (i + 1), "finish_reason": "length" if i == 3 else "stop"})
    m = summarize(samples)
    assert m["pass@1"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert m["maj@k"] == pytest.approx(2 / 3)  # p1: "x" twice wins; p2: four singletons, first ("0") wrong
    assert m["mean_tokens"] == pytest.approx(25.0) and m["truncated"] == pytest.approx(0.25)
    assert (m["problems"], m["k"]) == (3, 4)


def test_curate_keeps_the_compact_topk_format(tmp_path):
    import pyarrow.parquet as pq

    from r1distill.data.traces import shard_paths

    rows = [_row("a", 0, "So the answer is \\boxed{12}.", T=3)]
    write_table_atomic(rows_to_table(rows, topk_format="q8"), tmp_path / "traces" / "shard-00000.parquet")
    out = curate.run(curate.CurateConfig(run_dir=str(tmp_path), decontaminate=[]))
    assert "topk_lp_q8" in pq.ParquetFile(shard_paths(out)[0]).schema_arrow.names
    kept = read_table(out).to_pylist()
    assert len(kept) == 1 and np.allclose(np.array(kept[0]["topk_logprobs"], np.float32), -0.7, atol=0.01)
