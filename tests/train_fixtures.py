"""Helpers for the training tests: small trace datasets written as curated shards (random completion tokens with a
teacher top-k around them) and a small, fast train config. The students they train are conftest's fixtures."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from r1distill.data.traces import CURATED_SCHEMA, rows_to_table, write_table_atomic
from r1distill.models import StudentConfig
from r1distill.train import LossConfig, TrainConfig


def trace_rows(n: int, lengths: list[int] | None = None, k: int = 4, seed: int = 0, topk: bool = True) -> list[dict]:
    """n curated rows: a short chat prompt, completion_ids of the given lengths (default 12..20), and a
    top-k whose first id is the completion token (log-probs sorted, summing to < 1)."""
    rng = np.random.default_rng(seed)
    lengths = lengths or [int(x) for x in rng.integers(12, 21, n)]
    rows = []
    for i, t in enumerate(lengths):
        comp = rng.integers(100, 5000, t).astype(np.int32)
        ids = np.concatenate([comp[:, None], rng.integers(5000, 9000, (t, k - 1))], axis=1).astype(np.int32)
        lps = np.sort(np.log(rng.dirichlet(np.ones(k + 1), t)[:, :k]), axis=1)[:, ::-1].astype(np.float16)
        rows.append({
            "prompt_id": f"p{i}", "sample_idx": 0, "problem": f"What is {i} + {i}?", "answer": str(2 * i),
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "completion": "",
            "completion_ids": comp.tolist(), "topk_ids": ids.tolist() if topk else None,
            "topk_logprobs": lps.tolist() if topk else None, "finish_reason": "stop", "num_tokens": t,
            "teacher": "test", "gen_config_hash": "x", "correct": True, "format_ok": True,
        })
    return rows


def write_traces(directory: Path, rows: list[dict]) -> Path:
    write_table_atomic(rows_to_table(rows, CURATED_SCHEMA), directory / "data-00000.parquet")
    return directory


def train_config(tmp: Path, student: Path, traces: Path, **kw) -> TrainConfig:
    """A small, fast config: 1 epoch, batch 2, lr 1e-3, no warmup, constant schedule, no report_to, alpha 0.5.
    Keywords that are LossConfig fields (alpha, temperature, divergence, beta, topk_mode, topk, chunk_size) go
    into train.loss; the rest into TrainConfig."""
    loss = {"alpha": 0.5} | {k: kw.pop(k) for k in list(kw) if k in LossConfig.__dataclass_fields__}
    base = {"run_dir": str(tmp), "student": StudentConfig(name=str(student)), "teacher": str(student),
            "input_dir": str(traces), "output_dir": str(tmp / "student"), "objective": "kd",
            "loss": LossConfig(**loss), "epochs": 1.0, "batch_size": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0,
            "lr_scheduler": "constant", "report_to": [], "max_length": 64, "cache_dir": str(tmp / "token_cache")}
    base.update(kw)
    return TrainConfig(**base)


def train_killed_at_first_checkpoint(args: list[str], work: Path, log: Path) -> Path:
    """`python -m r1distill.cli *args` SIGKILLed as soon as its first complete checkpoint is in `work`; returns it."""
    from r1distill.train import latest_checkpoint

    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "r1distill.cli", *args], stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 600
            while latest_checkpoint(work) is None and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    ckpt = latest_checkpoint(work)
    assert ckpt is not None
    return ckpt
