"""Objective `gkd` (on-policy distillation): the student samples, the teacher scores (TRL's GKD trainer).

Each step, with probability `lmbda` the student samples completions for the batch's prompts
(on-policy); otherwise, with `seq_kd` the teacher samples them, else the curated teacher traces
are used as they are. The loss is TRL's generalized JSD(β) between the teacher's and the
student's full next-token distributions on the completion tokens. The loop, sampling and loss
are TRL's (`trl.experimental.gkd.GKDTrainer`); this module builds its dataset and reuses
`train.run`'s checkpoints/--resume, LoRA, report_to and outputs, so that eval and report work unchanged.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from r1distill.config import ConfigError, UserError

if TYPE_CHECKING:
    from r1distill.train import TrainConfig


@dataclass
class GKDOptions:
    lmbda: float = 0.5  # share of batches whose completions the student samples (on-policy)
    beta: float = 0.5  # generalized JSD interpolation: 0 = forward KL, 1 = reverse KL
    seq_kd: bool = False  # off-policy batches: the teacher samples new completions (sequence-level KD)
    max_new_tokens: int = 128  # length of the sampled completions (student or teacher)
    temperature: float = 0.9  # sampling temperature (the loss itself is at τ = 1)

    def __post_init__(self) -> None:
        for name in ("lmbda", "beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"train.gkd.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_new_tokens < 1:
            raise ConfigError("train.gkd.max_new_tokens must be >= 1")
        if self.temperature <= 0:
            raise ConfigError("train.gkd.temperature must be > 0 (GKD samples; there is no greedy mode)")


def build_gkd_rows(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Curated trace rows -> GKD examples; returns (examples, number of rows cut to max_length).

    Each example has `messages` (the chat: prompt turns + the teacher's answer) and the token
    ids TRL's ChatML collator uses as they are: `input_ids` (chat-rendered prompt + the teacher's
    own completion ids, as in `sft`/`kd`, so nothing is re-tokenized) and `completion_mask`
    (0 on the prompt, 1 on the completion). Long rows lose the end of the completion, never
    the prompt (the collator would otherwise keep the last max_length tokens and drop the prompt).
    """
    from r1distill.prompts import render_prompt

    out, truncated = [], 0
    for row in rows:
        prompt_ids = render_prompt(tokenizer, row["prompt"])
        ids = prompt_ids + list(row["completion_ids"])
        if len(ids) > max_length:
            truncated += 1
            ids = ids[:max_length]
        if len(ids) <= len(prompt_ids):
            continue  # the prompt fills max_length: nothing to learn and nothing to generate from
        out.append({
            "messages": [*row["prompt"], {"role": "assistant", "content": row["completion"]}],
            "input_ids": ids,
            "completion_mask": [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids)),
        })
    return out, truncated


LOG_KEYS = ("step", "epoch", "loss", "ce", "kd", "learning_rate", "tokens_per_s")


def write_gkd_log(log_history: list[dict], path: Path) -> None:
    """The same JSONL as the other objectives: one record per logging step (the whole gkd loss is the
    divergence, so kd = loss and ce = null), then the Trainer's summary marked `"summary": true`."""
    with open(path, "w") as f:
        for rec in log_history:
            if "loss" in rec:
                f.write(json.dumps({**{k: rec.get(k) for k in LOG_KEYS}, "ce": None, "kd": rec["loss"]}) + "\n")
            elif "train_runtime" in rec:
                f.write(json.dumps({"summary": True, **rec}) + "\n")


def _trainer_class():
    from trl.experimental.gkd import GKDTrainer

    class CountingGKDTrainer(GKDTrainer):
        """TRL's GKDTrainer, counting who sampled each batch and normalising each batch by its own tokens."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.sampled = {"student": 0, "teacher": 0}
            self.generated_tokens = 0
            self.tokens_trained = 0
            self._last_log: tuple[float, int] | None = None  # (time, tokens_trained) at the previous log

        def generate_on_policy_outputs(self, model, inputs, generation_config):
            ids, mask, labels = GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)
            teacher = model is self.accelerator.unwrap_model(self.teacher_model)
            self.sampled["teacher" if teacher else "student"] += 1
            self.generated_tokens += int((labels != -100).sum())
            return ids, mask, labels

        def training_step(self, model, inputs, num_items_in_batch=None):
            if self._last_log is None:
                self._last_log = (time.perf_counter(), 0)
            # The Trainer counts num_items_in_batch from the dataset's labels before this step, but a
            # sampled batch replaces them with completions of another length: normalise each batch
            # by its own completion tokens instead (TRL's `batchmean`; the Trainer then divides by
            # the accumulation steps and DDP averages over processes).
            loss = super().training_step(model, inputs, None)
            self.tokens_trained += int((inputs["labels"][:, 1:] != -100).sum())
            return loss

        def log(self, logs: dict, *args, **kwargs) -> None:
            if "loss" in logs and self._last_log is not None:  # completion tokens/s since the previous log
                t, n = time.perf_counter(), self.tokens_trained
                logs["tokens_per_s"] = (n - self._last_log[1]) / max(t - self._last_log[0], 1e-9)
                self._last_log = (t, n)
            super().log(logs, *args, **kwargs)

    return CountingGKDTrainer


def train_gkd(cfg: TrainConfig, student_path: str) -> Path:
    """Train with TRL's GKDTrainer; outputs, checkpoints/--resume, LoRA and report_to as in `train.run`."""
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl.experimental.gkd import GKDConfig

    from r1distill.config import write_resolved
    from r1distill.console import console
    from r1distill.models import load_model, load_tokenizer
    from r1distill.train import _prepare_work, _save, check_vocab, load_table

    t0 = time.time()
    g = cfg.gkd
    tokenizer = load_tokenizer(student_path)
    check_vocab(student_path, tokenizer, cfg.teacher, "gkd (full next-token distributions)")
    rows = load_table(cfg.inp, need_topk=False, objective="gkd").select(["prompt", "completion_ids"]).to_pylist()
    for r in rows:  # the assistant turn of `messages`, for reading; training uses the ids
        r["completion"] = tokenizer.decode(r["completion_ids"], skip_special_tokens=True)
    examples, truncated = build_gkd_rows(rows, tokenizer, cfg.max_length)
    if not examples:
        raise UserError(f"{cfg.inp}: all {len(rows)} rows were dropped: their prompts alone fill "
                        f"train.max_length={cfg.max_length}; raise it")
    on_gpu = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else (on_gpu and torch.cuda.is_bf16_supported())
    console.print(f"[bold]train[/] gkd (lmbda={g.lmbda}, beta={g.beta}, seq_kd={g.seq_kd}) on {len(examples)} "
                  f"prompts ({truncated} cut to max_length) from {student_path}, teacher {cfg.teacher} -> {cfg.out}")
    args = GKDConfig(
        output_dir=str(cfg.work), num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps, report_to=[r for r in cfg.report_to if r != "none"] or "none",
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, bf16=bf16, use_cpu=not on_gpu,
        activation_checkpointing=cfg.gradient_checkpointing, max_length=cfg.max_length, dataloader_num_workers=0,
        lmbda=g.lmbda, beta=g.beta, seq_kd=g.seq_kd, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
    )
    ckpt = _prepare_work(cfg, args.process_index == 0)
    PartialState().wait_for_everyone()
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32, use_safetensors=True)
    # The trainer moves the teacher to the training device (or shards it under ZeRO-3); frozen, eval mode.
    teacher = load_model(cfg.teacher, dtype="bfloat16" if bf16 else "float32", device="cpu")
    peft_config = None
    if cfg.lora.enabled:
        from peft import LoraConfig

        lo = cfg.lora
        peft_config = LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                                 target_modules=list(lo.target_modules), task_type="CAUSAL_LM")
    trainer = _trainer_class()(model=model, teacher_model=teacher, args=args, peft_config=peft_config,
                               train_dataset=Dataset.from_list(examples), processing_class=tokenizer)
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    out = cfg.out
    _save(trainer, tokenizer, out, cfg.lora.enabled)
    if not trainer.is_world_process_zero():
        return out
    if (cfg.work / "runs").is_dir():  # tensorboard event files
        shutil.copytree(cfg.work / "runs", out / "runs", dirs_exist_ok=True)
    write_gkd_log(trainer.state.log_history, out / "train_log.jsonl")
    shutil.rmtree(cfg.work, ignore_errors=True)
    train_seconds = result.metrics.get("train_runtime", 0.0)
    # The counts are this process's and this session's (a resumed run counts from the checkpoint on).
    summary = {"objective": "gkd", "rows": len(examples), "truncated": truncated,
               "steps": trainer.state.global_step, "train_loss": result.training_loss,
               "seconds": round(time.time() - t0, 2), "completion_tokens_seen": trainer.tokens_trained,
               "completion_tokens_per_s": trainer.tokens_trained / train_seconds if train_seconds else 0.0,
               "student_sampled_batches": trainer.sampled["student"],
               "teacher_sampled_batches": trainer.sampled["teacher"], "generated_tokens": trainer.generated_tokens,
               "resumed_from": ckpt.name if ckpt else None, "lora": cfg.lora.enabled,
               "student_init": student_path, "teacher": cfg.teacher}
    if not math.isfinite(result.training_loss):
        console.print(f"[red]train: the gkd loss is {result.training_loss}[/]")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_resolved(cfg, out, "train", "r1distill_train_config.yaml")
    console.print(f"train: {summary['steps']} gkd steps ({summary['student_sampled_batches']} student-sampled, "
                  f"{summary['teacher_sampled_batches']} teacher-sampled), mean loss {result.training_loss:.3f}, "
                  f"{summary['seconds']:.0f}s -> {out}")
    return out
