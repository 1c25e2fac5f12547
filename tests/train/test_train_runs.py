"""What a whole `train` run leaves and says: the derived student's start beside other students of the run dir, the
reported mean loss of a resumed run, the learning rate of the first step, the console, small training sets."""

from __future__ import annotations

import hashlib
import json

import pytest

from r1distill.models import StudentConfig
from r1distill.train import run
from train_fixtures import trace_rows, train_config, write_traces


def _digest(d) -> str:
    return hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()


def _layers(d) -> int:
    return json.loads((d / "config.json").read_text())["num_hidden_layers"]


def test_a_second_derived_student_keeps_the_run_dirs_student_init(tmp_path, teacher_dir):
    traces = write_traces(tmp_path / "traces", trace_rows(4))

    def derived(num_layers: int, **kw):
        cfg = train_config(tmp_path, teacher_dir, traces, objective="sft", teacher=str(teacher_dir), **kw)
        cfg.student = StudentConfig(derive_from="teacher", num_layers=num_layers)
        return cfg

    run(derived(2))  # the run dir's own student: {run_dir}/student from {run_dir}/student_init
    init = tmp_path / "student_init"
    assert _layers(init) == 2
    before = _digest(init)
    # Another student of the run dir, derived otherwise: its own start, the run dir's left as it was.
    run(derived(1, output_dir=str(tmp_path / "st2")))
    assert _layers(init) == 2 and _digest(init) == before
    summary = json.loads((tmp_path / "st2" / "summary.json").read_text())
    assert summary["student_init"] == str(tmp_path / "students_init" / "st2")
    assert _layers(tmp_path / "students_init" / "st2") == 1 and _layers(tmp_path / "st2") == 1
    # The same derivation as the run dir's shares its start.
    run(derived(2, output_dir=str(tmp_path / "st3")))
    assert json.loads((tmp_path / "st3" / "summary.json").read_text())["student_init"] == str(init)
    # The run dir's own student derived otherwise: the old start is moved aside with the old student, not replaced.
    run(derived(1))
    assert _layers(init) == 1 and _layers(tmp_path / "student") == 1
    old = [d for d in tmp_path.iterdir() if d.name.startswith("student_init.old-")]
    assert len(old) == 1 and _layers(old[0]) == 2 and _digest(old[0]) == before


class _Killed(Exception):
    pass


def test_a_resumed_run_reports_the_mean_loss_of_every_step(tmp_path, student_dir, monkeypatch):
    import sys

    from transformers import TrainerCallback

    traces = write_traces(tmp_path / "traces", trace_rows(8, seed=3))
    # 8 rows, batch 2: 4 steps, each logged; a checkpoint every 2.
    ref = train_config(tmp_path / "ref", student_dir, traces, save_steps=2, warmup_ratio=0.2, lr_scheduler="cosine")
    run(ref)
    losses = [json.loads(x)["loss"] for x in (ref.out / "train_log.jsonl").read_text().splitlines()[:-1]]
    assert len(losses) == 4
    assert json.loads((ref.out / "summary.json").read_text())["train_loss"] == pytest.approx(sum(losses) / 4)

    class KillAtFirstCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise _Killed

    module = sys.modules["r1distill.train.run"]
    build = module.build_trainer

    def killed_build(cfg, student_path):
        setup = build(cfg, student_path)
        setup.trainer.add_callback(KillAtFirstCheckpoint())
        return setup

    cfg = train_config(tmp_path / "killed", student_dir, traces, save_steps=2, warmup_ratio=0.2, lr_scheduler="cosine")
    monkeypatch.setattr(module, "build_trainer", killed_build)
    with pytest.raises(_Killed):
        run(cfg)
    monkeypatch.undo()
    cfg.resume = True
    run(cfg)
    summary = json.loads((cfg.out / "summary.json").read_text())
    assert summary["resumed_from"] == "checkpoint-2" and summary["steps"] == 4
    assert summary["train_loss"] == pytest.approx(sum(losses) / 4, rel=1e-5)
    log = [json.loads(x) for x in (cfg.out / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log[:-1]] == pytest.approx(losses, rel=1e-5)
    assert log[-1]["summary"] and log[-1]["train_loss"] == summary["train_loss"]


def test_the_first_step_of_a_warmup_trains(tmp_path, student_dir):
    # 2 steps at warmup_ratio 0.05: one warmup step, which transformers runs at lr 0. Both batches hold the same
    # rows, so the second step's loss differs from the first only if the first step changed the student.
    rows = trace_rows(4)
    rows = [{**rows[0], "prompt_id": f"p{i}"} for i in range(4)]
    cfg = train_config(
        tmp_path, student_dir, write_traces(tmp_path / "traces", rows), warmup_ratio=0.05, lr_scheduler="cosine"
    )
    run(cfg)
    log = [json.loads(x) for x in (cfg.out / "train_log.jsonl").read_text().splitlines()[:-1]]
    assert [r["step"] for r in log] == [1, 2]
    assert abs(log[1]["loss"] - log[0]["loss"]) > 1e-3 * abs(log[0]["loss"])
    assert log[0]["learning_rate"] == pytest.approx(1e-3)  # the warmup's last (and only) step: the full lr
    from r1distill.train import gkd
    from r1distill.train.skeleton import WarmupFromFirstStep

    assert issubclass(gkd._trainer_class(), WarmupFromFirstStep)  # the on-policy trainer warms up the same way


def test_the_console_gets_no_raw_log_dicts(tmp_path, student_dir, capsys):
    run(train_config(tmp_path, student_dir, write_traces(tmp_path / "traces", trace_rows(4))))
    out, err = capsys.readouterr()
    assert "{'loss'" not in out + err and "'train_runtime'" not in out + err
    assert "train: 2 steps, mean loss" in " ".join(err.split())  # our own summary line stays


def test_a_small_training_set_is_said(tmp_path, student_dir, capsys):
    from r1distill.train import build_trainer

    build_trainer(
        train_config(tmp_path, student_dir, write_traces(tmp_path / "three", trace_rows(3))), str(student_dir)
    )
    assert "warning: train: only 3 training rows" in " ".join(capsys.readouterr().err.split())
    build_trainer(
        train_config(tmp_path, student_dir, write_traces(tmp_path / "many", trace_rows(32))), str(student_dir)
    )
    assert "training rows" not in capsys.readouterr().err


def test_a_changed_train_config_names_the_keys_that_changed(tmp_path, student_dir, capsys):
    # The rerun rule of every stage (rerun.py): the finished student of another config is moved aside, and the line
    # that says so names the settings that differ (not those outside the stamp, such as logging_steps).
    traces = write_traces(tmp_path / "traces", trace_rows(4))
    run(train_config(tmp_path, student_dir, traces))
    capsys.readouterr()
    run(train_config(tmp_path, student_dir, traces, learning_rate=2e-3, logging_steps=2))
    said = " ".join(capsys.readouterr().err.split())
    assert "changed: learning_rate: 0.001 -> 0.002" in said and "logging_steps" not in said
    assert "moved them to" in said and len(list(tmp_path.glob("**/*.old-*"))) == 1
