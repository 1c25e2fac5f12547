"""TRL's SFTTrainer, extended for distillation: offline top-k KD, online KD, and a memory-flat LM head.

Everything else (optimizer, schedule, accumulation, Accelerate/DDP/FSDP/ZeRO-3, checkpoints, report_to)
is TRL's and transformers'. The math lives in `losses.py`; this module wires it in:

- `add_distill_head` patches the student's forward, the way TRL's `add_fused_lm_head` does for SFT:
  `model(input_ids=…, attention_mask=…, distill=targets)` runs the backbone and returns the loss parts,
  the final hidden states going through the LM head `chunk_size` tokens at a time inside the loss, so no
  (tokens × vocab) tensor exists for the batch. Because the head is used inside the model's forward, the
  DDP/FSDP/DeepSpeed wrappers see it like any forward (DDP's backward hooks, FSDP's and ZeRO-3's gathers).
- `DistillTrainer.compute_loss` builds the targets (labels, the teacher's stored top-k or an online
  teacher's hidden states), and accumulates CE/KD sums and token counts for logging.
"""

from __future__ import annotations

import functools
import time
import types
from dataclasses import dataclass

import torch
from trl import SFTTrainer

from r1distill.config import ConfigError
from r1distill.train.losses import IGNORE, chunked_distill_loss, distill_loss


@dataclass
class LossOptions:
    alpha: float = 1.0  # CE weight; (1 − alpha)·τ² weighs the KD term; 1 = plain SFT
    temperature: float = 1.0
    divergence: str = "forward_kl"  # forward_kl | reverse_kl | jsd | tvd
    beta: float = 0.5  # jsd's β
    topk_mode: str = "renorm"  # renorm | tail
    chunk_size: int = 1024  # valid tokens per LM-head chunk; 0 = the model's own full logits
    vocab_size: int | None = None  # len(tokenizer): logits of padded embedding rows beyond it are dropped

    def loss_kwargs(self) -> dict:
        return {"alpha": self.alpha, "temperature": self.temperature, "divergence": self.divergence,
                "beta": self.beta, "topk_mode": self.topk_mode}


def head_scale(config) -> float:
    """The factor a model multiplies its logits by (1 for most); raises for a final softcap, which the
    chunked head does not apply (the full-logit path, chunk_size=0, uses the model's own forward)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "final_logit_softcapping", None):
        raise ConfigError(f"{text.model_type} caps its final logits (final_logit_softcapping), which the chunked "
                          "LM head does not do: set train.chunk_size=0")
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        if getattr(text, name, None) is not None:
            return float(getattr(text, name))
    if getattr(text, "logits_scaling", None) is not None:  # Granite/MiniCPM3 divide by it
        return 1.0 / float(text.logits_scaling)
    return 1.0


def head_weight(model, vocab_size: int | None) -> torch.Tensor:
    """The (V, H) LM-head weight, its rows cut to the tokenizer's size (padded embedding rows dropped)."""
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ConfigError("the chunked LM head supports bias-free heads only: set train.chunk_size=0")
    w = head.weight
    if isinstance(w, torch.distributed.tensor.DTensor):  # FSDP2 shards: gather the whole head once
        w = w.full_tensor()
    return w if vocab_size is None else w[:vocab_size]


def _gather_ctx(weight: torch.Tensor):
    """ZeRO-3 gathers a parameter only inside its module's forward; we read the head weight directly."""
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    return maybe_gather_lm_head_ctx(weight)


def last_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs) -> torch.Tensor:
    """The backbone's final hidden states, shifted to predict the next token: (B, T−1, H)."""
    kwargs = {k: v for k, v in kwargs.items() if k not in ("labels", "return_dict", "logits_to_keep")}
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    return out.last_hidden_state[:, :-1]


def add_distill_head(model, opts: LossOptions) -> None:
    """Patch `model.forward` (the base model under a PEFT wrapper) so that `distill=targets` returns
    {"loss", "ce", "kd"} from the chunked loss instead of logits. Without `distill` the forward is the
    one it was (generation and TRL's fused SFT path unchanged).

    targets: labels (B, T) unshifted, -100 off the completion; num_items (the accumulated, all-rank valid
    count, or None); and optionally topk_ids/topk_logprobs (B, T, k) at the label positions, or
    teacher_hidden (B, T−1, H_t, already shifted) with teacher_weight (V, H_t).
    """
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    original = target.forward
    scale = head_scale(target.config)

    @functools.wraps(type(target).forward)
    def forward(self, *args, distill: dict | None = None, **kwargs):
        if distill is None:
            return original(*args, **kwargs)
        input_ids = kwargs.pop("input_ids", args[0] if args else None)
        hidden = last_hidden(self, input_ids, kwargs.pop("attention_mask", None), **kwargs)
        weight = head_weight(self, opts.vocab_size)
        hidden = hidden.to(weight.device)
        if scale != 1.0:
            hidden = hidden * scale
        labels = distill["labels"][:, 1:].to(weight.device)
        topk_ids, topk_lp = distill.get("topk_ids"), distill.get("topk_logprobs")
        with _gather_ctx(self.get_output_embeddings().weight):
            return chunked_distill_loss(
                hidden, weight, labels,
                topk_ids[:, 1:] if topk_ids is not None else None,
                topk_lp[:, 1:] if topk_lp is not None else None,
                teacher_hidden=distill.get("teacher_hidden"), teacher_lm_head_weight=distill.get("teacher_weight"),
                num_items=distill.get("num_items"), chunk_size=opts.chunk_size, **opts.loss_kwargs(),
            )

    target.forward = types.MethodType(forward, target)


class DistillTrainer(SFTTrainer):
    """SFTTrainer whose loss is α·CE + (1−α)·τ²·D(teacher ‖ student) (see losses.py), normalised by the
    valid tokens of the whole accumulated (all-rank) batch.

    teacher: an online teacher (frozen, eval, on any device) or None for offline top-k / SFT.
    """

    def __init__(self, *args, loss: LossOptions, teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_options = loss
        self.teacher = teacher
        self._teacher_head: torch.Tensor | None = None
        # Our loss divides by num_items_in_batch itself: make Trainer count it and not divide by the
        # accumulation steps again (it decides both from this flag).
        self.model_accepts_loss_kwargs = True
        if loss.chunk_size:
            add_distill_head(self.model, loss)
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
                return {"teacher_logits": logits[..., :o.vocab_size].to(device)}
            hidden = last_hidden(self.teacher, ids, mask) * head_scale(self.teacher.config)
            if self._teacher_head is None:  # a copy beside the student when the teacher lives elsewhere
                self._teacher_head = head_weight(self.teacher, o.vocab_size).detach().to(device)
            return {"teacher_hidden": hidden.to(device), "teacher_weight": self._teacher_head}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        o = self.loss_options
        labels = inputs["labels"]
        kd = o.alpha < 1.0
        teacher = self._teacher_targets(inputs, labels.device) if kd and self.teacher is not None else {}
        topk = {k: inputs[k] for k in ("topk_ids", "topk_logprobs") if kd and k in inputs}
        if o.chunk_size:
            parts = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                          distill={"labels": labels, "num_items": num_items_in_batch, **topk, **teacher})
        else:
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                           use_cache=False).logits[:, :-1, :o.vocab_size]
            ids = topk["topk_ids"][:, 1:] if topk else None
            lps = topk["topk_logprobs"][:, 1:] if topk else None
            parts = distill_loss(logits, labels[:, 1:], ids, lps, num_items=num_items_in_batch,
                                 teacher_logits=teacher.get("teacher_logits"), **o.loss_kwargs())
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
