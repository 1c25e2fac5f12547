"""What every objective's trainer is built with and leaves behind: the training arguments, precision, the
LoRA config, the work dir with its checkpoints, the saved student and its log. The builders (objectives.py,
gkd.py, on_policy.py) take these; run.py calls them in order. Nothing here knows an objective.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from r1distill import layout, rerun
from r1distill.config import UserError, config_hash
from r1distill.console import console
from r1distill.train.config import TrainConfig

if TYPE_CHECKING:  # annotations only: the stage imports transformers when it trains
    from transformers import PreTrainedTokenizerBase, Trainer

    from r1distill.train.data import TokenData

LOG_KEYS = ("step", "epoch", "loss", "ce", "kd", "learning_rate", "tokens_per_s")  # train_log.jsonl's records
SMALL_TRAINING_SET = 32  # fewer training rows than this: a smoke test rather than a student, said once


@dataclass
class Setup:
    """A built trainer and what `run` reports about it."""

    trainer: Trainer  # DistillTrainer (sft, kd, kd_online), OnPolicyTrainer, or TRL's GKDTrainer
    tokenizer: PreTrainedTokenizerBase
    rows: int  # training rows (after dropping rows whose prompt fills max_length)
    truncated: int  # rows whose completion was cut to max_length
    completion_tokens: int  # per epoch
    checkpoint: Path | None  # the checkpoint to resume from
    data: TokenData | None = None  # the token rows (all but gkd, which keeps TRL's dataset)
    log_keys: tuple[str, ...] = LOG_KEYS
    extra: dict = field(default_factory=dict)  # objective-specific summary fields known at build time


def use_bf16(cfg: TrainConfig) -> bool:
    """train.bf16, or when unset: bf16 (autocast) on a GPU that supports it and on a CPU with native bf16."""
    import torch

    from r1distill.models import cpu_native_bf16

    if cfg.bf16 is not None:
        return cfg.bf16
    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_native_bf16()


def training_args(cfg: TrainConfig, cls, **extra):
    """`cls` (SFTConfig, GKDConfig) with the fields every objective shares, then `extra`."""
    import dataclasses

    import torch

    # transformers renamed gradient_checkpointing to activation_checkpointing (the old name is a deprecated alias,
    # and 5.17, which vLLM 0.31 pins, knows only it): set it under the name this version has.
    names = {f.name for f in dataclasses.fields(cls)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    # Our names -> transformers': epochs -> num_train_epochs, batch_size -> per_device_train_batch_size, grad_accum
    # -> gradient_accumulation_steps, lr_scheduler -> lr_scheduler_type, and warmup_ratio -> warmup_steps: this
    # transformers has no warmup_ratio and reads a warmup_steps below 1 as a share of the steps (ceil(ratio x total)).
    return cls(
        output_dir=str(cfg.work), num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps, report_to=[r for r in cfg.report_to if r != "none"] or "none",
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, bf16=use_bf16(cfg),
        use_cpu=not torch.cuda.is_available(), **{checkpointing: cfg.gradient_checkpointing},
        max_length=cfg.max_length, dataloader_num_workers=0, **extra,
    )


class WarmupFromFirstStep:
    """A Trainer mixin (before the Trainer class in the bases): the lr warmup counted from 1, so that the first
    optimizer step trains. transformers' warmup scales the lr by step / warmup_steps with the step counted from 0,
    so the first step's lr is 0 and a short run wastes its first batch (train.warmup_ratio becomes
    ceil(ratio x total steps) warmup steps: at least 1 whenever the ratio is above 0). Here warmup step s (from 0)
    gets the schedule's value at s + 1, reaching the full lr at the last warmup step; later steps are unchanged."""

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        import torch

        ours = self.lr_scheduler is None
        sched = super().create_scheduler(num_training_steps, optimizer)
        warmup = self.args.get_warmup_steps(num_training_steps)
        if (ours and warmup and isinstance(sched, torch.optim.lr_scheduler.LambdaLR)
                and all(f(0) == 0 for f in sched.lr_lambdas)):  # a warmup from 0 (not warmup_stable_decay's)
            sched.lr_lambdas = [_warmup_from_one(f, warmup) for f in sched.lr_lambdas]
            sched._last_lr = [base * f(sched.last_epoch) for base, f in zip(sched.base_lrs, sched.lr_lambdas)]
            for group, lr in zip(sched.optimizer.param_groups, sched._last_lr):
                group["lr"] = lr
        return sched


def _warmup_from_one(f, warmup: int):
    # a plain function: LambdaLR's state_dict (checkpoints) leaves it out, and a resumed run wraps its own again
    return lambda step: f(step + 1) if step < warmup else f(step)


def warn_small(rows: int) -> None:
    if rows < SMALL_TRAINING_SET:
        console.print(f"[yellow]warning[/]: train: only {rows} training rows (fewer than {SMALL_TRAINING_SET}): "
                      "enough to see the pipeline run, too few to learn from")


def quiet_log_dicts(trainer) -> None:
    """transformers prints each log as a dict (`{'loss': ..., 'grad_norm': ...}` per logging step, then the run's
    metrics), through its progress bar's `on_log` or, without a bar, its PrinterCallback. Those records go to
    train_log.jsonl and report_to, and run.py prints the summary: the bar shows the latest loss instead, and no
    dict is printed."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class LossOnBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and "loss" in (logs or {}):
                self.training_bar.set_postfix({k: f"{logs[k]:.4g}" for k in ("loss", "ce", "kd") if k in logs},
                                              refresh=False)

    trainer.pop_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LossOnBar())


def lora_config(cfg: TrainConfig):
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    lo = cfg.lora
    return LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=list(lo.target_modules),
                      task_type="CAUSAL_LM")


# ---- the work dir and its checkpoints ----

def freeze_lower(model, n: int) -> None:
    """train.freeze_layers: the input embeddings and decoder layers [0, n) get no gradient, and their output is
    detached so that the backward stops at layer n (with a tied LM head the shared weight still trains through
    the head). The layers are found as the decoder's `layers` ModuleList (Llama, Qwen, Mistral, Gemma, ...)."""
    if n <= 0:
        return
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    layers = getattr(base, "layers", None)
    if layers is None:
        raise UserError(f"train.freeze_layers: {type(model).__name__} has no decoder `layers` list to freeze")
    if n >= len(layers):
        raise UserError(f"train.freeze_layers={n}: the student has {len(layers)} decoder layers; keep at least one "
                        "trainable")
    for layer in layers[:n]:
        layer.requires_grad_(False)
    embed = model.get_input_embeddings()
    if embed.weight is not model.get_output_embeddings().weight:
        embed.requires_grad_(False)
    # the (tied) embedding output carries a gradient path; cut it so nothing below layer n is differentiated
    embed.register_forward_hook(lambda module, args, output: output.detach())


def latest_checkpoint(work: Path) -> Path | None:
    """The highest `checkpoint-N` in `work` whose trainer_state.json (written last) is complete."""
    found = []
    for d in work.glob("checkpoint-*"):
        try:
            step = int(d.name.split("-")[1])
            json.loads((d / "trainer_state.json").read_text())
        except (ValueError, IndexError, OSError):
            continue
        found.append((step, d))
    return max(found)[1] if found else None


def prepare_work(cfg: TrainConfig, main: bool) -> Path | None:
    """Set up `{output}.work`: keep it when resuming (returning the checkpoint to resume from), else start
    it empty. A checkpoint made under another config is refused rather than silently mixed in: the work dir has
    the stamp file every stage dir has (rerun.py), with the hash of the settings the checkpoints depend on."""
    work = cfg.work
    stamp = config_hash(cfg, exclude=("overwrite", "resume", "report_to", "logging_steps", "save_steps",
                                      "save_total_limit", "teacher_device", "cache_dir"))
    ckpt = latest_checkpoint(work) if cfg.resume else None
    if ckpt is not None:
        old = rerun.read_stamp(work)
        if old is not None and not rerun.matches(old, stamp):
            raise UserError(f"The checkpoints in {work} were made with another train config: resume with the "
                            "same recipe, or drop --resume to start over")
        console.print(f"resuming from {ckpt}")
    elif cfg.resume:
        console.print(f"[yellow]--resume: no complete checkpoint in {work}; starting from the beginning[/]")
    if main:
        if ckpt is None:
            shutil.rmtree(work, ignore_errors=True)
        else:  # a checkpoint half-written when the run was killed would be picked up or rotated later
            for d in work.glob("checkpoint-*"):
                if d.name.split("-")[-1].isdigit() and int(d.name.split("-")[-1]) > int(ckpt.name.split("-")[-1]):
                    shutil.rmtree(d)
        if cfg.out.exists() and ckpt is None:
            shutil.rmtree(cfg.out)
        work.mkdir(parents=True, exist_ok=True)
        rerun.write_stamp(work, stamp, complete=False)
    return ckpt


# ---- outputs ----

def save_student(trainer, tokenizer, out: Path, student_path: str, lora: bool) -> None:
    """The student as a plain HF dir at `out`. Without LoRA every process takes part in `save_model` (FSDP's and
    ZeRO-3's gathers) and the main one writes. With LoRA the adapter is saved the same way to `out/adapter`, then
    merged on the main process into a fresh full-precision copy of the base model read from `student_path`: the
    merge never sees a sharded model (under FSDP/ZeRO-3 the in-memory one is)."""
    trainer.save_model(str(out / layout.ADAPTER if lora else out))
    if not trainer.is_world_process_zero():
        return
    if lora:
        merge_lora(student_path, out / layout.ADAPTER, out)
        tokenizer.save_pretrained(str(out / layout.ADAPTER))
    tokenizer.save_pretrained(str(out))
    for d in (out, out / layout.ADAPTER):
        (d / "training_args.bin").unlink(missing_ok=True)  # a pickle; the resolved config is saved as YAML


def merge_lora(student_path: str, adapter: Path, out: Path) -> None:
    """The saved adapter merged into a fresh fp32 copy of the base model, written to `out` as a plain HF dir."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32, use_safetensors=True)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)


def mean_loss(log_history: list[dict], session_loss: float, steps: int, resumed_at: int) -> float:
    """The mean loss over all `steps` of a run resumed at step `resumed_at` (0: not resumed). The Trainer's own
    train_loss sums only this session's step losses (over all the steps); the steps before the checkpoint come from
    the log history the checkpoint restored, each logged loss the mean since the previous log (steps trained after
    the checkpoint's last log and before it was saved are in no record: they count in the next record's window)."""
    if not resumed_at:
        return session_loss
    total, last = 0.0, 0
    for rec in log_history:
        if "loss" in rec and "step" in rec and rec["step"] <= resumed_at:
            total += rec["loss"] * (rec["step"] - last)
            last = rec["step"]
    counted = last + steps - resumed_at
    return (total + session_loss * steps) / counted if counted else session_loss


def write_train_log(log_history: list[dict], path: Path, keys: tuple[str, ...], kd_is_loss: bool = False,
                    train_loss: float | None = None) -> None:
    """One JSON record per logging step with exactly `keys`, then the run summary marked `"summary": true`.
    kd_is_loss: the whole loss is the divergence (gkd), so kd = loss and ce = null. train_loss: the summary's mean
    loss over the whole run (`mean_loss`), in place of the Trainer's (this session's)."""
    with open(path, "w") as f:
        for rec in log_history:
            if "loss" in rec and ("ce" in rec or kd_is_loss):
                row = {k: rec.get(k) for k in keys}
                if kd_is_loss:
                    row.update(ce=None, kd=rec["loss"])
                f.write(json.dumps(row) + "\n")
            elif "train_runtime" in rec:
                extra = {"train_loss": train_loss} if train_loss is not None else {}
                f.write(json.dumps({"summary": True, **rec, **extra}) + "\n")
