"""Training with the chunked LM head: same steps as the full-logit path, exact gradient accumulation, and
the logs (JSONL for the report, tensorboard through report_to)."""

from __future__ import annotations

import json

import pytest
import torch

from r1distill.train import LOG_KEYS, build_trainer, run
from train_fixtures import trace_rows, train_config, write_traces


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_chunked_head_trains_like_full_logits_and_logs(tmp_path, student_dir):
    traces = write_traces(tmp_path / "traces", trace_rows(6))
    kw = {"divergence": "jsd", "beta": 0.3, "topk_mode": "tail", "temperature": 2.0, "alpha": 0.25}
    chunked = run(train_config(tmp_path / "chunked", student_dir, traces, chunk_size=7, report_to=["tensorboard"],
                               **kw))
    full = run(train_config(tmp_path / "full", student_dir, traces, chunk_size=0, **kw))
    a, b = _log(chunked), _log(full)
    # 6 rows, batch 2, 1 epoch: 3 steps, one record each with exactly the report's keys, then the summary.
    assert [r.get("step") for r in a] == [1, 2, 3, 3] and [r.get("step") for r in b] == [1, 2, 3, 3]
    assert all(list(r) == list(LOG_KEYS) for r in a[:3])
    assert a[3]["summary"] is True and a[3]["train_runtime"] > 0 and a[3]["tokens_per_s"] > 0
    for ra, rb in zip(a[:3], b[:3]):
        for key in ("loss", "ce", "kd"):  # losses are ~20-40 here (random completion tokens)
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-5), (ra["step"], key)
        assert ra["tokens_per_s"] > 0 and ra["learning_rate"] == pytest.approx(1e-3)
        # One micro-batch per step: the logged loss is exactly α·CE + (1−α)·τ²·KD of the logged parts.
        assert ra["loss"] == pytest.approx(0.25 * ra["ce"] + 0.75 * 4 * ra["kd"], rel=1e-5)
    assert a[2]["loss"] < a[0]["loss"]  # it learns
    summary = json.loads((chunked / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["rows"] == 6 and summary["completion_tokens_per_s"] > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (chunked / "runs").rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    for tag in ("train/loss", "train/ce", "train/kd", "train/learning_rate"):
        assert [e.step for e in acc.Scalars(tag)] == [1, 2, 3], tag
    assert [e.step for e in acc.Scalars("train/tokens_per_s")] == [1, 2, 3, 3]  # the last one: the whole run
    assert [round(e.value, 3) for e in acc.Scalars("train/kd")] == [round(r["kd"], 3) for r in a[:3]]
    assert not (tmp_path / "chunked" / "student.work").exists()  # the work dir goes after a finished run


def _first_step(cfg, student) -> dict:
    trainer = build_trainer(cfg, str(student)).trainer
    trainer.train()
    return trainer.state.log_history[0]


def test_grad_accum_equals_one_big_batch(tmp_path, student_dir):
    # Completions of 3, 20, 7 and 15 tokens: micro-batches hold unequal token counts, so averaging each
    # micro-batch's own mean would weigh tokens differently from one batch of 4.
    traces = write_traces(tmp_path / "traces", trace_rows(4, lengths=[3, 20, 7, 15]))
    one = _first_step(train_config(tmp_path / "b4", student_dir, traces, batch_size=4), student_dir)
    acc = _first_step(train_config(tmp_path / "b2x2", student_dir, traces, batch_size=2, grad_accum=2), student_dir)
    ckpt = _first_step(train_config(tmp_path / "gc", student_dir, traces, batch_size=4, gradient_checkpointing=True),
                       student_dir)
    for other in (acc, ckpt):
        assert other["step"] == one["step"] == 1
        for key in ("loss", "ce", "kd", "grad_norm"):
            assert other[key] == pytest.approx(one[key], rel=1e-5), key
    # And 2×2 is not the mean of two micro-batch means (what the test guards against).
    assert one["loss"] > 1.0 and one["grad_norm"] > 1.0


@pytest.mark.parametrize("objective", ["kd", "sft"])
def test_chunked_forward_gradients_match_full_logits(tmp_path, student_dir, objective):
    traces = write_traces(tmp_path / "traces", trace_rows(4, lengths=[3, 20, 7, 15]))
    cfg = train_config(tmp_path / "t", student_dir, traces, batch_size=4, chunk_size=5, objective=objective,
                       divergence="reverse_kl")
    trainer = build_trainer(cfg, str(student_dir)).trainer
    model = trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    grads, losses = [], []
    for chunk_size in (5, 0):  # the patched forward (chunked head) vs the model's own full logits
        trainer.loss_options.chunk_size = chunk_size
        model.zero_grad()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == sum(1 for _ in model.parameters())
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_several_curated_shards_train_as_one_dataset(tmp_path, student_dir):
    from r1distill.data.traces import CURATED_SCHEMA, rows_to_table, write_table_atomic

    rows = trace_rows(7, seed=3)
    d = tmp_path / "curated"
    for i, part in enumerate((rows[:3], rows[3:4], rows[4:])):  # 3 shards: 3 + 1 + 3 rows
        write_table_atomic(rows_to_table(part, CURATED_SCHEMA), d / f"data-{i:05d}.parquet")
    setup = build_trainer(train_config(tmp_path / "t", student_dir, d, batch_size=7), str(student_dir))
    feats = setup.data
    assert len(feats) == 7 and feats.completion_tokens == sum(r["num_tokens"] for r in rows)
    for i, r in enumerate(rows):  # row order across the shards, each row's completion and top-k
        got = feats.row(i)
        assert got["input_ids"][got["prompt_len"]:].tolist() == r["completion_ids"]
        assert got["topk_ids"].tolist() == r["topk_ids"]
    out = run(train_config(tmp_path / "run", student_dir, d, batch_size=4))
    assert json.loads((out / "summary.json").read_text())["steps"] == 2  # 7 rows at batch 4


def test_an_unknown_output_transform_fails_on_the_first_batch(tmp_path, student_dir):
    from r1distill.config import ConfigError
    from r1distill.train.head import check_head

    traces = write_traces(tmp_path / "traces", trace_rows(2))
    trainer = build_trainer(train_config(tmp_path / "t", student_dir, traces), str(student_dir)).trainer
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    assert check_head(model, batch["input_ids"], batch["attention_mask"]) < 1e-5  # the plain head agrees
    # A model whose forward scales its logits in a way no config field names: the chunked head would not.
    hook = model.get_output_embeddings().register_forward_hook(lambda _m, _i, out: out * 1.5)
    with pytest.raises(ConfigError, match=r"chunked LM head's logits differ .* set train.loss.chunk_size=0"):
        trainer.compute_loss(model.train(), batch)
    hook.remove()
    assert torch.isfinite(trainer.compute_loss(model, batch))  # without the transform the check passes: it trains


def test_the_first_batch_check_allows_bf16_autocast(tmp_path, student_dir):
    """With bf16, Accelerate runs the model's forward under autocast from inside the forward it wraps, so the check
    (outside it) cannot see autocast on; the chunked head tells it. Measured on an AMX Xeon: the two heads' bf16
    logits differed by 0.004 of their scale, above the fp32 limit (1e-3), and training stopped on the first batch."""
    traces = write_traces(tmp_path / "traces", trace_rows(4))
    out = run(train_config(tmp_path / "run", student_dir, traces, bf16=True))
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
