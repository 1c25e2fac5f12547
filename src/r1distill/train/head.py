"""The chunked LM head: the student's logits computed inside the loss, `chunk_size` tokens at a time.

`add_distill_head` patches the student's forward, the way TRL's `add_fused_lm_head` does for SFT:
`model(input_ids=…, attention_mask=…, distill=targets)` runs the backbone and returns the loss parts, the final
hidden states going through the head inside `chunked_distill_loss`, so no (tokens × vocab) tensor exists for the
batch. Because the head is used inside the model's forward, the DDP/FSDP/DeepSpeed wrappers see it like any
forward (DDP's backward hooks, FSDP's and ZeRO-3's gathers).

Sharded heads: the weight is read only inside `gathered_head`, which first enters ZeRO-3's gather of the head's
parameter (TRL's `maybe_gather_lm_head_ctx`; outside it an untied head is an empty placeholder) and gathers an
FSDP2 DTensor whole. Output transforms: a logit scale a config names is applied, a softcap is refused, and
`check_head` compares the chunked head's logits with the model's own on the first batch, so a transform this
module does not know fails loudly instead of training on wrong logits.
"""

from __future__ import annotations

import functools
import types
from contextlib import contextmanager

import torch

from r1distill.config import ConfigError
from r1distill.train.config import LossConfig
from r1distill.train.losses import chunked_distill_loss
from r1distill.train.xtok.loss import chunked_xtok_loss


def head_scale(config) -> float:
    """The factor a model multiplies its logits by (1 for most); raises for a final softcap, which the
    chunked head does not apply (the full-logit path, chunk_size=0, uses the model's own forward)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "final_logit_softcapping", None):
        raise ConfigError(f"{text.model_type} caps its final logits (final_logit_softcapping), which the chunked "
                          "LM head does not do: set train.loss.chunk_size=0")
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        if getattr(text, name, None) is not None:
            return float(getattr(text, name))
    if getattr(text, "logits_scaling", None) is not None:  # Granite/MiniCPM3 divide by it
        return 1.0 / float(text.logits_scaling)
    return 1.0


@contextmanager
def gathered_head(model, vocab_size: int | None):
    """The whole (V, H) LM-head weight, its rows cut to the tokenizer's size, for the duration: gathered under
    ZeRO-3 (the parameter is read inside the gather, never before it) and from FSDP2's shards."""
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ConfigError("the chunked LM head supports bias-free heads only: set train.loss.chunk_size=0")
    with maybe_gather_lm_head_ctx(head.weight):
        w = head.weight
        if isinstance(w, torch.distributed.tensor.DTensor):  # FSDP2 shards: gather the whole head (differentiable)
            w = w.full_tensor()
        yield w if vocab_size is None else w[:vocab_size]


def last_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs) -> torch.Tensor:
    """The backbone's final hidden states, shifted to predict the next token: (B, T−1, H)."""
    kwargs = {k: v for k, v in kwargs.items() if k not in ("labels", "return_dict", "logits_to_keep")}
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    return out.last_hidden_state[:, :-1]


def add_distill_head(model, loss: LossConfig, vocab_size: int | None, xtok=None) -> None:
    """Patch `model.forward` (the base model under a PEFT wrapper) so that `distill=targets` returns
    {"loss", "ce", "kd"} from the chunked loss instead of logits; without `distill` the forward is the one it was
    (generation and `check_head` use it).

    targets: labels (B, T) unshifted, -100 off the completion; num_items (the accumulated, all-rank valid count,
    or None); and optionally topk_ids/topk_logprobs (B, T, k) at the label positions, or teacher_hidden
    (B, T−1, H_t, already shifted) with teacher_weight (V, H_t); token_weights (B, T) unshifted (on-policy's
    advantages, alpha 1); `loss`: this batch's overrides of the loss settings (on-policy batches); or, for
    cross-tokenizer KD (`xtok`: the train.xtok options), `xtok`: the batch's group tensors
    (xtok.loss.chunked_xtok_loss).
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
        if scale != 1.0:
            hidden = hidden * scale
        topk_ids, topk_lp = distill.get("topk_ids"), distill.get("topk_logprobs")
        with gathered_head(self, vocab_size) as weight:
            hidden = hidden.to(weight.device)
            if distill.get("logits"):  # check_head: this head's logits, for a short input only
                # Accelerate's bf16 autocast is entered inside the forward it wraps: only in here is it visible.
                distill["autocast"] = torch.is_autocast_enabled(hidden.device.type)
                return hidden @ weight.t()
            if distill.get("xtok") is not None:
                return chunked_xtok_loss(hidden, weight, distill["labels"][:, 1:].to(weight.device), distill["xtok"],
                                         xtok, alpha=loss.alpha, divergence=loss.divergence, beta=loss.beta,
                                         num_items=distill.get("num_items"), chunk_size=loss.chunk_size)
            weights = distill.get("token_weights")
            return chunked_distill_loss(
                hidden, weight, distill["labels"][:, 1:].to(weight.device),
                topk_ids[:, 1:] if topk_ids is not None else None,
                topk_lp[:, 1:] if topk_lp is not None else None,
                teacher_hidden=distill.get("teacher_hidden"), teacher_lm_head_weight=distill.get("teacher_weight"),
                num_items=distill.get("num_items"), chunk_size=loss.chunk_size,
                token_weights=weights[:, 1:].to(weight.device) if weights is not None else None,
                **{**loss.loss_kwargs(), **distill.get("loss", {})},
            )

    target.forward = types.MethodType(forward, target)


@torch.no_grad()
def check_head(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokens: int = 32) -> float:
    """The chunked head's logits against the model's own forward on the first row's first `tokens` tokens.
    Returns the largest difference relative to the logits' scale; raises when they disagree. Both go through the
    model's (wrapped) forward, so sharded parameters are gathered as in training; every process calls it on its
    own batch, together. `model` has `add_distill_head`'s forward."""
    ids, mask = input_ids[:1, :tokens], attention_mask[:1, :tokens]
    was_training = model.training
    model.eval()  # dropout would make the two forwards differ
    try:
        probe = {"logits": True}
        ours = model(input_ids=ids, attention_mask=mask, distill=probe)[0].float()
        own = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[0, :-1, :ours.shape[-1]].float()
    finally:
        model.train(was_training)
    own = own.to(ours.device)
    rel = float((own - ours).abs().max() / own.abs().max().clamp_min(1e-6))
    param = next(model.parameters())
    exact = param.dtype == torch.float32 and not (probe.get("autocast") or torch.is_autocast_enabled(ids.device.type))
    # fp32: reduction-order noise (~1e-6); bf16 matmuls in another order ~1e-2 of the scale; a wrong transform more
    limit = 1e-3 if exact else 5e-2
    if not rel <= limit:
        name = type(model.get_base_model() if hasattr(model, "get_base_model") else model).__name__
        raise ConfigError(f"the chunked LM head's logits differ from {name}'s own by {rel:.3g} of their scale: the "
                          "model transforms its logits in a way the chunked head does not apply (a scale or cap "
                          "under another name?); set train.loss.chunk_size=0 to train on the model's own logits")
    return rel
