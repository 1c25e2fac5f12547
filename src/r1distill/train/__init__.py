"""Stage `train` (see run.py for what it does and how the package is laid out)."""

from r1distill.train.config import (
    LORA_TARGETS,
    OBJECTIVES,
    GKDOptions,
    LoraOptions,
    LossConfig,
    OnPolicyOptions,
    TrainConfig,
    XtokOptions,
)
from r1distill.train.run import build_trainer, prepare_student, run
from r1distill.train.skeleton import LOG_KEYS, Setup, latest_checkpoint, prepare_work

__all__ = ["LOG_KEYS", "LORA_TARGETS", "OBJECTIVES", "GKDOptions", "LoraOptions", "LossConfig", "OnPolicyOptions",
           "Setup", "TrainConfig", "XtokOptions", "build_trainer", "latest_checkpoint", "prepare_student",
           "prepare_work", "run"]
