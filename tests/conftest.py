"""Shared fixtures, registered here once: the built-in teacher (converted once per cache), the shared benchmark files,
one end-to-end run of the tiny recipe per test session (shared by the pipeline and report tests), and the 1-layer
students the training tests train (the teacher's tokenizer, and a BPE one for cross-tokenizer KD)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = REPO.parent / "shared" / "benchmarks"
TINY = Path(__file__).with_name("tiny.yaml")

# The suite's numerics must not depend on the host: dtype "auto" is fp32 on every CPU here (tests of the bf16
# path set R1DISTILL_CPU_BF16 themselves).
os.environ.setdefault("R1DISTILL_CPU_BF16", "0")

if SHARED_BENCHMARKS.is_dir():
    os.environ.setdefault("R1DISTILL_BENCHMARKS_DIR", str(SHARED_BENCHMARKS))


@pytest.fixture(scope="session")
def teacher_dir() -> Path:
    """The built-in SmolLM2-135M as a safetensors dir (converted from the GGUF on first use)."""
    from r1distill.models import resolve_model

    return Path(resolve_model("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def teacher_fp32(teacher_dir):
    """The built-in teacher in fp32 on the CPU, the reference the backends' stored log-probs are checked against."""
    from r1distill.models import load_model

    return load_model(str(teacher_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, teacher_dir) -> Path:
    """`r1distill run tests/tiny.yaml` through the real CLI, once per session: every stage's outputs, run.json and
    the report. Tests may rerun it (stages skip) but must not change its outputs."""
    from r1distill.cli import main

    d = tmp_path_factory.mktemp("run") / "tiny"
    assert main(["run", str(TINY), f"run_dir={d}"]) == 0
    return d


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory, teacher_dir) -> Path:
    """A 1-layer student (layer 29 of SmolLM2-135M; embeddings, norm and tied head copied), made once."""
    from r1distill.models import derive_student

    out = tmp_path_factory.getbasetemp() / "student_1layer"
    if not (out / "model.safetensors").exists():
        derive_student(str(teacher_dir), out, layers=[29])
    return out


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory) -> Path:
    from r1distill.data.toy_tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(tmp_path_factory.getbasetemp() / "bpe_tokenizer")


@pytest.fixture(scope="session")
def xtok_student_dir(tmp_path_factory, teacher_dir, bpe_tokenizer_dir) -> Path:
    """A 1-layer student of the built-in teacher with the BPE tokenizer (embeddings by vocabulary transfer)."""
    from r1distill.models import derive_student

    out = tmp_path_factory.getbasetemp() / "student_1layer_bpe"
    if not (out / "model.safetensors").exists():
        derive_student(str(teacher_dir), out, layers=[29], tokenizer=str(bpe_tokenizer_dir))
    return out
