"""Eval's sampling streams: one per (problem, sample), so problems in different chunks never share one, and a
killed-and-resumed eval draws exactly the samples an uninterrupted one draws. The built-in model, sampling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1distill import evaluate
from r1distill.backends import Completion, SamplingConfig
from r1distill.data.problems import SourceConfig
from r1distill.evaluate import EvalConfig

MODEL = "smollm2-135m-instruct"


class Killed(Exception):
    """Stands in for SIGKILL between two batches."""


def _bench(tmp_path: Path) -> SourceConfig:
    # q0/q2 and q1/q3 are the same text: with batch_size 4 and k 2 a chunk holds 2 problems, so q2 sits where q0
    # sat in the chunk before. With one stream per chunk (the old seeding) their samples were identical.
    texts = ["What is 3 + 4?", "Tom has 5 apples and buys 6 more. How many now?"] * 3
    path = tmp_path / "twins.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "problem": t, "answer": "7" if i % 2 == 0 else "11"}) + "\n"
                            for i, t in enumerate(texts)))
    return SourceConfig(name="file", path=str(path))


def _samples(out: Path) -> dict[tuple[str, int], str]:
    rows = [json.loads(x) for x in (out / MODEL / "twins.jsonl").read_text().splitlines()]
    return {(r["id"], r["sample_idx"]): r["output"] for r in rows}


def test_streams_are_per_problem_and_a_resumed_eval_equals_an_uninterrupted_one(tmp_path, monkeypatch, teacher_dir):
    from r1distill.backends.hf import HFBackend

    bench = _bench(tmp_path)
    kw = dict(models=[MODEL], benchmarks=[bench], temperature=1.0, top_p=1.0, num_samples=2, max_new_tokens=12,
              batch_size=4, bootstrap=10, seed=3)
    whole = _samples(evaluate.run(EvalConfig(run_dir=str(tmp_path / "whole"), **kw)))
    assert len(whole) == 12
    for a, b in (("q0", "q2"), ("q1", "q3"), ("q2", "q4")):  # same text, different chunks: different streams
        assert [whole[(a, s)] for s in range(2)] != [whole[(b, s)] for s in range(2)], (a, b)
    assert whole[("q0", 0)] != whole[("q0", 1)]  # and a stream per sample

    generate = HFBackend.generate
    calls = []

    def killed_on_second(self, prompts: list[list[dict]], sampling: SamplingConfig, progress=None
                         ) -> list[list[Completion]]:
        calls.append(len(prompts))
        if len(calls) == 2:
            raise Killed
        return generate(self, prompts, sampling, progress)

    monkeypatch.setattr(HFBackend, "generate", killed_on_second)
    cfg = EvalConfig(run_dir=str(tmp_path / "resumed"), **kw)
    with pytest.raises(Killed):
        evaluate.run(cfg)
    assert len(_samples(cfg.out)) == 4  # the first chunk (2 problems x 2 samples) was written
    monkeypatch.setattr(HFBackend, "generate", generate)
    # Resumed with another batch size: the chunks are cut differently, the samples are the same.
    resumed = _samples(evaluate.run(EvalConfig(run_dir=str(tmp_path / "resumed"), **{**kw, "batch_size": 2})))
    assert resumed == whole
