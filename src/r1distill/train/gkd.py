"""Objective `gkd` (on-policy distillation): the student samples, the teacher scores (TRL's GKD trainer).

Each step, with probability `lmbda` the student samples completions for the batch's prompts
(on-policy); otherwise, with `seq_kd` the teacher samples them, else the curated teacher traces
are used as they are. The loss is TRL's generalized JSD(β) between the teacher's and the
student's full next-token distributions on the completion tokens. The loop, sampling and loss
are TRL's (`trl.experimental.gkd.GKDTrainer`); this module builds its dataset and trainer from the
shared skeleton (arguments, precision, LoRA, checkpoints), so that run.py's outputs, eval and the report
work unchanged.
"""

from __future__ import annotations

import time

from r1distill.config import UserError
from r1distill.console import console
from r1distill.models import load_model
from r1distill.train import data
from r1distill.train.config import TrainConfig
from r1distill.train.plan import Plan
from r1distill.train.skeleton import (
    Setup,
    WarmupFromFirstStep,
    freeze_lower,
    lora_config,
    prepare_work,
    training_args,
    use_bf16,
    warn_small,
)


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


def _trainer_class():
    from trl.experimental.gkd import GKDTrainer

    class CountingGKDTrainer(WarmupFromFirstStep, GKDTrainer):
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


def build(cfg: TrainConfig, student_path: str, tokenizer, plan: Plan) -> Setup:
    """TRL's GKDTrainer over the curated prompts and completions, the teacher loaded beside the student."""
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl.experimental.gkd import GKDConfig

    g = cfg.gkd
    data.check_vocab(student_path, tokenizer, cfg.teacher, "gkd (full next-token distributions)")
    rows = data.read_columns(cfg.inp, ["prompt", "completion_ids"]).to_pylist()
    for r in rows:  # the assistant turn of `messages`, for reading; training uses the ids
        r["completion"] = tokenizer.decode(r["completion_ids"], skip_special_tokens=True)
    examples, truncated = build_gkd_rows(rows, tokenizer, cfg.max_length)
    if not examples:
        raise UserError(f"{cfg.inp}: all {len(rows)} rows were dropped: their prompts alone fill "
                        f"train.max_length={cfg.max_length}; raise it")
    console.print(f"[bold]train[/] gkd (lmbda={g.lmbda}, beta={g.beta}, seq_kd={g.seq_kd}) on {len(examples)} "
                  f"prompts ({truncated} cut to max_length) from {student_path}, teacher {cfg.teacher} -> {cfg.out}")
    warn_small(len(examples))
    args = training_args(cfg, GKDConfig, lmbda=g.lmbda, beta=g.beta, seq_kd=g.seq_kd,
                         max_new_tokens=g.max_new_tokens, temperature=g.temperature)
    ckpt = prepare_work(cfg, args.process_index == 0)
    PartialState().wait_for_everyone()
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32, use_safetensors=True)
    freeze_lower(model, cfg.freeze_layers)
    # The trainer moves the teacher to the training device (or shards it under ZeRO-3); frozen, eval mode.
    teacher = load_model(cfg.teacher, dtype="bfloat16" if use_bf16(cfg) else "float32", device="cpu")
    trainer = _trainer_class()(model=model, teacher_model=teacher, args=args, peft_config=lora_config(cfg),
                               train_dataset=Dataset.from_list(examples), processing_class=tokenizer)
    tokens = sum(sum(e["completion_mask"]) for e in examples)
    return Setup(trainer, tokenizer, len(examples), truncated, tokens, ckpt, extra={"teacher": cfg.teacher})


def summary(trainer) -> dict:
    """The counts only a finished GKD run knows (this process's, this session's: a resumed run counts from the
    checkpoint on)."""
    return {"student_sampled_batches": trainer.sampled["student"],
            "teacher_sampled_batches": trainer.sampled["teacher"], "generated_tokens": trainer.generated_tokens,
            "completion_tokens_seen": trainer.tokens_trained}
