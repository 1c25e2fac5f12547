"""r1distill: R1-style reasoning distillation (generate -> curate -> train -> eval -> report)."""

__version__ = "0.1.0"
