"""TRL's SFTTrainer, extended for distillation: offline top-k KD, online KD, and a memory-flat LM head.

Everything else (optimizer, schedule, accumulation, Accelerate/DDP/FSDP/ZeRO-3, checkpoints, report_to)
is TRL's and transformers'. The math lives in `losses.py`, the chunked head in `head.py`; this module wires
them in: `DistillTrainer.compute_loss` builds the targets (labels, the teacher's stored top-k or an online
teacher's hidden states), checks the chunked head against the model's own logits on the first batch, and
accumulates CE/KD sums and token counts for logging.
"""

from __future__ import annotations

import time

import torch
from trl import SFTTrainer

from r1distill.train.config import LossConfig
from r1distill.train.head import add_distill_head, check_head, gathered_head, head_scale, last_hidden
from r1distill.train.losses import IGNORE, distill_loss
from r1distill.train.skeleton import WarmupFromFirstStep
from r1distill.train.xtok.collate import online_teacher
from r1distill.train.xtok.loss import xtok_loss


class DistillTrainer(WarmupFromFirstStep, SFTTrainer):
    """SFTTrainer whose loss is α·CE + (1−α)·τ²·D(teacher ‖ student) (see losses.py), normalised by the
    valid tokens of the whole accumulated (all-rank) batch.

    loss: the loss settings (sft: alpha 1); vocab_size: len(tokenizer), logits of padded embedding rows beyond
    it are dropped; teacher: an online teacher (frozen, eval, on any device) or None for offline top-k / SFT.
    """

    def __init__(self, *args, loss: LossConfig, vocab_size: int | None = None, teacher=None, xtok=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_options = loss
        self.vocab_size = vocab_size
        self.teacher = teacher
        self.xtok = xtok  # cross-tokenizer KD: an XtokSetup (objectives.py), else None
        self._teacher_head: torch.Tensor | None = None
        self._head_checked = not loss.chunk_size  # the full-logit path is the model's own
        # Our loss divides by num_items_in_batch itself: make Trainer count it and not divide by the
        # accumulation steps again (it decides both from this flag).
        self.model_accepts_loss_kwargs = True
        if loss.chunk_size:
            add_distill_head(self.model, loss, vocab_size, xtok.options if xtok is not None else None)
        self._sums = torch.zeros(3, dtype=torch.float64)  # Σ CE, Σ KD, valid tokens since the last log
        self._tokens_seen = 0.0  # completion tokens (all ranks) this session
        self._window_t0: float | None = None

    # -- the loss --

    def _teacher_targets(self, inputs: dict, device: torch.device) -> dict:
        """An online teacher's shifted hidden states and head (chunked), or its logits (unchunked)."""
        o = self.loss_options
        t_dev = next(self.teacher.parameters()).device
        ids, mask = inputs["input_ids"].to(t_dev), inputs["attention_mask"].to(t_dev)
        with torch.no_grad():
            if not o.chunk_size:
                logits = self.teacher(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
                return {"teacher_logits": logits[..., :self.vocab_size].to(device)}
            hidden = last_hidden(self.teacher, ids, mask) * head_scale(self.teacher.config)
            if self._teacher_head is None:  # a copy beside the student when the teacher lives elsewhere
                with gathered_head(self.teacher, self.vocab_size) as w:
                    self._teacher_head = w.detach().to(device).clone()
            return {"teacher_hidden": hidden.to(device), "teacher_weight": self._teacher_head}

    def _xtok_targets(self, inputs: dict, device: torch.device) -> dict:
        """The batch's group tensors, the teacher's side computed by the online teacher when it is one."""
        xt = dict(inputs["xtok"])
        online = xt.pop("online", None)
        if online is not None:
            if self._teacher_head is None:
                with gathered_head(self.teacher, self.xtok.teacher_vocab) as w:
                    self._teacher_head = w.detach().clone()
            xt.update(online_teacher(self.teacher, self._teacher_head, online, self.xtok.options.online_topk,
                                     self.loss_options.chunk_size or 1024, self.xtok.shared))
        return {k: v.to(device) for k, v in xt.items()}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        o = self.loss_options
        labels = inputs["labels"]
        # a batch may carry its own loss settings and CE weights (on-policy batches: on_policy.py)
        overrides, weights = inputs.get("loss_overrides") or {}, inputs.get("token_weights")
        kd = overrides.get("alpha", o.alpha) < 1.0
        if self.xtok is not None:
            return self._xtok_loss(model, inputs, labels, num_items_in_batch, return_outputs)
        teacher = self._teacher_targets(inputs, labels.device) if kd and self.teacher is not None else {}
        topk = {k: inputs[k] for k in ("topk_ids", "topk_logprobs") if kd and k in inputs}
        if not self._head_checked and model.training:  # once: an unknown output transform fails here
            check_head(model, inputs["input_ids"], inputs["attention_mask"])
            self._head_checked = True
        if o.chunk_size:
            parts = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                          distill={"labels": labels, "num_items": num_items_in_batch, **topk, **teacher,
                                   "token_weights": weights, "loss": overrides})
        else:
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                           use_cache=False).logits[:, :-1, :self.vocab_size]
            ids = topk["topk_ids"][:, 1:] if topk else None
            lps = topk["topk_logprobs"][:, 1:] if topk else None
            parts = distill_loss(logits, labels[:, 1:], ids, lps, num_items=num_items_in_batch,
                                 teacher_logits=teacher.get("teacher_logits"),
                                 token_weights=weights[:, 1:] if weights is not None else None,
                                 **{**o.loss_kwargs(), **overrides})
        return self._finish(model, parts, labels, num_items_in_batch, return_outputs)

    def _xtok_loss(self, model, inputs, labels, num_items_in_batch, return_outputs):
        o = self.loss_options
        xt = self._xtok_targets(inputs, labels.device)
        if not self._head_checked and model.training:
            check_head(model, inputs["input_ids"], inputs["attention_mask"])
            self._head_checked = True
        if o.chunk_size:
            parts = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                          distill={"labels": labels, "num_items": num_items_in_batch, "xtok": xt})
        else:
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                           use_cache=False).logits[:, :-1, :self.vocab_size]
            parts = xtok_loss(logits, labels[:, 1:], xt, self.xtok.options, alpha=o.alpha, divergence=o.divergence,
                              beta=o.beta, num_items=num_items_in_batch)
        return self._finish(model, parts, labels, num_items_in_batch, return_outputs)

    def _finish(self, model, parts, labels, num_items_in_batch, return_outputs):
        loss = parts["loss"]
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every rank's tokens and DDP averages gradients over ranks.
            loss = loss * self.accelerator.num_processes
        if model.training:
            with torch.no_grad():
                local = (labels[:, 1:] != IGNORE).sum()
                n = local if num_items_in_batch is None else num_items_in_batch  # what ce/kd were divided by
                self._sums += torch.stack([parts["ce"] * n, parts["kd"] * n, local]).double().cpu()
            if self._window_t0 is None:
                self._window_t0 = time.perf_counter()
        return (loss, parts) if return_outputs else loss

    # -- logging --

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds ce, kd (means over the window's valid tokens, all ranks) and completion tokens/s to the
        training logs that report_to and the log history receive."""
        if "loss" in logs and "eval_loss" not in logs:  # every rank gets here together (Trainer gathers the loss)
            sums = self.accelerator.reduce(self._sums.to(self.accelerator.device), reduction="sum").cpu()
            now = time.perf_counter()
            tokens = float(sums[2])
            logs["ce"] = float(sums[0] / sums[2]) if tokens else 0.0
            logs["kd"] = float(sums[1] / sums[2]) if tokens else 0.0
            elapsed = now - self._window_t0 if self._window_t0 is not None else 0.0
            logs["tokens_per_s"] = tokens / elapsed if elapsed > 0 else 0.0
            self._tokens_seen += tokens
            self._sums.zero_()
            self._window_t0 = now
        elif "train_runtime" in logs:
            tokens = self._tokens_seen + float(self._sums[2])  # + this rank's tokens after the last log
            logs["tokens_per_s"] = tokens / logs["train_runtime"] if logs["train_runtime"] else 0.0
        super().log(logs, start_time)
