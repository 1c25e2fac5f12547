"""LoRA training saves the adapter and a merged full model that computes the same logits."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from r1distill.config import ConfigError
from r1distill.train import LORA_TARGETS, LoraOptions, run
from train_fixtures import trace_rows, train_config, write_traces


def test_lora_adapter_and_merged_model_agree(tmp_path, student_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    traces = write_traces(tmp_path / "traces", trace_rows(4))
    out = run(train_config(tmp_path, student_dir, traces, learning_rate=1e-2,
                           lora=LoraOptions(enabled=True, r=4, alpha=8)))
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter_cfg["target_modules"]) == sorted(LORA_TARGETS) and adapter_cfg["r"] == 4
    lora_weights = load_file(out / "adapter" / "adapter_model.safetensors")
    # 1 layer × 7 projections × (A, B), and B moved away from its zero init.
    assert len(lora_weights) == 14
    assert max(w.abs().max().item() for k, w in lora_weights.items() if "lora_B" in k) > 1e-3
    merged_w = load_file(out / "model.safetensors")
    assert not any("lora" in k for k in merged_w) and (out / "tokenizer.json").exists()
    assert not (out / "training_args.bin").exists() and not (out / "adapter" / "training_args.bin").exists()

    base = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3458, 314, 216, 34, 1232, 216, 34, 47, 2]])
    with torch.no_grad():
        before = base(ids).logits
        adapted = PeftModel.from_pretrained(base, out / "adapter").eval()
        via_adapter = adapted(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        via_merged = merged(ids).logits
    torch.testing.assert_close(via_merged, via_adapter, atol=1e-4, rtol=0)
    assert (via_merged - before).abs().max().item() > 1e-2  # the adapter changed the model
    # Only the adapted projections changed: the embeddings (the tied head) are the base's.
    torch.testing.assert_close(merged_w["model.embed_tokens.weight"],
                               load_file(student_dir / "model.safetensors")["model.embed_tokens.weight"])


def test_lora_unknown_target_module(tmp_path, student_dir):
    traces = write_traces(tmp_path / "traces", trace_rows(2))
    with pytest.raises(ConfigError, match="train.lora.target_modules"):
        run(train_config(tmp_path, student_dir, traces, lora=LoraOptions(enabled=True, target_modules=["qkv"])))
