"""TRL's SFTTrainer, subclassed at `compute_loss` to add offline top-k KD.

Everything else (optimizer, schedule, accumulation, Accelerate/DDP/FSDP, logging, saving) is
TRL's and transformers'. The math lives in `losses.py`; this class only wires it in.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

from r1distill.train.losses import distill_loss


class DistillTrainer(SFTTrainer):
    def __init__(self, *args, alpha: float = 1.0, kd_temperature: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = alpha
        self.kd_temperature = kd_temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        # Shift so position t predicts token t+1; the teacher's top-k sits at the label's position.
        logits = outputs.logits[:, :-1]  # (B, T-1, V)
        topk_ids = inputs.get("topk_ids")
        topk_lp = inputs.get("topk_logprobs")
        parts = distill_loss(
            logits, labels[:, 1:],
            topk_ids[:, 1:] if topk_ids is not None else None,
            topk_lp[:, 1:] if topk_lp is not None else None,
            alpha=self.alpha, temperature=self.kd_temperature, num_items=num_items_in_batch,
        )
        loss = parts["loss"]
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every rank's tokens and DDP averages gradients over ranks.
            loss = loss * self.accelerator.num_processes
        mode = "train" if model.training else "eval"
        with torch.no_grad():
            self._metrics[mode]["ce"].append(parts["ce"].item())
            self._metrics[mode]["kd"].append(parts["kd"].item())
        return (loss, outputs) if return_outputs else loss
