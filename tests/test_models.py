"""The built-in teacher's conversion and derived students."""

from __future__ import annotations

import json

import pytest
import torch

from r1distill.builtin_models import CONVERSION, _converted, builtin_gguf_path, gguf_special_tokens
from r1distill.models import derive_student, load_model, load_tokenizer, pick_layers


def test_pick_layers_evenly_spaced():
    assert pick_layers(30, 8) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert pick_layers(30, 2) == [0, 29]
    assert pick_layers(4, 4) == [0, 1, 2, 3]
    with pytest.raises(Exception, match="between 1 and 30"):
        pick_layers(30, 31)


def test_converted_teacher_matches_gguf_logits(teacher_dir):
    from transformers import AutoModelForCausalLM, GgufConfig

    gguf = builtin_gguf_path("smollm2-135m-instruct")
    direct = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    ).eval()
    converted = load_model(str(teacher_dir), dtype="float32", device="cpu")
    assert list(teacher_dir.glob("*.safetensors")), "the converted teacher must be stored as safetensors"
    tok = load_tokenizer(str(teacher_dir))
    ids = tok("Tom has 7 apples and buys 5 more. How many apples does he have?", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = direct(ids).logits, converted(ids).logits
    assert a.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_converted_tokenizer_has_the_gguf_s_special_tokens(teacher_dir, tmp_path):
    """transformers 5.17's GGUF reader made <|im_start|> the eos and left pad unset; the file says <|im_end|> (id 2)
    for both, and the conversion takes them from it, whatever the transformers version."""
    assert gguf_special_tokens(builtin_gguf_path("smollm2-135m-instruct")) == {
        "bos_token": 1, "eos_token": 2, "pad_token": 2, "unk_token": 0}
    tok = load_tokenizer(str(teacher_dir))
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert tok.eos_token_id == tok.pad_token_id == 2
    # A dir from an older conversion (or none recorded) is converted again.
    assert _converted(teacher_dir)
    old = tmp_path / "old"
    old.mkdir()
    (old / "r1distill_source.json").write_text(json.dumps({"builtin": "smollm2-135m-instruct"}))
    assert not _converted(old) and not _converted(tmp_path / "missing") and CONVERSION >= 2


def test_derived_student_copies_chosen_layers(teacher_dir, tmp_path):
    out = derive_student(str(teacher_dir), tmp_path / "s", layers=[0, 15, 29])
    student = load_model(str(out), dtype="float32", device="cpu")
    teacher = load_model(str(teacher_dir), dtype="float32", device="cpu")
    assert student.config.num_hidden_layers == 3
    assert json.loads((out / "r1distill_derived.json").read_text())["layers"] == [0, 15, 29]
    t, s = teacher.state_dict(), student.state_dict()
    for i, src in enumerate([0, 15, 29]):
        key = "mlp.down_proj.weight"
        torch.testing.assert_close(s[f"model.layers.{i}.{key}"], t[f"model.layers.{src}.{key}"])
    for key in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        torch.testing.assert_close(s[key], t[key])
    assert load_tokenizer(str(out)).get_vocab() == load_tokenizer(str(teacher_dir)).get_vocab()
    assert sum(p.numel() for p in student.parameters()) < 0.4 * sum(p.numel() for p in teacher.parameters())


def test_cpu_bf16_is_read_from_cpuinfo_not_assumed(monkeypatch):
    import torch

    from r1distill import models
    from r1distill.train import TrainConfig
    from r1distill.train.skeleton import use_bf16

    spr = "flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    zen4 = "flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
    skylake = "flags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni\n"
    graviton3 = "Features\t: fp asimd sve bf16 i8mm\n"
    assert [models.native_bf16_in(t) for t in (spr, zen4, skylake, graviton3, "")] == [True, True, False, True, False]
    cpu = torch.device("cpu")
    for forced, want in (("1", torch.bfloat16), ("0", torch.float32)):
        monkeypatch.setenv("R1DISTILL_CPU_BF16", forced)
        models.cpu_native_bf16.cache_clear()
        assert models.pick_dtype("auto", cpu) == want and models.pick_dtype("float32", cpu) == torch.float32
        assert use_bf16(TrainConfig()) == (forced == "1") and use_bf16(TrainConfig(bf16=False)) is False
    models.cpu_native_bf16.cache_clear()
