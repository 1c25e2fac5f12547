"""Stage `train`: curated traces -> a student checkpoint (plain HF model dir).

Objectives: `sft` (cross-entropy on the teacher's completion tokens), `kd` (offline: α·CE + (1−α)·τ²·D
to the teacher's stored top-k), `kd_online` (the same against a teacher model's full distributions,
computed per batch), `gkd` (on-policy, TRL's GKD trainer) and `on_policy` (ours: the student's samples scored by
the teacher after its own prompt, on_policy.py). D is `train.loss.divergence`; the student's
logits go through the LM head `train.loss.chunk_size` tokens at a time inside the loss (memory flat in T×V).
The student is a model name or is derived from the teacher (`student: {derive_from: teacher,
num_layers: 8}`); a derived student is saved to `{run_dir}/student_init` so that it can be evaluated
before training (another student of the run dir derived otherwise goes to `{run_dir}/students_init/<output
name>`, see `init_dir`; a different derivation is never replaced, it is moved aside). Checkpoints go to
`{output}.work/checkpoint-N` (every `save_steps`); `resume` continues from the latest complete one. Outputs: the
model (merged, with LoRA; the adapter in `{output}/adapter`), `train_log.jsonl` (one record per logging step, then
a summary record), tensorboard logs in `{output}/runs`, and `summary.json`.

Reruns follow `r1distill.rerun`: a student finished with the same config and the same curated input (the shards'
content) is left as it is ("done"; `overwrite` trains again); one of another config or input is moved aside to
`student.old-<stamp>` before training starts, never deleted.

The package, one concern per module: config.py (the settings), data.py (token rows: a memory-mapped cache of
the curated shards), collate.py (batches), losses.py (the math, pure), head.py (the chunked LM head),
trainer.py (TRL's SFTTrainer with the distillation loss), skeleton.py (arguments, precision, LoRA, work dir,
saving, logs), plan.py (the path a config takes, decided once: its builder, the teacher's signal, one or two
tokenizers), one builder per objective (objectives.py: sft/kd/kd_online; gkd.py; on_policy.py), xtok/ (KD across
tokenizers), and this stage.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path

from r1distill import layout, rerun
from r1distill.config import LAYOUT, config_hash, to_dict, write_resolved
from r1distill.console import console
from r1distill.models import check_model, derive_student, is_tokenizer_dir, load_tokenizer, pick_layers, resolve_model
from r1distill.train import data, gkd, plan
from r1distill.train.config import TrainConfig
from r1distill.train.skeleton import Setup, mean_loss, quiet_log_dicts, save_student, write_train_log


def prepare_student(cfg: TrainConfig) -> str:
    """The student's starting point: a named model, or a model derived from the teacher into `init_dir(cfg)`
    (reused when it already holds the same derivation)."""
    from transformers import AutoConfig

    s = cfg.student
    if s.name:
        return resolve_model(s.name)
    source = cfg.teacher if s.derive_from == "teacher" else s.derive_from
    total = AutoConfig.from_pretrained(resolve_model(source)).num_hidden_layers
    layers = list(s.layers) or pick_layers(total, s.num_layers or total)
    want = {"source": source, "layers": layers, **({"tokenizer": s.tokenizer} if s.tokenizer else {})}
    out = init_dir(cfg, want)
    held = derivation(out)
    if held == want:
        return str(out)
    if out.exists():  # another derivation (or something else): kept aside as rerun's rule keeps old results
        tag = hashlib.sha256(json.dumps(held, sort_keys=True).encode()).hexdigest()[:8] if held else "unstamped"
        moved = rerun.set_aside(out, tag)
        console.print(f"[yellow]train[/]: {out} held another student derivation ({held or 'unmarked'}); moved it "
                      f"to {moved}")
    console.print(f"deriving a student from {source}: layers {layers}"
                  + (f", tokenizer {s.tokenizer}" if s.tokenizer else "") + f" -> {out}")
    return str(derive_student(source, out, layers=layers, tokenizer=s.tokenizer))


def derivation(init: Path) -> dict | None:
    """What a derived student's dir was derived from (its r1distill_derived.json), or None."""
    try:
        return json.loads((init / layout.DERIVED).read_text())
    except (OSError, ValueError):
        return None


def init_dir(cfg: TrainConfig, want: dict) -> Path:
    """Where a student derived as `want` is saved. `train.init_dir` when set; else `{run_dir}/student_init`,
    which the `student_init` alias and the report take for the start of `{run_dir}/student`: another student of
    the run dir (train.output_dir elsewhere) shares it when it holds the same derivation or is free, and otherwise
    derives into `{run_dir}/students_init/<output name>` (as a recipe's variants do), so that it never replaces
    the run dir's own student's start. The run dir's own student replaces a different one (moved aside first)."""
    default = cfg.init_out
    if cfg.init_dir or cfg.out.resolve() == (Path(cfg.run_dir) / LAYOUT["student"]).resolve():
        return default
    if not default.exists() or derivation(default) == want:
        return default
    return Path(cfg.run_dir) / LAYOUT["students_init"] / cfg.out.name


# settings that do not change the student: left out of the stamp, and of the keys a refused rerun names
UNSTAMPED = ("overwrite", "resume", "report_to", "logging_steps", "save_steps", "save_total_limit", "teacher_device",
             "run_dir", "input_dir", "output_dir", "init_dir", "cache_dir")


def stamp(cfg: TrainConfig) -> str:
    """The rerun stamp: the settings that change the student, the curated shards' content (not their path), and,
    for a start that r1distill trained (a variant from another's student), that student's own stamp: a start
    retrained under the same path makes this student stale."""
    start = rerun.read_stamp(Path(cfg.student.name)) if cfg.student.name and Path(cfg.student.name).is_dir() else None
    extra = [start["stamp"]] if start and start.get("stamp") else []
    return config_hash(cfg, rerun.fingerprint(data.input_shards(cfg.inp)), *extra, exclude=UNSTAMPED)


def build_trainer(cfg: TrainConfig, student_path: str) -> Setup:
    """The trainer for cfg, built by its plan's builder (plan.py), not run yet (tests use this to inspect the
    trainer's logs and gradients)."""
    tokenizer = load_tokenizer(student_path)
    return plan.make(cfg, tokenizer).build(cfg, student_path, tokenizer)


def run(cfg: TrainConfig) -> Path:
    from accelerate import PartialState

    t0 = time.time()
    # A missing curated dir or a damaged shard is reported before any model is loaded or output moved aside.
    data.readable_shards(cfg.inp)
    for name in (cfg.teacher, cfg.student.name, cfg.student.derive_from, cfg.student.tokenizer):
        if name and name != "teacher" and not is_tokenizer_dir(name):
            check_model(name)
    done_stamp, state = stamp(cfg), PartialState()
    if not cfg.overwrite and rerun.is_done(cfg.out, done_stamp):
        console.print(f"train: {cfg.out} already holds the student of this config and input (stamp {done_stamp}); "
                      "nothing to do (train.overwrite=true trains again)")
        return cfg.out
    if state.is_main_process:  # a finished student of another config or input is moved aside, not overwritten
        rerun.claim(cfg.out, done_stamp, "train", overwrite=cfg.overwrite, config=to_dict(cfg),
                    ignore=UNSTAMPED, config_name=layout.TRAIN_CONFIG)
    state.wait_for_everyone()
    with state.main_process_first():  # one process derives the student, the others read it
        student_path = prepare_student(cfg)
    setup = build_trainer(cfg, student_path)
    trainer, ckpt = setup.trainer, setup.checkpoint
    quiet_log_dicts(trainer)
    acc = trainer.accelerator
    if acc.num_processes > 1 and acc.is_main_process:
        console.print(f"train: {acc.num_processes} processes, {acc.distributed_type.value}")
    try:
        result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    finally:
        if cfg.objective == "on_policy":
            trainer.close_teacher()
    out = cfg.out
    save_student(trainer, setup.tokenizer, out, student_path, cfg.lora.enabled)
    if not trainer.is_world_process_zero():
        return out
    if (cfg.work / "runs").is_dir():  # tensorboard event files (transformers' logging_dir; a subdir per session)
        shutil.copytree(cfg.work / "runs", out / "runs", dirs_exist_ok=True)
    # the mean over every step, those before the checkpoint too (the Trainer's is this session's)
    train_loss = mean_loss(trainer.state.log_history, result.training_loss, trainer.state.global_step,
                           int(ckpt.name.rsplit("-", 1)[1]) if ckpt else 0)
    write_train_log(trainer.state.log_history, out / layout.TRAIN_LOG, setup.log_keys,
                    kd_is_loss=cfg.objective == "gkd", train_loss=train_loss)
    shutil.rmtree(cfg.work, ignore_errors=True)
    seconds = result.metrics.get("train_runtime", 0.0)
    summary = {"objective": cfg.objective, "rows": setup.rows, "truncated": setup.truncated,
               "steps": trainer.state.global_step, "train_loss": train_loss,
               "seconds": round(time.time() - t0, 2), "completion_tokens_seen": setup.completion_tokens * cfg.epochs,
               "completion_tokens_per_s": result.metrics.get("tokens_per_s", 0.0),  # this session's
               "resumed_from": ckpt.name if ckpt else None, "lora": cfg.lora.enabled,
               "student_init": student_path, **setup.extra}
    if cfg.objective == "on_policy":
        summary.update(trainer.summary())
        summary["completion_tokens_per_s"] = summary["completion_tokens_seen"] / seconds if seconds else 0.0
    if cfg.objective == "gkd":
        summary.update(gkd.summary(trainer))
        summary["completion_tokens_per_s"] = summary["completion_tokens_seen"] / seconds if seconds else 0.0
    if not math.isfinite(train_loss):
        console.print(f"[red]train: the loss is {train_loss}[/]")
    (out / layout.SUMMARY).write_text(json.dumps(summary, indent=1))
    write_resolved(cfg, out, "train", layout.TRAIN_CONFIG)
    rerun.finish(out, done_stamp)
    console.print(f"train: {summary['steps']} steps, mean loss {train_loss:.3f}, "
                  f"{summary['seconds']:.0f}s -> {out}")
    return out
