"""Shared fixtures: the built-in teacher (converted once per cache) and the shared benchmark files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = REPO.parent / "shared" / "benchmarks"

if SHARED_BENCHMARKS.is_dir():
    os.environ.setdefault("R1DISTILL_BENCHMARKS_DIR", str(SHARED_BENCHMARKS))


@pytest.fixture(scope="session")
def teacher_dir() -> Path:
    """The built-in SmolLM2-135M as a safetensors dir (converted from the GGUF on first use)."""
    from r1distill.models import resolve_model

    return Path(resolve_model("smollm2-135m-instruct"))
