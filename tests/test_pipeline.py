"""End to end: `r1distill run` on the tiny recipe, through the real CLI, then a rerun that skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1distill.cli import main

pytestmark = pytest.mark.slow  # r1distill run of the tiny recipe end to end

TINY = Path(__file__).with_name("tiny.yaml")


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    return tiny_run  # conftest runs the tiny recipe once per session


def test_every_stage_wrote_its_outputs(run_dir):
    gen = json.loads((run_dir / "traces" / "summary.json").read_text())
    assert gen["rows"] == 12 and gen["problems"] == 6
    stats = json.loads((run_dir / "curated" / "stats.json").read_text())
    assert stats["total"] == 12 and stats["kept"] == 12  # the tiny recipe keeps everything
    assert (run_dir / "student" / "model.safetensors").exists()
    assert (run_dir / "student_init" / "model.safetensors").exists()
    log = [json.loads(x) for x in (run_dir / "student" / "train_log.jsonl").read_text().splitlines()]
    assert any("kd" in rec and "ce" in rec for rec in log)
    for stage in ("traces", "curated", "student", "eval"):  # one stamp per stage dir, with `run`'s record in it
        record = json.loads((run_dir / stage / "r1distill_stamp.json").read_text())
        assert record["format"] == 2 and record["run"]["seconds"] > 0 and len(record["run"]["hash"]) == 16
        assert ("stamp" in record) == (stage != "eval")  # eval stamps each result file, not its dir
    assert not list(run_dir.rglob(".r1distill_done.json"))


def test_eval_and_report_cover_three_models(run_dir):
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert list(summary) == ["teacher", "student_init", "student"]
    for model in summary.values():
        r = model["synthetic-easy"]
        assert (r["problems"], r["samples"]) == (4, 4) and 0.0 <= r["pass@1"] <= 1.0
    for model in summary:
        lines = (run_dir / "eval" / model / "synthetic-easy.jsonl").read_text().splitlines()
        assert len(lines) == 4
    report = (run_dir / "report.md").read_text()
    for title in ("| teacher |", "| student before training |", "| student after training |"):
        assert title in report
    assert f"{summary['teacher']['synthetic-easy']['pass@1']:.3f}" in report


def test_rerun_skips_finished_stages(run_dir, capsys):
    before = (run_dir / "student" / "model.safetensors").stat().st_mtime_ns
    assert main(["run", str(TINY), f"run_dir={run_dir}"]) == 0
    assert (run_dir / "student" / "model.safetensors").stat().st_mtime_ns == before
    assert capsys.readouterr().err.count("skipped") == 4


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    assert main(["run", str(TINY), "generate.num_sample=2"]) == 2
    err = capsys.readouterr().err
    assert "Unknown key 'num_sample'" in err and "Traceback" not in err
    assert main(["eval", f"run_dir={tmp_path}", "eval.models=[student]"]) == 2
    assert "run train first" in capsys.readouterr().err


def test_models_lists_the_built_in_teacher(teacher_dir, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "cached" in out and "Apache-2.0" in out
