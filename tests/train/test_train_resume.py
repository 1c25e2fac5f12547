"""`r1distill train` SIGKILLed after a checkpoint, then `--resume`: the same steps and final loss as a run
that was never interrupted (CPU training is deterministic)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from r1distill.cli import main
from train_fixtures import trace_rows, train_killed_at_first_checkpoint, write_traces

pytestmark = pytest.mark.slow  # a training process killed and resumed


def _overrides(run_dir, student, traces) -> list[str]:
    # 8 rows, batch 2, 1 epoch: 4 steps; a checkpoint every 2; cosine schedule, so the resumed scheduler matters.
    return [f"run_dir={run_dir}", f"train.student.name={student}", f"teacher={student}", f"train.input_dir={traces}",
            "train.epochs=1", "train.batch_size=2", "train.learning_rate=1e-3", "train.warmup_ratio=0.2",
            "train.report_to=[]", "train.save_steps=2", "train.save_total_limit=1", "train.max_length=64"]


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, student_dir):
    traces = write_traces(tmp_path / "traces", trace_rows(8, seed=3))
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    assert main(["train", *_overrides(ref_dir, student_dir, traces)]) == 0
    ref = _log(ref_dir / "student")

    work = run_dir / "student.work"
    ckpt = train_killed_at_first_checkpoint(["train", *_overrides(run_dir, student_dir, traces)], work,
                                            tmp_path / "killed.log")
    assert ckpt is not None and not (run_dir / "student" / "model.safetensors").exists()
    assert ckpt.name == "checkpoint-2"  # killed as soon as the first checkpoint was complete

    # Mark the checkpoint's saved history: the resumed run's log must carry it (a run that silently started
    # over would log the same numbers as the reference, since training is deterministic).
    state_file = ckpt / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"][0]["kd"] = -1.0
    state_file.write_text(json.dumps(state))

    assert main(["train", "--resume", *_overrides(run_dir, student_dir, traces)]) == 0
    out = run_dir / "student"
    resumed = _log(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["resumed_from"] == ckpt.name
    # Steps 1..4 once each (those before the checkpoint come from its saved history), then the summary.
    assert [r["step"] for r in resumed[:-1]] == [1, 2, 3, 4] and resumed[-1]["summary"] is True
    assert resumed[0]["kd"] == -1.0 and ref[0]["kd"] > 0
    resumed[0]["kd"] = ref[0]["kd"]
    for a, b in zip(resumed[:-1], ref[:-1]):
        for key in ("loss", "ce", "kd", "learning_rate"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a["step"], key)
    w, w_ref = load_file(out / "model.safetensors"), load_file(ref_dir / "student" / "model.safetensors")
    for key in w:
        torch.testing.assert_close(w[key], w_ref[key], atol=1e-6, rtol=0, msg=key)
    assert not work.exists()


def test_resume_picks_the_latest_complete_checkpoint_of_the_same_config(tmp_path):
    from r1distill.config import UserError
    from r1distill.models import StudentConfig
    from r1distill.train import TrainConfig
    from r1distill.train import prepare_work as _prepare_work

    cfg = TrainConfig(run_dir=str(tmp_path), student=StudentConfig(name="x"), resume=True)
    assert _prepare_work(cfg, main=True) is None  # nothing to resume from: a fresh start
    work = cfg.work
    for step in (2, 4, 6):
        (work / f"checkpoint-{step}").mkdir()
    (work / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (work / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (work / "checkpoint-6" / "trainer_state.json").write_text('{"log_hist')  # killed while writing it
    assert _prepare_work(cfg, main=True) == work / "checkpoint-4"
    assert not (work / "checkpoint-6").exists() and (work / "checkpoint-2").exists()
    other = TrainConfig(run_dir=str(tmp_path), student=StudentConfig(name="x"), resume=True, learning_rate=0.5)
    with pytest.raises(UserError, match="made with another train config"):
        _prepare_work(other, main=True)
    # Without resume the work dir starts empty.
    assert _prepare_work(TrainConfig(run_dir=str(tmp_path), student=StudentConfig(name="x")), main=True) is None
    assert list(work.iterdir()) == [work / "r1distill_stamp.json"]
