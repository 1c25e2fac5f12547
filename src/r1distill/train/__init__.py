"""Stage `train`: curated traces -> a student checkpoint (plain HF model dir).

Objectives: `sft` (cross-entropy on the teacher's completion tokens), `kd` (offline: α·CE + (1−α)·τ²·D
to the teacher's stored top-k), `kd_online` (the same against a teacher model's full distributions,
computed per batch) and `gkd` (on-policy, TRL's GKD trainer: gkd.py). D is `divergence`; the student's
logits go through the LM head `chunk_size` tokens at a time inside the loss (memory flat in T×V).
The student is a model name or is derived from the teacher (`student: {derive_from: teacher,
num_layers: 8}`); a derived student is saved to `{run_dir}/student_init` so that it can be evaluated
before training. Checkpoints go to `{output}.work/checkpoint-N` (every `save_steps`); `resume` continues
from the latest complete one. Outputs: the model (merged, with LoRA; the adapter in `{output}/adapter`),
`train_log.jsonl` (one record per logging step, then a summary record), tensorboard logs in `{output}/runs`,
and `summary.json`.

Reruns follow `r1distill.rerun`: a student finished with the same config and the same curated input (the shards'
content) is left as it is ("done"; `overwrite` trains again); one of another config or input is moved aside to
`student.old-<stamp>` before training starts, never deleted.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from r1distill import rerun
from r1distill.config import LAYOUT, ConfigError, UserError, config_hash, write_resolved
from r1distill.console import console
from r1distill.models import StudentConfig, derive_student, load_tokenizer, pick_layers, resolve_model
from r1distill.train.gkd import GKDOptions

OBJECTIVES = ("sft", "kd", "kd_online", "gkd")
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd")
TOPK_MODES = ("renorm", "tail")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraOptions:
    enabled: bool = False
    r: int = 16
    alpha: int = 32  # LoRA scaling is alpha / r
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"train.lora.r must be >= 1, got {self.r}")
        if not self.target_modules:
            raise ConfigError("train.lora.target_modules is empty: name the linear layers to adapt (e.g. q_proj)")


@dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    teacher: str = "smollm2-135m-instruct"  # `student.derive_from: teacher` and kd_online's teacher model
    student: StudentConfig = field(default_factory=lambda: StudentConfig(derive_from="teacher", num_layers=8))
    input_dir: str | None = None  # default: {run_dir}/curated
    output_dir: str | None = None  # default: {run_dir}/student
    objective: str = "kd"  # sft | kd | kd_online | gkd
    alpha: float = 0.5  # weight of cross-entropy; (1 - alpha) weighs the KD term
    kd_temperature: float = 1.0  # τ; the KD term is scaled by τ²
    divergence: str = "forward_kl"  # D for kd/kd_online: forward_kl | reverse_kl | jsd | tvd
    jsd_beta: float = 0.5  # jsd's β (0 = forward KL, 1 = reverse KL)
    topk_mode: str = "renorm"  # kd: renorm over the stored top-k, or tail (a k+1-th bucket for the rest)
    chunk_size: int = 1024  # tokens per LM-head chunk inside the loss; 0 = the model's full logits
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
    lora: LoraOptions = field(default_factory=LoraOptions)
    teacher_device: str = "auto"  # kd_online: where the teacher runs (auto = the student's device; cpu, cuda:1…)
    logging_steps: int = 1
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])  # or [] / none, wandb, …
    save_steps: int = 0  # checkpoint every N optimizer steps to {output}.work; 0 = no checkpoints
    save_total_limit: int | None = 2  # checkpoints kept (the oldest are deleted); None = all
    resume: bool = False  # continue from the latest complete checkpoint (`r1distill train --resume`)
    gkd: GKDOptions = field(default_factory=GKDOptions)  # objective gkd only
    # SFT: re-tokenize the completion text with the student's tokenizer (true), train on the stored ids (false),
    # or decide by comparing the teacher's tokenizer with the student's (null)
    retokenize: bool | None = None
    allow_processed_logprobs: bool = False  # kd on "processed" top-k log-probs without the warning
    seed: int = 0
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"train.objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"train.alpha must be in [0, 1] (the CE weight), got {self.alpha}")
        if self.kd_temperature <= 0:
            raise ConfigError("train.kd_temperature must be > 0")
        if self.divergence not in DIVERGENCES:
            raise ConfigError(f"train.divergence must be one of {', '.join(DIVERGENCES)}, got {self.divergence!r}")
        if not 0.0 <= self.jsd_beta <= 1.0:
            raise ConfigError(f"train.jsd_beta must be in [0, 1], got {self.jsd_beta}")
        if self.topk_mode not in TOPK_MODES:
            raise ConfigError(f"train.topk_mode must be renorm or tail, got {self.topk_mode!r}")
        if self.chunk_size < 0:
            raise ConfigError(f"train.chunk_size must be >= 0 (0 = unchunked), got {self.chunk_size}")
        if self.save_steps < 0 or self.logging_steps < 1:
            raise ConfigError("train.save_steps must be >= 0 and train.logging_steps >= 1")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError("train.save_total_limit must be >= 1 (or null to keep every checkpoint)")

    @property
    def inp(self) -> Path:
        return Path(self.input_dir or Path(self.run_dir) / LAYOUT["curated"])

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path(self.run_dir) / LAYOUT["student"])

    @property
    def work(self) -> Path:
        """Checkpoints and the trainer's scratch files; removed after a successful run."""
        return self.out.with_name(self.out.name + ".work")


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


# ---- input: rows, with errors that name the shard and row ----

def _parquet_file(path):
    """A shard's footer (schema, row count); fsspec-aware when data/traces.py offers `parquet_file`."""
    import pyarrow.parquet as pq

    from r1distill.data import traces

    return getattr(traces, "parquet_file", pq.ParquetFile)(path)


def _row_locator(inp: Path) -> Callable[[int], str]:
    """Row i of the concatenated shards -> 'shard.parquet row j' for error messages."""
    from r1distill.data.traces import shard_paths

    bounds, start = [], 0
    for p in shard_paths(inp):
        n = _parquet_file(p).metadata.num_rows
        bounds.append((start, start + n, p))
        start += n

    def where(i: int) -> str:
        return next((f"{p} row {i - a}" for a, b, p in bounds if a <= i < b), f"{inp} row {i}")

    return where


def load_table(inp: Path, need_topk: bool, objective: str, text: bool = False):
    """The columns training reads (an Arrow table); a clear error for a dataset without rows or top-k.
    text: also read `completion` and `finish_reason` (for `retokenize`)."""
    from r1distill.data.traces import read_table, shard_paths

    shards = shard_paths(inp)
    if not shards:
        raise UserError(f"No Parquet shards in {inp}: run curate first (or set train.input_dir)")
    names = _parquet_file(shards[0]).schema_arrow.names
    if "topk_lp_q8" in names:  # quantized log-probs: read_table decodes them into topk_logprobs
        names.append("topk_logprobs")
    for col in ("prompt", "completion_ids"):
        if col not in names:
            raise UserError(f"{shards[0]}: no column {col!r}; train reads traces written by generate/curate")
    cols = ["prompt", "completion_ids"] + [c for c in ("prompt_id", "sample_idx") if c in names]
    if text:
        cols += ["completion", "finish_reason"]
    if need_topk:
        missing = [c for c in ("topk_ids", "topk_logprobs") if c not in names]
        if missing:
            raise UserError(f"{shards[0]}: no {'/'.join(missing)} column: train.objective={objective} needs "
                            "the teacher's top-k log-probs (generate with generate.topk_logprobs > 0), or use "
                            "train.objective=sft or kd_online")
        cols += ["topk_ids", "topk_logprobs"]
    table = read_table(inp, columns=cols)
    if table.num_rows == 0:
        raise UserError(f"{inp}: 0 rows to train on (curation kept none: see {inp / 'stats.md'})")
    if need_topk and table["topk_ids"].null_count == table.num_rows:
        raise UserError(f"{inp}: topk_ids is empty in all {table.num_rows} rows: train.objective={objective} needs "
                        "traces generated with generate.topk_logprobs > 0, or use train.objective=sft or kd_online")
    return table


def check_vocab(student_path: str, tokenizer, teacher: str | None, what: str) -> None:
    """Teacher and student must share one tokenizer (sizes of padded embedding rows may differ)."""
    if teacher is None:
        return
    if load_tokenizer(teacher).get_vocab() != tokenizer.get_vocab():
        raise UserError(f"The student ({student_path}) and teacher ({teacher}) tokenizers differ: {what} needs a "
                        "shared vocabulary (cross-tokenizer KD is not in this objective); use train.objective=sft "
                        "or a student from the teacher's family")


def same_tokenizer(tokenizer, teacher: str) -> bool:
    """Whether the traces' completion_ids (the teacher's tokens) are the student's tokens too. False when the
    teacher's tokenizer differs, or when the teacher names no model at all (an API model such as
    deepseek-reasoner: the hub says the repo does not exist). Any other failure to load it (the hub unreachable,
    a broken download) is raised: guessing would switch SFT between stored ids and re-tokenized text silently."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        return load_tokenizer(teacher).get_vocab() == tokenizer.get_vocab()
    except OSError as e:
        if isinstance(e.__cause__, RepositoryNotFoundError) or isinstance(e, RepositoryNotFoundError):
            return False
        raise UserError(f"train: cannot tell whether the teacher's ({teacher}) tokenizer is the student's: loading "
                        f"it failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}). Fix that, or set "
                        "train.retokenize: true (SFT on the completion text in the student's tokens) or false (the "
                        "stored ids are the student's)") from None


def _check_logprobs_kind(cfg: TrainConfig) -> None:
    """Offline KD against "processed" log-probs (after the teacher's temperature/top-p) matches a sharpened,
    truncated distribution, not the teacher's: say so unless the recipe says it is meant."""
    from r1distill.data.traces import KIND_KEY, file_metadata, shard_paths

    kinds = {file_metadata(p).get(KIND_KEY, "unrecorded") for p in shard_paths(cfg.inp)}
    if "processed" in kinds and not cfg.allow_processed_logprobs:
        console.print(f"[yellow]warning[/]: train: {cfg.inp} holds 'processed' top-k log-probs (after the teacher's "
                      "temperature/top-p: a sampling server's or a hosted API's), so kd learns that sharpened, "
                      "truncated distribution rather than the teacher's own (generate with the hf backend, or "
                      "vLLM's --logprobs-mode raw_logprobs, for raw ones). Set train.allow_processed_logprobs: "
                      "true if that is meant.")


def retokenize(table, tokenizer):
    """SFT with a student from another tokenizer: its targets are the completion *text* in the student's
    tokens (plus eos where the teacher stopped), since the stored ids are the teacher's."""
    import pyarrow as pa

    texts = table.column("completion").to_pylist()
    stops = [r == "stop" for r in table.column("finish_reason").to_pylist()]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    ids = [x + [eos] if stop and eos is not None else x for x, stop in zip(ids, stops)]
    console.print(f"[dim]train: the student's tokenizer differs from the teacher's: {len(ids)} completions "
                  "re-tokenized from their text[/]")
    return table.set_column(table.schema.get_field_index("completion_ids"), "completion_ids",
                            pa.array(ids, type=pa.list_(pa.int32())))


def head_rows(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def _aligned_vocab(tokenizer, student, teacher_model, student_path: str, teacher: str) -> int:
    """len(tokenizer): logits beyond it (embedding rows padded to a multiple, e.g. 151,936 vs 152,064)
    are dropped on both sides, so the two distributions are over the same tokens."""
    n = len(tokenizer)
    sizes = {"student": (head_rows(student), student_path)}
    if teacher_model is not None:
        sizes["teacher"] = (head_rows(teacher_model), teacher)
    for who, (rows, path) in sizes.items():
        if rows < n:
            raise UserError(f"The {who} ({path}) has {rows} output rows but its tokenizer {n} tokens: "
                            "the model and tokenizer do not belong together")
    if any(rows != n for rows, _ in sizes.values()):
        console.print("vocabulary: " + ", ".join(f"{w} {r}" for w, (r, _) in sizes.items())
                      + f" output rows, aligned to the tokenizer's {n}")
    return n


# ---- checkpoints ----

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


def _prepare_work(cfg: TrainConfig, main: bool) -> Path | None:
    """Set up `{output}.work`: keep it when resuming (returning the checkpoint to resume from), else start
    it empty. A checkpoint made under another config is refused rather than silently mixed in."""
    work = cfg.work
    stamp = config_hash(cfg, exclude=("overwrite", "resume", "report_to", "logging_steps", "save_steps",
                                      "save_total_limit", "teacher_device"))
    ckpt = latest_checkpoint(work) if cfg.resume else None
    if ckpt is not None:
        marker = work / "r1distill_config_hash"
        if marker.exists() and marker.read_text() != stamp:
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
        (work / "r1distill_config_hash").write_text(stamp)
    return ckpt


# ---- outputs ----

LOG_KEYS = ("step", "epoch", "loss", "ce", "kd", "learning_rate", "tokens_per_s")


def write_train_log(log_history: list[dict], path: Path) -> None:
    """One JSON record per logging step with exactly LOG_KEYS, then the run summary marked `"summary": true`."""
    with open(path, "w") as f:
        for rec in log_history:
            if "loss" in rec and "ce" in rec:
                f.write(json.dumps({k: rec.get(k) for k in LOG_KEYS}) + "\n")
            elif "train_runtime" in rec:
                f.write(json.dumps({"summary": True, **rec}) + "\n")


def _save(trainer, tokenizer, out: Path, lora: bool) -> None:
    """The student as a plain HF dir at `out` (LoRA: merged there, the adapter in `out/adapter`)."""
    if not lora:
        trainer.save_model(str(out))  # every process takes part (FSDP/ZeRO-3 gather); the main one writes
    else:
        trainer.save_model(str(out / "adapter"))
    if not trainer.is_world_process_zero():
        return
    if lora:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        merged.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out / "adapter"))
    tokenizer.save_pretrained(str(out))
    for d in (out, out / "adapter"):
        (d / "training_args.bin").unlink(missing_ok=True)  # a pickle; the resolved config is saved as YAML


@dataclass
class Setup:
    """What `build_trainer` made: the trainer and what `run` reports about it."""

    trainer: object  # DistillTrainer
    tokenizer: object
    features: object  # collate.Features
    checkpoint: Path | None  # the checkpoint to resume from


def build_trainer(cfg: TrainConfig, student_path: str) -> Setup:
    """Read and check the data, load the student (and an online teacher), prepare the work dir, and build
    the trainer; nothing is trained yet (tests use this to inspect the trainer's logs and gradients)."""
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from r1distill.train.collate import DistillCollator, build_features
    from r1distill.train.trainer import DistillTrainer, LossOptions

    tokenizer = load_tokenizer(student_path)
    kd = cfg.objective in ("kd", "kd_online") and cfg.alpha < 1.0
    online = kd and cfg.objective == "kd_online"
    check_vocab(student_path, tokenizer, cfg.teacher if kd else None,
                "online KD" if online else "offline top-k KD")
    need_topk = kd and not online
    retok = not kd and (cfg.retokenize if cfg.retokenize is not None else not same_tokenizer(tokenizer, cfg.teacher))
    if need_topk:
        _check_logprobs_kind(cfg)
    table = load_table(cfg.inp, need_topk, cfg.objective, text=retok)
    if retok:
        table = retokenize(table, tokenizer)
    feats = build_features(table, tokenizer, cfg.max_length, need_topk, _row_locator(cfg.inp))
    if not len(feats):
        raise UserError(f"{cfg.inp}: all {table.num_rows} rows were dropped: their prompts alone fill "
                        f"train.max_length={cfg.max_length}; raise it")
    del table
    console.print(f"[bold]train[/] {cfg.objective} on {len(feats)} traces ({feats.truncated} cut to max_length) "
                  f"from {student_path} -> {cfg.out}")
    on_gpu = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else (on_gpu and torch.cuda.is_bf16_supported())
    report_to = [r for r in cfg.report_to if r != "none"] or "none"
    args = SFTConfig(
        output_dir=str(cfg.work), num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps, report_to=report_to, seed=cfg.seed,
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit, bf16=bf16, use_cpu=not on_gpu,
        activation_checkpointing=cfg.gradient_checkpointing, max_length=cfg.max_length,
        remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}, dataloader_num_workers=0,
    )
    ckpt = _prepare_work(cfg, args.process_index == 0)
    PartialState().wait_for_everyone()
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32, use_safetensors=True)
    teacher = None
    if online:
        device = args.device if cfg.teacher_device == "auto" else torch.device(cfg.teacher_device)
        teacher = AutoModelForCausalLM.from_pretrained(resolve_model(cfg.teacher), use_safetensors=True,
                                                       dtype=torch.bfloat16 if bf16 else torch.float32)
        teacher = teacher.to(device).eval().requires_grad_(False)
    vocab = _aligned_vocab(tokenizer, model, teacher, student_path, cfg.teacher)
    peft_config = None
    if cfg.lora.enabled:
        from peft import LoraConfig

        lo = cfg.lora
        peft_config = LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                                 target_modules=list(lo.target_modules), task_type="CAUSAL_LM")
    loss = LossOptions(alpha=cfg.alpha if kd else 1.0, temperature=cfg.kd_temperature, divergence=cfg.divergence,
                       beta=cfg.jsd_beta, topk_mode=cfg.topk_mode, chunk_size=cfg.chunk_size, vocab_size=vocab)
    try:
        trainer = DistillTrainer(
            # The dataset holds row numbers; the collator reads the rows' tokens from `feats`.
            model=model, args=args, train_dataset=Dataset.from_dict({"idx": list(range(len(feats)))}),
            processing_class=tokenizer, data_collator=DistillCollator(tokenizer.pad_token_id, feats),
            peft_config=peft_config, loss=loss,
            teacher=teacher,
        )
    except ValueError as e:
        if peft_config is not None and "not found in the base model" in str(e):
            raise ConfigError(f"train.lora.target_modules: {e}") from None
        raise
    return Setup(trainer, tokenizer, feats, ckpt)


def stamp(cfg: TrainConfig) -> str:
    """The rerun stamp: the settings that change the student, and the curated shards' content (not their path)."""
    from r1distill.data.traces import shard_paths

    return config_hash(cfg, rerun.fingerprint(shard_paths(cfg.inp)),
                       exclude=("overwrite", "resume", "report_to", "logging_steps", "save_steps", "save_total_limit",
                                "teacher_device", "run_dir", "input_dir", "output_dir"))


def run(cfg: TrainConfig) -> Path:
    from accelerate import PartialState

    from r1distill.data.traces import shard_paths
    from r1distill.models import check_model

    t0 = time.time()
    if not shard_paths(cfg.inp):  # before loading or deriving any model
        raise UserError(f"No Parquet shards in {cfg.inp}: run curate first (or set train.input_dir)")
    for name in (cfg.teacher, cfg.student.name, cfg.student.derive_from):
        if name and name != "teacher":
            check_model(name)
    done_stamp, state = stamp(cfg), PartialState()
    if not cfg.overwrite and rerun.is_done(cfg.out, done_stamp):
        console.print(f"train: {cfg.out} already holds the student of this config and input (stamp {done_stamp}); "
                      "nothing to do (train.overwrite=true trains again)")
        return cfg.out
    if state.is_main_process:  # a finished student of another config or input is moved aside, not overwritten
        rerun.claim(cfg.out, done_stamp, "train", overwrite=cfg.overwrite)
    state.wait_for_everyone()
    with PartialState().main_process_first():  # one process derives the student, the others read it
        student_path = prepare_student(cfg)
    if cfg.objective == "gkd":
        from r1distill.train.gkd import train_gkd

        out = train_gkd(cfg, student_path)
        if state.is_main_process:
            rerun.finish(out, done_stamp)
        return out
    setup = build_trainer(cfg, student_path)
    trainer, ckpt, feats = setup.trainer, setup.checkpoint, setup.features
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    out = cfg.out
    _save(trainer, setup.tokenizer, out, cfg.lora.enabled)
    if not trainer.is_world_process_zero():
        return out
    if (cfg.work / "runs").is_dir():  # tensorboard event files (one subdir per session, resumed ones too)
        shutil.copytree(cfg.work / "runs", out / "runs", dirs_exist_ok=True)
    write_train_log(trainer.state.log_history, out / "train_log.jsonl")
    shutil.rmtree(cfg.work, ignore_errors=True)
    n_tokens = feats.completion_tokens * cfg.epochs
    summary = {"objective": cfg.objective, "rows": len(feats), "truncated": feats.truncated,
               "steps": trainer.state.global_step, "train_loss": result.training_loss,
               "seconds": round(time.time() - t0, 2), "completion_tokens_seen": n_tokens,
               "completion_tokens_per_s": result.metrics.get("tokens_per_s", 0.0),  # this session's
               "resumed_from": ckpt.name if ckpt else None, "lora": cfg.lora.enabled,
               "student_init": student_path}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_resolved(cfg, out, "train", "r1distill_train_config.yaml")
    rerun.finish(out, done_stamp)
    console.print(f"train: {summary['steps']} steps, mean loss {result.training_loss:.3f}, "
                  f"{summary['seconds']:.0f}s -> {out}")
    return out
