"""Objective `gkd` (on-policy distillation): the student samples, the teacher scores (TRL's GKD trainer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from r1distill.config import ConfigError

if TYPE_CHECKING:
    from r1distill.train import TrainConfig


@dataclass
class GKDOptions:
    lmbda: float = 0.5  # share of batches whose completions the student samples (on-policy)
    beta: float = 0.5  # generalized JSD interpolation: 0 = forward KL, 1 = reverse KL
    seq_kd: bool = False  # also train on teacher-generated sequences (sequence-level KD)
    max_new_tokens: int = 128  # length of the student's sampled completions
    temperature: float = 0.9  # the student's sampling temperature


def train_gkd(cfg: TrainConfig, student_path: str) -> Path:
    raise ConfigError("train.objective=gkd is not available yet")
