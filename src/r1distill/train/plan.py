"""The train path, decided once (issue 26): which builder makes the trainer, where the teacher's signal comes from,
whether the two vocabularies differ, and whether the completions are re-tokenized. `run.build_trainer` computes the
plan from the config and the student's tokenizer and hands it to the builder; the builders read it rather than
re-deriving these choices from the config.

    objective   builder                  teacher   tokens
    sft         objectives.build         none      the stored ids, or the completion text re-tokenized (retokenize)
    kd          objectives.build         stored    one vocabulary, or two (cross_tokenizer: train.xtok)
    kd_online   objectives.build         online    one vocabulary, or two (cross_tokenizer: train.xtok)
    gkd         gkd.build (TRL's)        sampled   one vocabulary
    on_policy   on_policy.build (ours)   sampled   one vocabulary; stored too when lmbda < 1 (kd steps)
"""

from __future__ import annotations

from dataclasses import dataclass

from r1distill.train.config import TrainConfig


@dataclass(frozen=True)
class Plan:
    """How a TrainConfig trains."""

    objective: str
    # none (sft, or alpha 1); stored (the traces' top-k); online (a teacher model's forward per batch, beside the
    # student); sampled (the teacher scores completions the student samples: gkd, on_policy)
    teacher: str
    cross_tokenizer: bool  # train.xtok: KD between two vocabularies over byte-aligned token groups
    retokenize: bool  # the completion text re-tokenized with the student's tokenizer (sft only)
    topk: bool  # the traces' stored top-k is read (offline kd, and on_policy's kd steps when lmbda < 1)

    def build(self, cfg: TrainConfig, student_path: str, tokenizer):
        """The objective's builder (imported here: each one loads what only it needs)."""
        if self.objective == "gkd":
            from r1distill.train import gkd as builder
        elif self.objective == "on_policy":
            from r1distill.train import on_policy as builder
        else:
            from r1distill.train import objectives as builder
        return builder.build(cfg, student_path, tokenizer, self)


def make(cfg: TrainConfig, tokenizer) -> Plan:
    """The plan for `cfg`, whose student has `tokenizer` (sft compares it with the teacher's)."""
    from r1distill.train import data

    if cfg.objective in ("gkd", "on_policy"):
        lmbda = cfg.on_policy.lmbda if cfg.objective == "on_policy" else 1.0
        return Plan(cfg.objective, "sampled", False, False, lmbda < 1.0 and cfg.loss.alpha < 1.0)
    if not cfg.kd:  # sft, or kd with alpha 1: the completion's CE alone
        retok = cfg.retokenize if cfg.retokenize is not None else not data.same_tokenizer(tokenizer, cfg.teacher)
        return Plan(cfg.objective, "none", False, retok, False)
    online = cfg.objective == "kd_online"
    return Plan(cfg.objective, "online" if online else "stored", cfg.xtok is not None, False, not online)
