"""FSDP2 on CPU (gloo), 2 processes, a student with an UNTIED head: the chunked head must gather the head's
DTensor shards inside the forward, and the per-step losses must equal one process's. LoRA on the sharded model:
the adapter gathered to rank 0 and merged onto a fresh base gives the adapter model's logits."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train_fixtures import trace_rows, write_traces

pytestmark = pytest.mark.slow  # 2-process FSDP2 launches

WORKER = Path(__file__).with_name("fsdp2_worker.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def untied_dir(tmp_path_factory, teacher_dir) -> Path:
    """A 1-layer student of the built-in teacher with its own LM head (the teacher's is tied to the embeddings)."""
    from transformers import AutoModelForCausalLM

    from r1distill.models import derive_student, load_tokenizer

    base = tmp_path_factory.mktemp("untied")
    derive_student(str(teacher_dir), base / "tied", layers=[29])
    model = AutoModelForCausalLM.from_pretrained(base / "tied", dtype=torch.float32)
    model.config.tie_word_embeddings = False
    emb = model.get_input_embeddings().weight.detach()
    g = torch.Generator().manual_seed(0)
    model.lm_head.weight = torch.nn.Parameter(emb.clone() * (1 + 0.1 * torch.randn(emb.shape, generator=g)))
    model.save_pretrained(base / "untied")
    load_tokenizer(str(base / "tied")).save_pretrained(base / "untied")
    again = AutoModelForCausalLM.from_pretrained(base / "untied", dtype=torch.float32)
    assert not torch.equal(again.lm_head.weight, again.get_input_embeddings().weight)
    return base / "untied"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(nproc: int, student: Path, curated: Path, out: Path, *extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(student), str(curated), str(out), *extra]
    else:
        cmd = [str(TORCHRUN), "--nproc_per_node", str(nproc), "--master_port", str(_free_port()), str(WORKER),
               str(student), str(curated), str(out), *extra]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(out.read_text())


def test_fsdp2_untied_head_kd_matches_one_process(tmp_path, untied_dir):
    curated = write_traces(tmp_path / "curated", trace_rows(12, seed=5))
    one = _run(1, untied_dir, curated, tmp_path / "one.json")
    two = _run(2, untied_dir, curated, tmp_path / "two.json")
    assert (one["world"], two["world"]) == (1, 2) and len(one["losses"]) == 3
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4), (one, two)
    assert one["losses"][0] != one["losses"][2]  # it trained (lr 1e-3)
    print(f"1 process {one['losses']}\n2 processes (FSDP2) {two['losses']}")


def test_fsdp2_lora_merge_gives_the_adapters_logits(tmp_path, untied_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from r1distill.train.skeleton import merge_lora

    curated = write_traces(tmp_path / "curated", trace_rows(4, seed=6))
    adapter = tmp_path / "adapter"
    _run(2, untied_dir, curated, tmp_path / "lora.json", "--lora", str(adapter))
    merge_lora(str(untied_dir), adapter, tmp_path / "merged")
    ids = torch.tensor([[1, 5, 9, 200, 3000, 12]])
    base = AutoModelForCausalLM.from_pretrained(untied_dir, dtype=torch.float32)
    with torch.no_grad():
        plain = base(ids).logits
        with_adapter = PeftModel.from_pretrained(base, str(adapter)).eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)(ids).logits
    assert (with_adapter - plain).abs().max() > 1e-3  # the adapter (trained one step under FSDP2) matters
    torch.testing.assert_close(merged, with_adapter, atol=1e-4, rtol=1e-4)
