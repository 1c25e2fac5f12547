"""Objectives `sft`, `kd` and `kd_online`: one `DistillTrainer` (trainer.py) over the token rows (data.py).

- sft: cross-entropy on the teacher's completion tokens (alpha 1; no teacher needed; a student with another
  tokenizer learns the completion text re-tokenized);
- kd: α·CE + (1−α)·τ²·D against the teacher's stored top-k (its first `loss.topk` entries when set);
- kd_online: the same against a teacher model loaded beside the student, full vocabulary, computed per batch.

With `train.xtok` set, kd and kd_online distil across tokenizers instead (the xtok/ subpackage: xtok/align.py,
xtok/vocab.py, xtok/collate.py, xtok/loss.py, xtok/data.py): the student learns the completion text in its own
tokens, and the KD term compares byte-aligned groups of the two sides' tokens, from the stored top-k (kd) or from
the teacher's forward pass over its own tokens (kd_online).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from r1distill.config import ConfigError, UserError
from r1distill.console import console
from r1distill.models import load_tokenizer, resolve_model
from r1distill.train import data, topk
from r1distill.train.config import TrainConfig
from r1distill.train.plan import Plan
from r1distill.train.skeleton import (
    Setup,
    freeze_lower,
    lora_config,
    prepare_work,
    training_args,
    use_bf16,
    warn_small,
)


def head_rows(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def aligned_vocab(tokenizer, student, teacher_model, student_path: str, teacher: str) -> int:
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


@dataclass
class XtokSetup:
    """What the trainer needs for cross-tokenizer KD."""

    options: object  # train.xtok
    shared: object  # (V_teacher,) torch tensor of xtok.vocab.shared_tokens, or None (uld/alm need none)
    teacher_vocab: int | None  # len(teacher tokenizer): the teacher's logits beyond it are dropped (online)


def _xtok_teacher_tokenizer(cfg: TrainConfig, online: bool):
    """The teacher's tokenizer where cross-tokenizer KD needs it (online; gold's shared tokens), checked against
    the fingerprint the traces record (offline)."""
    from r1distill.data.traces import TOKENIZER_KEY, file_metadata, shard_paths
    from r1distill.tokenbytes import fingerprint

    if not online and cfg.xtok.method != "gold":
        return None
    tok = load_tokenizer(cfg.teacher)
    if not online:
        for p in shard_paths(cfg.inp):
            stamp = file_metadata(p).get(TOKENIZER_KEY)
            if stamp is not None and stamp != fingerprint(tok):
                raise UserError(f"{p}: the traces were generated with another tokenizer (fingerprint {stamp}) than "
                                f"train.teacher's, {cfg.teacher} ({fingerprint(tok)}): gold's shared tokens would be "
                                "wrong; set train.teacher to the model that generated them")
    return tok


def _build_xtok(cfg: TrainConfig, tokenizer, online: bool):
    """(rows, collator, XtokSetup) for cross-tokenizer KD."""
    import torch
    from accelerate import PartialState

    from r1distill.train.xtok import data as xtok_data
    from r1distill.train.xtok.collate import XtokCollator
    from r1distill.train.xtok.vocab import shared_tokens

    x = cfg.xtok
    teacher_tok = _xtok_teacher_tokenizer(cfg, online)
    with PartialState().local_main_process_first():
        cache = xtok_data.prepare(cfg, tokenizer, teacher_tok, online)
    rows = data.TokenData(cache, cfg.max_length)
    counts = rows.counts
    for side in ("teacher", "student"):
        if counts.get(f"{side}_bytes_mismatch"):
            console.print(f"[yellow]warning[/]: train: {counts[f'{side}_bytes_mismatch']} of {counts['rows']} rows: "
                          f"the {side}'s tokens do not make the completion's bytes; they train on CE only")
    if not online:
        topk.warn_topk(counts, cfg.inp)
    shared = (torch.as_tensor(shared_tokens(teacher_tok, tokenizer, x.exact_tokens))
              if x.method == "gold" else None)
    collator = XtokCollator(tokenizer.pad_token_id, rows, merge=x.merge, shared=shared,
                            topk=cfg.loss.topk if not online else None,
                            teacher_pad=teacher_tok.pad_token_id if online else None)
    setup = XtokSetup(x, shared, len(teacher_tok) if teacher_tok is not None else None)
    return rows, collator, setup


def build(cfg: TrainConfig, student_path: str, tokenizer, plan: Plan) -> Setup:
    """Read and check the data, load the student (and an online teacher), prepare the work dir, and build
    the trainer for sft, kd and kd_online as `plan` says; nothing is trained yet."""
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from r1distill.train.collate import DistillCollator
    from r1distill.train.trainer import DistillTrainer

    online, cross, need_topk, retok = plan.teacher == "online", plan.cross_tokenizer, plan.topk, plan.retokenize
    if not cross:
        data.check_vocab(student_path, tokenizer, cfg.teacher if plan.teacher != "none" else None,
                         "online KD" if online else "offline top-k KD")
    if need_topk:
        data.check_logprobs_kind(cfg)
    xtok_setup = None
    if cross:
        rows, collator, xtok_setup = _build_xtok(cfg, tokenizer, online)
    else:
        with PartialState().local_main_process_first():  # one conversion per node; the other ranks map its files
            cache = data.prepare_tokens(cfg, tokenizer, need_topk, retok)
        rows = data.TokenData(cache, cfg.max_length)
        if need_topk:
            topk.warn_topk(rows.counts, cfg.inp)
        collator = DistillCollator(tokenizer.pad_token_id, rows, topk=cfg.loss.topk if need_topk else None)
    data.require_rows(rows, cfg.inp, cfg.max_length)
    if retok:
        console.print(f"[dim]train: the student's tokenizer differs from the teacher's: {rows.rows_total} "
                      "completions re-tokenized from their text[/]")
    console.print(f"[bold]train[/] {cfg.objective} on {len(rows)} traces ({rows.truncated} cut to max_length) "
                  f"from {student_path} -> {cfg.out}")
    warn_small(len(rows))
    bf16 = use_bf16(cfg)
    args = training_args(cfg, SFTConfig, remove_unused_columns=False,
                         dataset_kwargs={"skip_prepare_dataset": True})
    ckpt = prepare_work(cfg, args.process_index == 0)
    PartialState().wait_for_everyone()
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32, use_safetensors=True)
    freeze_lower(model, cfg.freeze_layers)
    teacher = None
    if online:
        device = args.device if cfg.teacher_device == "auto" else torch.device(cfg.teacher_device)
        teacher = AutoModelForCausalLM.from_pretrained(resolve_model(cfg.teacher), use_safetensors=True,
                                                       dtype=torch.bfloat16 if bf16 else torch.float32)
        teacher = teacher.to(device).eval().requires_grad_(False)
    vocab = aligned_vocab(tokenizer, model, None if cross else teacher, student_path, cfg.teacher)
    if cross and teacher is not None and head_rows(teacher) < xtok_setup.teacher_vocab:
        raise UserError(f"The teacher ({cfg.teacher}) has {head_rows(teacher)} output rows but its tokenizer "
                        f"{xtok_setup.teacher_vocab} tokens: the model and tokenizer do not belong together")
    loss = cfg.loss if cfg.kd else dataclasses.replace(cfg.loss, alpha=1.0)
    try:
        trainer = DistillTrainer(
            # The dataset holds row numbers; the collator reads the rows' tokens from the memory-mapped cache.
            model=model, args=args, train_dataset=Dataset.from_dict({"idx": list(range(len(rows)))}),
            processing_class=tokenizer, peft_config=lora_config(cfg), loss=loss, vocab_size=vocab, teacher=teacher,
            data_collator=collator, xtok=xtok_setup,
        )
    except ValueError as e:
        if cfg.lora.enabled and "not found in the base model" in str(e):
            raise ConfigError(f"train.lora.target_modules: {e}") from None
        raise
    k = rows.k if need_topk else None
    extra = {"topk_stored": k, "topk_used": min(k, cfg.loss.topk or k)} if k else {}
    return Setup(trainer, tokenizer, len(rows), rows.truncated, rows.completion_tokens, ckpt, data=rows, extra=extra)
