"""The eval stage resumes a killed run: finished samples are kept, only the rest is generated, and samples made
under other settings (the fingerprint) are discarded. One test fakes the backend; the other runs the built-in model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from r1distill import eval_config, eval_metrics, evaluate
from r1distill.backends import Completion, SamplingConfig
from r1distill.config import UserError
from r1distill.data.problems import SourceConfig, load_problems
from r1distill.evaluate import EvalConfig
from r1distill.prompts import R1_INSTRUCTION

MODEL = "smollm2-135m-instruct"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _keys(rows: list[dict]) -> list[tuple[str, int]]:
    return [(r["id"], r["sample_idx"]) for r in rows]


def _problem(messages: list[dict]) -> str:
    """The problem text of a prompt: the user turn less the R1 instruction."""
    return messages[-1]["content"].removesuffix(f"\n{R1_INSTRUCTION}")


class FakeBackend:
    """Answers 0 on even and 1 on odd sample indices, and records the problem text of every prompt it gets."""

    name = "fake"
    model_name = "fake"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, prompts: list[list[dict]], sampling: SamplingConfig, progress=None) -> list[list[Completion]]:
        self.prompts += [_problem(m) for m in prompts]
        return [[Completion(text=f"So \\boxed{{{s % 2}}}.", token_ids=[1, 2, 3], finish_reason="stop")
                 for s in range(sampling.n)] for _ in prompts]


def test_per_benchmark_k_drives_resume_fingerprint_and_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    (bench_dir / "math500_test.jsonl").write_text(
        "".join(json.dumps({"id": f"m{i}", "problem": f"Problem {i}?", "answer": "1"}) + "\n" for i in range(3)))
    fake = FakeBackend()
    monkeypatch.setattr(evaluate, "get_backend", lambda *args, **kwargs: fake)
    monkeypatch.setattr(eval_config, "check_model", lambda name: name)  # no such model: the fake stands in for it
    cfg = EvalConfig(run_dir=str(tmp_path / "run"), models=["fake-model"],
                     benchmarks=[SourceConfig(name="math500", path=str(bench_dir))])
    out = evaluate.run(cfg)  # R1's defaults: k = 4 on math500
    path = out / "fake-model" / "math500.jsonl"
    assert len(fake.prompts) == 3 and len(set(_keys(_rows(path)))) == 12
    m = json.loads((out / "summary.json").read_text())["fake-model"]["math500"]
    assert (m["k"], m["pass@1"], m["pass@4"]) == (4, 0.5, 1.0) and "pass@8" not in m
    assert "math500 maj@4" in (out / "results.md").read_text()

    # a problem with only some of its k samples is redone whole; the finished ones are kept
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-2]))
    fake.prompts.clear()
    evaluate.run(cfg)
    assert fake.prompts == ["Problem 2?"]
    assert sorted(_keys(_rows(path))) == [(f"m{i}", s) for i in range(3) for s in range(4)]

    # another k is another fingerprint: everything is generated again
    fake.prompts.clear()
    evaluate.run(dataclasses.replace(cfg, num_samples=2))
    assert len(fake.prompts) == 3 and sorted(_keys(_rows(path))) == [(f"m{i}", s) for i in range(3) for s in range(2)]


class Killed(Exception):
    """Stands in for SIGKILL: the run stops mid-benchmark without any clean-up."""


def test_killed_run_resumes_with_the_built_in_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, teacher_dir):
    from r1distill.backends.hf import HFBackend

    bench = SourceConfig(name="synthetic", split="test", level="easy", num_problems=6)
    problems = load_problems(bench)
    generate = HFBackend.generate
    prompts: list[list[str]] = []  # the problem texts of each generate call
    kill_on_call = [2]

    def counted(self, batch: list[list[dict]], sampling: SamplingConfig, progress=None) -> list[list[Completion]]:
        prompts.append([_problem(m) for m in batch])
        if len(prompts) in kill_on_call:
            raise Killed
        return generate(self, batch, sampling, progress)

    monkeypatch.setattr(HFBackend, "generate", counted)
    cfg = EvalConfig(run_dir=str(tmp_path), models=[MODEL], benchmarks=[bench], temperature=0.0,
                     max_new_tokens=16, batch_size=2)  # greedy, k = 1: 3 batches of 2 problems
    path = cfg.out / MODEL / "synthetic-easy.jsonl"
    with pytest.raises(Killed):
        evaluate.run(cfg)
    first = _rows(path)
    assert _keys(first) == [(p["id"], 0) for p in problems[:2]]  # the first batch was written before the kill
    with path.open("a") as f:
        f.write('{"benchmark": "synthetic-easy", "id": "synthetic/te')  # a line the kill cut short

    prompts.clear()
    kill_on_call.clear()
    evaluate.run(cfg)
    assert prompts == [[p["problem"] for p in problems[2:4]], [p["problem"] for p in problems[4:]]]
    final = _rows(path)
    assert sorted(_keys(final)) == sorted((p["id"], 0) for p in problems) and len(final) == 6
    assert final[:2] == first  # kept as they were, not generated again
    summary = json.loads((cfg.out / "summary.json").read_text())[MODEL]["synthetic-easy"]
    assert (summary["problems"], summary["samples"], summary["k"]) == (6, 6, 1)

    prompts.clear()
    evaluate.run(cfg)  # nothing left to do: no generation
    assert prompts == [] and _rows(path) == final

    # other generation settings change the fingerprint: the old samples are discarded, all 6 are redone
    evaluate.run(dataclasses.replace(cfg, max_new_tokens=8))
    assert sum(len(p) for p in prompts) == 6
    redone = _rows(path)
    assert len(redone) == 6 and all(r["num_tokens"] <= 8 for r in redone)


class HangingBackend(FakeBackend):
    """The first problem's output makes sympy evaluate 9^(9^9) (minutes); the others answer 1."""

    def generate(self, prompts, sampling, progress=None):
        super().generate(prompts, sampling, progress)
        text = lambda m: "So $\\boxed{9^{9^{9}}}$." if _problem(m) == "Problem 0?" else "So \\boxed{1}."
        return [[Completion(text=text(m), token_ids=[1, 2], finish_reason="stop")] for m in prompts]


def test_an_output_that_hangs_the_verifier_is_cut_at_the_hard_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import time

    from r1distill.verify import hard_limit

    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"Problem {i}?", "answer": "1"}) + "\n"
                            for i in range(3)))
    monkeypatch.setattr(evaluate, "get_backend", lambda *args, **kwargs: HangingBackend())
    monkeypatch.setattr(eval_config, "check_model", lambda name: name)  # no such model: the fake stands in for it
    cfg = EvalConfig(run_dir=str(tmp_path / "run"), models=["fake"], temperature=0.0, verify_timeout=1.0,
                     benchmarks=[SourceConfig(name="file", path=str(path))], bootstrap=10)
    t0 = time.monotonic()
    out = evaluate.run(cfg)
    elapsed = time.monotonic() - t0
    assert elapsed < hard_limit(1.0) + 30, elapsed  # the limit (4 s) plus process starts (busy machine), not minutes
    rows = {r["id"]: r for r in _rows(out / "fake" / "bench.jsonl")}
    assert rows["p0"]["correct"] is False and rows["p1"]["correct"] and rows["p2"]["correct"]
    assert json.loads((out / "summary.json").read_text())["fake"]["bench"]["pass@1"] == pytest.approx(2 / 3)


def test_an_asdiv_style_file_scores_what_the_outputs_deserve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Golds stored with their unit in parentheses, as ASDiv does: graded by value (was 0.000 for every output)."""
    bench = tmp_path / "asdiv.jsonl"
    rows = [("a1", "9 (apples)"), ("a2", "0.5 (km)"), ("a3", "15 (balls)"), ("a4", "30^\\circ")]
    bench.write_text("".join(json.dumps({"id": i, "problem": f"Problem {i}?", "answer": a}) + "\n" for i, a in rows))
    said = {"a1": "So \\boxed{9}.", "a2": "The answer is 0.5 km.", "a3": "The answer is 14 balls.", "a4": "\\boxed{30}"}

    class Outputs(FakeBackend):
        def generate(self, prompts, sampling, progress=None):
            return [[Completion(text=said[_problem(m).removeprefix("Problem ").rstrip("?")], token_ids=[1],
                                finish_reason="stop")] for m in prompts]

    monkeypatch.setattr(evaluate, "get_backend", lambda *args, **kwargs: Outputs())
    monkeypatch.setattr(eval_config, "check_model", lambda name: name)
    cfg = EvalConfig(run_dir=str(tmp_path / "run"), models=["fake-model"], temperature=0.0, num_samples=1,
                     benchmarks=[SourceConfig(path=str(bench))])
    out = evaluate.run(cfg)
    got = {r["id"]: (r["pred_answer"], r["correct"]) for r in _rows(out / "fake-model" / "asdiv.jsonl")}
    assert got == {"a1": ("9", True), "a2": ("0.5 km", True), "a3": ("14", False), "a4": ("30", True)}
    assert json.loads((out / "summary.json").read_text())["fake-model"]["asdiv"]["pass@1"] == 0.75
    # a gold the verifier can never match is an error when the file is read, before any model runs
    bench.write_text(json.dumps({"id": "b1", "problem": "Problem b1?", "answer": "nine (apples)"}) + "\n")
    with pytest.raises(UserError, match=r"line 1: answer 'nine \(apples\)' cannot be graded: it is a number in words "
                                        r"with a unit: write the number in digits \(9\)"):
        load_problems(SourceConfig(path=str(bench)))


class ManyAnswersBackend(FakeBackend):
    """Sample s answers ANSWERS[s]: 4 distinct answers among 8 samples."""

    ANSWERS = ["1", "2", "1", "3", "2", "4", "1", "4"]

    def generate(self, prompts, sampling, progress=None):
        super().generate(prompts, sampling, progress)
        return [[Completion(text=f"So \\boxed{{{self.ANSWERS[s]}}}.", token_ids=[1, 2], finish_reason="stop")
                 for s in range(sampling.n)] for _ in prompts]


def test_maj_at_k_compares_each_pair_of_distinct_answers_once_and_a_rerun_not_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The slow comparisons (Math-Verify) are counted in a file: they may run in a worker process.
    calls = tmp_path / "calls.txt"
    calls.touch()

    def counted(pred: str, gold: str, timeout: float = 5.0) -> bool:
        with calls.open("a") as f:
            f.write(f"{pred} {gold}\n")
        return False

    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"id": "p0", "problem": "Problem 0?", "answer": "1"}) + "\n")
    monkeypatch.setattr(evaluate, "get_backend", lambda *args, **kwargs: ManyAnswersBackend())
    monkeypatch.setattr(eval_config, "check_model", lambda name: name)
    monkeypatch.setattr(eval_metrics, "is_equivalent", counted)
    cfg = EvalConfig(run_dir=str(tmp_path / "run"), models=["fake"], num_samples=8, bootstrap=10,
                     benchmarks=[SourceConfig(name="file", path=str(path))])
    out = evaluate.run(cfg)
    # equal strings are one group without a comparison: 2-1, 3-1, 3-2, 4-1, 4-2, 4-3
    assert len(calls.read_text().splitlines()) == 6
    assert json.loads((out / "summary.json").read_text())["fake"]["bench"]["maj@k"] == 1.0  # "1" x3 is right
    evaluate.run(cfg)  # a rerun reads the comparisons from eval/maj_cache.json
    assert len(calls.read_text().splitlines()) == 6


def test_maj_at_k_stops_a_pathological_comparison_at_the_hard_limit_even_off_the_main_thread():
    import threading

    # Off the main thread Math-Verify has no alarm: without a worker, sympy would compute 9^(9^(9^9)) for ever.
    answers = ["\\boxed{9^{9^{9^{9^{1}}}}}", "\\boxed{9^{9^{9^{9^{2}}}}}", "\\boxed{9^{9^{9^{9^{1}}}}}"]
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(eval_metrics.majority_correct(answers, [True, False, True],
                                                                                      timeout=1.0)), daemon=True)
    worker.start()
    worker.join(120)  # generous: one comparison, cut at hard_limit(1) = 4 s
    assert result == [True]
