"""Stage `train`: curated traces -> a student checkpoint (plain HF model dir).

Objectives: `sft` (cross-entropy on the teacher's completion tokens) and `kd` (offline: α·CE +
(1−α)·τ²·KL to the teacher's stored top-k, renormalised). The student is a model name or is
derived from the teacher (`student: {derive_from: teacher, num_layers: 8}`); a derived student is
saved to `{run_dir}/student_init` so that it can be evaluated before training.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from r1distill.config import LAYOUT, ConfigError, UserError, write_resolved
from r1distill.console import console
from r1distill.models import StudentConfig, derive_student, load_tokenizer, pick_layers, resolve_model
from r1distill.train.gkd import GKDOptions

OBJECTIVES = ("sft", "kd", "kd_online", "gkd")


@dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    teacher: str = "smollm2-135m-instruct"  # what `student.derive_from: teacher` refers to
    student: StudentConfig = field(default_factory=lambda: StudentConfig(derive_from="teacher", num_layers=8))
    input_dir: str | None = None  # default: {run_dir}/curated
    output_dir: str | None = None  # default: {run_dir}/student
    objective: str = "kd"  # sft | kd
    alpha: float = 0.5  # weight of cross-entropy; (1 - alpha) weighs the KD term
    kd_temperature: float = 1.0  # τ; the KD term is scaled by τ²
    epochs: float = 2.0
    learning_rate: float = 1e-4
    batch_size: int = 8  # per device
    grad_accum: int = 1
    max_length: int = 1024  # prompt + completion tokens; longer rows are cut
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    bf16: bool | None = None  # None: bf16 on a GPU that supports it, fp32 on CPU
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    gkd: GKDOptions = field(default_factory=GKDOptions)  # objective gkd only
    seed: int = 0
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"train.objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"train.alpha must be in [0, 1] (the CE weight), got {self.alpha}")
        if self.kd_temperature <= 0:
            raise ConfigError("train.kd_temperature must be > 0")

    @property
    def inp(self) -> Path:
        return Path(self.input_dir or Path(self.run_dir) / LAYOUT["curated"])

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path(self.run_dir) / LAYOUT["student"])


def prepare_student(cfg: TrainConfig) -> str:
    """The student's starting point: a named model, or a model derived from the teacher (reused when
    `{run_dir}/student_init` already holds the same derivation)."""
    from transformers import AutoConfig

    s = cfg.student
    if s.name:
        return resolve_model(s.name)
    source = cfg.teacher if s.derive_from == "teacher" else s.derive_from
    out = Path(cfg.run_dir) / LAYOUT["student_init"]
    total = AutoConfig.from_pretrained(resolve_model(source)).num_hidden_layers
    layers = list(s.layers) or pick_layers(total, s.num_layers or total)
    marker = out / "r1distill_derived.json"
    if marker.exists() and json.loads(marker.read_text()) == {"source": source, "layers": layers}:
        return str(out)
    console.print(f"deriving a student from {source}: layers {layers} -> {out}")
    return str(derive_student(source, out, layers=layers))


def run(cfg: TrainConfig) -> Path:
    import torch
    from datasets import Dataset
    from trl import SFTConfig

    from r1distill.data.traces import read_table
    from r1distill.train.collate import DistillCollator, build_features
    from r1distill.train.trainer import DistillTrainer

    t0 = time.time()
    student_path = prepare_student(cfg)
    if cfg.objective == "gkd":
        from r1distill.train.gkd import train_gkd

        return train_gkd(cfg, student_path)
    tokenizer = load_tokenizer(student_path)
    teacher_tok = load_tokenizer(cfg.teacher) if cfg.objective == "kd" else None
    if teacher_tok is not None and teacher_tok.get_vocab() != tokenizer.get_vocab():
        raise UserError(f"The student ({student_path}) and teacher ({cfg.teacher}) tokenizers differ: offline "
                        "top-k KD needs a shared vocabulary (cross-tokenizer KD is not supported); use "
                        "train.objective=sft or a student from the teacher's family")
    rows = read_table(cfg.inp).to_pylist()
    need_topk = cfg.objective == "kd" and cfg.alpha < 1.0
    feats, truncated = build_features(rows, tokenizer, cfg.max_length, need_topk, str(cfg.inp))
    if not feats:
        raise UserError(f"No training rows in {cfg.inp} (after cutting to max_length={cfg.max_length})")
    console.print(f"[bold]train[/] {cfg.objective} on {len(feats)} traces ({truncated} cut to max_length) "
                  f"from {student_path} -> {cfg.out}")
    out = cfg.out
    if out.exists():
        shutil.rmtree(out)
    work = out.with_name(out.name + ".work")
    on_gpu = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else (on_gpu and torch.cuda.is_bf16_supported())
    args = SFTConfig(
        output_dir=str(work), num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps, save_strategy="no", report_to="none", seed=cfg.seed,
        bf16=bf16, use_cpu=not on_gpu, activation_checkpointing=cfg.gradient_checkpointing,
        max_length=cfg.max_length, remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True},
        dataloader_num_workers=0,
    )
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32, use_safetensors=True)
    trainer = DistillTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(feats), processing_class=tokenizer,
        data_collator=DistillCollator(tokenizer.pad_token_id),
        alpha=cfg.alpha if cfg.objective == "kd" else 1.0, kd_temperature=cfg.kd_temperature,
    )
    result = trainer.train()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    with open(out / "train_log.jsonl", "w") as f:
        f.writelines(json.dumps(rec) + "\n" for rec in trainer.state.log_history)
    shutil.rmtree(work, ignore_errors=True)
    n_tokens = sum(len(f["input_ids"]) - f["prompt_len"] for f in feats) * cfg.epochs
    train_seconds = result.metrics.get("train_runtime", 0.0)
    summary = {"objective": cfg.objective, "rows": len(feats), "truncated": truncated,
               "steps": trainer.state.global_step, "train_loss": result.training_loss,
               "seconds": round(time.time() - t0, 2), "completion_tokens_seen": n_tokens,
               "completion_tokens_per_s": n_tokens / train_seconds if train_seconds else 0.0,
               "student_init": student_path}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_resolved(cfg, out, "r1distill_train_config.yaml")
    console.print(f"train: {summary['steps']} steps, mean loss {result.training_loss:.3f}, "
                  f"{summary['seconds']:.0f}s -> {out}")
    return out
