"""Objective `gkd`: real TRL GKD runs on teacher traces, a 1-layer derived student and the built-in teacher."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from r1distill.cli import main
from r1distill.config import ConfigError
from r1distill.train import GKDOptions

pytestmark = pytest.mark.slow  # TRL GKD runs with the built-in teacher

TINY = Path(__file__).parents[1] / "tiny.yaml"
ROWS, COMPLETION = 4, 16
STUDENT = "train.student={derive_from: teacher, num_layers: 1}"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, teacher_dir) -> Path:
    """4 curated teacher traces of 16 tokens (real generation with the built-in teacher)."""
    d = tmp_path_factory.mktemp("gkd") / "tiny"
    gen = [f"run_dir={d}", f"generate.source.num_problems={ROWS}", "generate.num_samples=1",
           f"generate.max_new_tokens={COMPLETION}"]
    assert main(["generate", str(TINY), *gen]) == 0
    assert main(["curate", str(TINY), *gen]) == 0
    return d


def _train(run_dir: Path, name: str, *overrides: str) -> tuple[dict, list[dict], Path]:
    out = run_dir / name
    args = [f"run_dir={run_dir}", f"train.output_dir={out}", STUDENT, "train.objective=gkd", "train.epochs=1",
            "train.gkd.max_new_tokens=8", *overrides]
    assert main(["train", str(TINY), *args]) == 0
    summary = json.loads((out / "summary.json").read_text())
    recs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert recs[-1]["summary"] is True and recs[-1]["train_loss"] == pytest.approx(summary["train_loss"])
    return summary, recs[:-1], out


def test_off_policy_step_is_the_jsd_on_the_teacher_traces(run_dir):
    """lmbda=0 without seq_kd trains on the stored traces: the first logged loss is the generalized
    JSD(β=0.3) between the untrained student and the teacher, averaged over completion tokens,
    recomputed here with our own `jsd` (a different implementation from TRL's)."""
    from transformers import AutoModelForCausalLM

    from loss_oracle import jsd
    from r1distill.data.traces import read_table
    from r1distill.models import load_model, load_tokenizer
    from r1distill.prompts import render_prompt

    summary, log, _ = _train(run_dir, "off", "train.gkd.lmbda=0", "train.gkd.beta=0.3", f"train.batch_size={ROWS}")
    assert (summary["steps"], summary["rows"]) == (1, ROWS)
    assert (summary["student_sampled_batches"], summary["teacher_sampled_batches"]) == (0, 0)
    rows = read_table(run_dir / "curated").to_pylist()
    assert summary["completion_tokens_seen"] == sum(len(r["completion_ids"]) for r in rows)

    tok = load_tokenizer(str(run_dir / "student_init"))
    student = AutoModelForCausalLM.from_pretrained(run_dir / "student_init", dtype=torch.float32).eval()
    teacher = load_model("smollm2-135m-instruct", dtype="float32", device="cpu")
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            p = render_prompt(tok, r["prompt"])
            ids = torch.tensor([p + list(r["completion_ids"])])
            labels = ids.clone()
            labels[:, : len(p)] = -100
            s, t = student(ids).logits[:, :-1], teacher(ids).logits[:, :-1]
            total += jsd(s, t, labels[:, 1:], beta=0.3).item()
            count += int((labels[:, 1:] != -100).sum())
    assert len(log) == 1 and log[0]["step"] == 1
    assert log[0]["loss"] == pytest.approx(total / count, rel=1e-4)


def test_lmbda_1_trains_on_the_students_own_samples(run_dir):
    from transformers import AutoModelForCausalLM

    summary, log, out = _train(run_dir, "on", "train.gkd.lmbda=1", "train.batch_size=2", "train.logging_steps=1")
    assert summary["objective"] == "gkd" and summary["steps"] == ROWS // 2
    # Every batch was sampled by the student (8 new tokens at most per row), none by the teacher,
    # and the loss covered exactly those sampled tokens, not the teacher's 16-token traces.
    assert (summary["student_sampled_batches"], summary["teacher_sampled_batches"]) == (2, 0)
    assert 0 < summary["generated_tokens"] <= ROWS * 8
    assert summary["completion_tokens_seen"] == summary["generated_tokens"]
    assert [rec["step"] for rec in log] == [1, 2]
    for rec in log:  # the same keys as the other objectives' logs
        assert set(rec) == {"step", "epoch", "loss", "ce", "kd", "learning_rate", "tokens_per_s"}
        assert math.isfinite(rec["loss"]) and rec["loss"] > 0 and rec["kd"] == rec["loss"] and rec["ce"] is None
        assert rec["tokens_per_s"] > 0
    model = AutoModelForCausalLM.from_pretrained(out)
    init = AutoModelForCausalLM.from_pretrained(run_dir / "student_init")
    assert model.config.num_hidden_layers == 1
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, init.model.layers[0].mlp.up_proj.weight)
    assert (out / "tokenizer.json").exists() and (out / "r1distill_train_config.yaml").exists()


def test_seq_kd_lets_the_teacher_sample_off_policy_batches(run_dir):
    summary, log, _ = _train(run_dir, "seq", "train.gkd.lmbda=0", "train.gkd.seq_kd=true", "train.gkd.beta=1",
                             "train.batch_size=2", "train.epochs=0.5")  # one step of 2 rows
    assert (summary["student_sampled_batches"], summary["teacher_sampled_batches"]) == (0, 1)
    assert 0 < summary["completion_tokens_seen"] == summary["generated_tokens"] <= 2 * 8
    assert len(log) == 1 and math.isfinite(log[0]["loss"])


@pytest.mark.parametrize("bad", [{"lmbda": 1.5}, {"beta": -0.1}, {"temperature": 0.0}, {"max_new_tokens": 0}])
def test_options_are_checked(bad):
    with pytest.raises(ConfigError, match="train.gkd"):
        GKDOptions(**bad)
