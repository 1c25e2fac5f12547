"""Issue 13, your own data: one test per numbered item, each failing on the behaviour the issue found and passing
now. They use the built-in model where a model is needed (a few problems, a few tokens) and the real CLI where the
user would; the hub is made unreachable for real (HF_ENDPOINT on a closed port, or HF_HUB_OFFLINE)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from r1distill import curate, evaluate, hub, rerun
from r1distill import train as train_stage
from r1distill.cli import main
from r1distill.config import ConfigError, UserError, from_dict, load_recipe, stage_config, write_resolved
from r1distill.data.problems import SourceConfig, load_problems
from r1distill.data.traces import read_table, rows_to_table, write_table_atomic
from r1distill.evaluate import EvalConfig
from r1distill.verify import extract_answer
from train_fixtures import trace_rows, train_config, write_traces

MODEL = "smollm2-135m-instruct"
REPO = Path(__file__).resolve().parents[1]
CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens there: every connection is refused at once


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _one_error_line(capsys, rc: int) -> str:
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("r1distill: error: "), err
    return lines[0]


def _said(capsys) -> str:
    """What the run printed (both streams), with rich's line wrapping undone."""
    return " ".join("".join(capsys.readouterr()).split())


def _cli(args: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """The CLI in a fresh process (its own hub probe), timed from start to exit."""
    full = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # offline only when a test says so
    full.update({"PYTHONPATH": str(REPO / "src"), **(env or {})})
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "r1distill.cli", *args], capture_output=True, text=True, env=full,
                          timeout=300)
    return done, time.perf_counter() - t0


def _eval(tmp_path: Path, bench: str, *extra: str) -> list[str]:
    """CLI arguments for a tiny greedy eval of the built-in model on a benchmark written as YAML."""
    return ["eval", f"run_dir={tmp_path / 'run'}", f"eval.models=[{MODEL}]", f"eval.benchmarks=[{bench}]",
            "eval.temperature=0", "eval.max_new_tokens=12", "eval.bootstrap=10", *extra]


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())[MODEL]


STORY = "Tom has 3 apples and buys 4 more. How many apples does he have now?"


# 1 ---------------------------------------------------------------------------------------------------------------
def test_1_a_path_alone_is_the_file_not_the_synthetic_set(tmp_path, teacher_dir):
    mine = _jsonl(tmp_path / "mine.jsonl", [{"id": "q1", "problem": STORY, "answer": "7"}])
    assert SourceConfig(path=str(mine)).name == "file" and SourceConfig().name == "synthetic"
    assert main(_eval(tmp_path, f"{{path: {mine}}}")) == 0
    out = tmp_path / "run" / "eval" / MODEL
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["mine.jsonl"]  # was synthetic-train-easy.jsonl
    rows = [json.loads(x) for x in (out / "mine.jsonl").read_text().splitlines()]
    assert [(r["id"], r["answer"]) for r in rows] == [("q1", "7")]
    assert _summary(tmp_path)["mine"]["problems"] == 1
    with pytest.raises(ConfigError, match="name: synthetic ignores path"):
        SourceConfig(name="synthetic", path=str(mine))


# 2 ---------------------------------------------------------------------------------------------------------------
def test_2_an_edited_gold_answer_is_scored_again(tmp_path, teacher_dir, capsys, monkeypatch):
    """Only the gold changed: the stored output is graded again, and the model is not run (nor loaded)."""
    bench = tmp_path / "mine.jsonl"
    _jsonl(bench, [{"id": "q1", "problem": STORY, "answer": "987654"}])
    args = _eval(tmp_path, f"{{path: {bench}}}", "eval.last_number=true")  # grade whatever number it ends on
    assert main(args) == 0
    first = json.loads((tmp_path / "run" / "eval" / MODEL / "mine.jsonl").read_text())
    assert first["pred_answer"] is not None and first["correct"] is False
    assert _summary(tmp_path)["mine"]["pass@1"] == 0.0

    _jsonl(bench, [{"id": "q1", "problem": STORY, "answer": first["pred_answer"]}])  # the gold fixed in place
    from r1distill import evaluate

    loads = []
    monkeypatch.setattr(evaluate, "get_backend", lambda *a, **kw: loads.append(a) or 1 / 0)
    assert main(args) == 0
    assert loads == []  # no model call: re-graded
    second = json.loads((tmp_path / "run" / "eval" / MODEL / "mine.jsonl").read_text())
    assert (second["answer"], second["correct"], second["output"]) == (first["pred_answer"], True, first["output"])
    assert _summary(tmp_path)["mine"]["pass@1"] == 1.0  # was the cached 0.0
    moved = list((tmp_path / "run" / "eval" / MODEL).glob("mine.old-*.jsonl"))
    assert len(moved) == 1 and json.loads(moved[0].read_text()) == first  # the old verdicts are kept aside
    assert "re-graded 1 stored samples" in _said(capsys)
    # an edited problem text is another output: the model runs again
    monkeypatch.undo()
    _jsonl(bench, [{"id": "q1", "problem": STORY + " Be brief.", "answer": first["pred_answer"]}])
    assert main(args) == 0 and "moved them to" in _said(capsys)


def test_2_generate_refuses_to_resume_problems_whose_answer_changed(tmp_path, teacher_dir):
    from r1distill import generate

    bench = _jsonl(tmp_path / "mine.jsonl", [{"id": "q", "problem": "What is 2 + 2?", "answer": "5"}])
    cfg = from_dict(generate.GenerateConfig, {"run_dir": str(tmp_path), "source": {"path": str(bench)},
                                              "num_samples": 1, "max_new_tokens": 4, "topk_logprobs": 0})
    generate.run(cfg)
    before = {p.name: p.read_bytes() for p in cfg.out.glob("*.parquet")}
    _jsonl(bench, [{"id": "q", "problem": "What is 2 + 2?", "answer": "4"}])  # the gold fixed in place
    with pytest.raises(UserError, match=r"1 problems whose gold answer has changed since they were generated "
                                        r"\(q: '5' -> '4'\)"):
        generate.run(cfg)  # was: resumed as done, the traces keeping the old answer
    assert {p.name: p.read_bytes() for p in cfg.out.glob("*.parquet")} == before


# 3 ---------------------------------------------------------------------------------------------------------------
def test_3_duplicate_ids_and_ungradeable_answers_are_errors_or_skipped_and_counted(tmp_path, teacher_dir, capsys):
    path = _jsonl(tmp_path / "bad.jsonl", [
        {"id": "a", "problem": STORY, "answer": "7"},
        {"id": "a", "problem": "What is 1 + 1?", "answer": "2"},  # duplicate id: was merged into one problem
        {"id": "b", "problem": "What is 6 + 6?", "answer": "twelve"},  # was accepted and always graded wrong
        {"id": "c", "problem": "What is 2 + 2?", "answer": None},  # was reported as "missing"
        '{"id": "d", "problem": ',  # a broken line
        {"id": "e", "problem": "What is 3 + 3?", "answer": "6"},
    ])
    with pytest.raises(UserError) as e:
        load_problems(SourceConfig(path=str(path)))
    msg = str(e.value)
    assert msg.startswith(f"{path}: 4 bad rows: line 2: duplicate id 'a' (first at line 1); line 3: answer 'twelve' "
                          "cannot be graded: it is a number in words")
    assert "write it in digits (12)" in msg and "line 4: field 'answer' is null" in msg
    assert "line 5: invalid JSON" in msg and "skip_bad_rows: true" in msg and "\n" not in msg

    skipping = SourceConfig(path=str(path), skip_bad_rows=True)
    got = load_problems(skipping)
    assert [p["id"] for p in got] == ["a", "e"]
    assert got.skipped == {"duplicate_id": 1, "ungradeable_answer": 1, "bad_row": 2}

    assert main(_eval(tmp_path, f"{{path: {path}, skip_bad_rows: true}}", "eval.num_samples=2",
                      "eval.temperature=0.6")) == 0
    m = _summary(tmp_path)["bad"]
    assert (m["problems"], m["samples"]) == (2, 4)  # was problems: 1 (the duplicate merged in)
    assert m["skipped"] == {"duplicate_id": 1, "ungradeable_answer": 1, "bad_row": 2}
    assert "not scored: 1 duplicate_id, 1 ungradeable_answer, 2 bad_row" in _said(capsys)


# 4 ---------------------------------------------------------------------------------------------------------------
def test_4_eval_needs_a_stated_answer_by_default(tmp_path, teacher_dir):
    assert EvalConfig().last_number is False
    problems = [{"id": f"q{i}", "problem": f"What is {a} + {b}? Show the calculation.", "answer": str(a + b)}
                for i, (a, b) in enumerate([(12, 30), (7, 8), (25, 25)])]
    bench = _jsonl(tmp_path / "sums.jsonl", problems)
    assert main(_eval(tmp_path, f"{{path: {bench}}}", "eval.max_new_tokens=10")) == 0
    m = _summary(tmp_path)["sums"]
    outputs = [json.loads(x)["output"] for x in (tmp_path / "run" / "eval" / MODEL / "sums.jsonl").read_text()
               .splitlines()]
    # Cut off after 10 tokens, the outputs end in numbers: the old default called them answered.
    assert m["truncated"] == 1.0
    assert sum(extract_answer(o, last_number=True).answer is not None for o in outputs) >= 2
    assert m["answered"] == 0.0 and m["pass@1"] == 0.0


# 5 ---------------------------------------------------------------------------------------------------------------
def _hand_traces(d: Path, n: int = 4) -> Path:
    rows = [{"prompt_id": f"p{i}", "sample_idx": 0, "problem": f"Problem number {i}: what is {i} + {i}?",
             "answer": str(2 * i), "prompt": [{"role": "user", "content": f"what is {i} + {i}?"}],
             "completion": f"{i} + {i} = {2 * i}. The answer is {2 * i}.", "reasoning": None,
             "completion_ids": [1, 2, 3], "topk_ids": None, "topk_logprobs": None, "finish_reason": "stop",
             "num_tokens": 3, "teacher": "mine", "gen_config_hash": "mine"} for i in range(n)]
    write_table_atomic(rows_to_table(rows), d / "shard-00000.parquet")
    return d


def test_5_offline_decontamination_says_skipped_after_one_fast_failure(tmp_path):
    traces = _hand_traces(tmp_path / "my_traces")
    empty = tmp_path / "no_benchmarks"
    empty.mkdir()
    done, seconds = _cli(["curate", f"run_dir={tmp_path}", f"curate.input_dir={traces}"],
                         env={"HF_ENDPOINT": CLOSED_PORT, "R1DISTILL_BENCHMARKS_DIR": str(empty)})
    assert done.returncode == 0, done.stderr
    stats = json.loads((tmp_path / "curated" / "stats.json").read_text())
    print(f"offline curate with the default decontamination: {seconds:.1f} s in all, {stats['seconds']} s in the "
          "stage (was 2 min 0.5 s with 25 retry lines)")
    assert seconds < 30 and "Retrying" not in done.stdout + done.stderr
    assert stats["decontamination_skipped"] == ["gsm8k", "math500", "aime24", "aime25", "amc23"]
    md = (tmp_path / "curated" / "stats.md").read_text()
    assert "| contaminated | skipped | 4 |" in md and "| contaminated | 0 |" not in md  # was "contaminated | 0"
    assert "Decontamination skipped (could not be loaded): gsm8k, math500, aime24, aime25, amc23" in md
    assert (done.stdout + done.stderr).count("warning") == 1  # was 5 warning blocks


def test_5_a_silent_hub_costs_one_probe_timeout(monkeypatch):
    """A hub that accepts the connection and never answers (the slow kind of offline) costs one probe."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list = []  # the accepted connection, kept open and silent
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub.reset()
    try:
        t0 = time.perf_counter()
        why = hub.offline_reason()
        first = time.perf_counter() - t0
        probes = []
        monkeypatch.setattr(hub, "_probe", lambda: probes.append(1))
        assert hub.offline_reason() == why and not probes  # asked once per process: no second probe
    finally:
        hub.reset()
        server.close()
    assert why is not None and "timed out" in why and first < hub.PROBE_TIMEOUT + 1


# 6 ---------------------------------------------------------------------------------------------------------------
def test_6_a_broken_input_leaves_the_previous_samples_and_summary(tmp_path, teacher_dir, capsys):
    bench = _jsonl(tmp_path / "mine.jsonl", [{"id": f"q{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)}
                                             for i in range(3)])
    args = _eval(tmp_path, f"{{path: {bench}}}")
    assert main(args) == 0
    out = tmp_path / "run" / "eval"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    with bench.open("a") as f:
        f.write('{"id": "q3", "problem": "What is 3 + 1?", "answer": \n')
    line = _one_error_line(capsys, main([*args, "eval.max_new_tokens=16"]))  # another config: would move aside
    assert f"{bench}: line 4: invalid JSON" in line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # samples were deleted first


def test_6_a_failed_batch_keeps_the_finished_ones(tmp_path, teacher_dir, monkeypatch):
    from r1distill.backends.hf import HFBackend

    bench = _jsonl(tmp_path / "mine.jsonl", [{"id": f"q{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)}
                                             for i in range(4)])
    generate, calls = HFBackend.generate, []

    def second_fails(self, prompts, sampling, progress=None):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise RuntimeError("out of memory (as the 200 KB problem's batch was)")
        return generate(self, prompts, sampling, progress)

    monkeypatch.setattr(HFBackend, "generate", second_fails)
    cfg = from_dict(EvalConfig, {"run_dir": str(tmp_path), "models": [MODEL], "benchmarks": [{"path": str(bench)}],
                                 "temperature": 0.0, "max_new_tokens": 8, "batch_size": 2, "bootstrap": 10})
    with pytest.raises(RuntimeError, match="out of memory"):
        evaluate.run(cfg)
    path = cfg.out / MODEL / "mine.jsonl"
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["q0", "q1"]
    calls.clear()
    evaluate.run(cfg)
    assert calls == [2]  # only the failed batch is redone
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["q0", "q1", "q2", "q3"]


# 7 ---------------------------------------------------------------------------------------------------------------
def test_7_a_200kb_problem_is_skipped_and_named_while_its_batch_is_scored(tmp_path, teacher_dir, monkeypatch, capsys):
    huge = "Count the apples. " + "apple " * 34_000  # 200 KB, about 34k tokens: 4x the model's 8192
    rows = [{"id": "small-1", "problem": "What is 2 + 2?", "answer": "4"},
            {"id": "huge", "problem": huge, "answer": "34000"},
            {"id": "small-2", "problem": "What is 3 + 3?", "answer": "6"}]
    bench = _jsonl(tmp_path / "mine.jsonl", rows)
    assert len(huge) > 200_000
    args = _eval(tmp_path, f"{{path: {bench}}}", "eval.batch_size=32")  # all three in one batch
    assert main(args) == 0
    out = _said(capsys)
    assert "1 problems skipped: prompt + max_new_tokens (12) exceed the context of" in out and "huge" in out
    m = _summary(tmp_path)["mine"]
    assert (m["problems"], m["samples"]) == (2, 2)
    assert m["skipped"] == {"prompt_too_long": 1} and m["skipped_ids"] == {"prompt_too_long": ["huge"]}
    samples = (tmp_path / "run" / "eval" / MODEL / "mine.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in samples) == ["small-1", "small-2"]
    assert "not scored: 1 prompt_too_long (too long: huge)" in (tmp_path / "run" / "eval" / "results.md").read_text()

    monkeypatch.setattr(evaluate, "get_backend", lambda *a, **k: pytest.fail("nothing is left to generate"))
    assert main(args) == 0  # the skip is remembered: a rerun loads no model
    assert _summary(tmp_path)["mine"]["skipped_ids"] == {"prompt_too_long": ["huge"]}


def test_7_generate_names_the_prompts_it_skips(tmp_path, teacher_dir, capsys):
    from r1distill import generate

    bench = _jsonl(tmp_path / "mine.jsonl", [{"id": "small", "problem": "What is 2 + 2?", "answer": "4"},
                                             {"id": "huge", "problem": "apple " * 34_000, "answer": "1"}])
    cfg = from_dict(generate.GenerateConfig, {"run_dir": str(tmp_path), "source": {"path": str(bench)},
                                              "num_samples": 1, "max_new_tokens": 4, "topk_logprobs": 0})
    out = generate.run(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == {"prompt_too_long": 1} and summary["skipped_ids"] == {"prompt_too_long": ["huge"]}
    assert summary["problems"] == 1 and "1 problems skipped" in _said(capsys)  # was a count without a name


def test_7_max_new_tokens_past_the_context_is_an_error(tmp_path, teacher_dir, capsys):
    bench = _jsonl(tmp_path / "mine.jsonl", [{"id": "q", "problem": "What is 2 + 2?", "answer": "4"}])
    assert main(_eval(tmp_path, f"{{path: {bench}}}", "eval.max_new_tokens=32768")) == 2
    err = capsys.readouterr().err  # the model's loading bar, then the error
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and line.startswith("r1distill: error: ")
    assert "eval.max_new_tokens=32768 leaves no room for a prompt in the context of" in line and "8192" in line


# 8 ---------------------------------------------------------------------------------------------------------------
def test_8_curate_reruns_keep_or_move_aside_their_results(tmp_path):
    traces = _hand_traces(tmp_path / "my_traces")
    cfg = curate.CurateConfig(run_dir=str(tmp_path), input_dir=str(traces), decontaminate=[], num_workers=1)
    out = curate.run(cfg)
    data = out / "data-00000.parquet"
    first = data.stat().st_mtime_ns
    assert curate.run(cfg) == out and data.stat().st_mtime_ns == first  # same config and input: done, not redone

    good = (traces / "shard-00000.parquet").read_bytes()
    write_table_atomic(read_table(traces).drop_columns(["answer"]), traces / "shard-00000.parquet")  # broken input
    with pytest.raises(UserError, match="missing column 'answer'"):
        curate.run(curate.CurateConfig(**{**cfg.__dict__, "max_per_problem": 1}))  # another config
    assert data.stat().st_mtime_ns == first and not list(tmp_path.glob("curated.old-*"))  # was deleted first
    (traces / "shard-00000.parquet").write_bytes(good)
    assert curate.run(cfg) == out and data.stat().st_mtime_ns == first

    _hand_traces(traces, n=3)  # another input: the old results are moved aside
    out = curate.run(cfg)
    aside = sorted(p.name for p in tmp_path.glob("curated.old-*"))
    assert len(aside) == 1 and read_table(tmp_path / aside[0]).num_rows == 4
    assert read_table(out).num_rows == 3


def test_13_a_stage_that_sets_results_aside_names_what_changed(tmp_path, capsys):
    # One rule for every stage (rerun.py): results of another config are never mixed nor deleted, and the line that
    # says so names the settings that differ; curate moves them aside, generate refuses (its dir is shared).
    traces = _hand_traces(tmp_path / "my_traces")
    cfg = curate.CurateConfig(run_dir=str(tmp_path), input_dir=str(traces), decontaminate=[], num_workers=1)
    curate.run(cfg)
    capsys.readouterr()
    curate.run(curate.CurateConfig(**{**cfg.__dict__, "max_per_problem": 1, "num_workers": 2}))
    said = _said(capsys)
    assert "changed: max_per_problem: None -> 1)" in said and "num_workers" not in said and "moved them to" in said
    _hand_traces(traces, n=3)  # the same config, another input
    curate.run(curate.CurateConfig(**{**cfg.__dict__, "max_per_problem": 1}))
    assert "no setting differs from its config.yaml: the input did" in _said(capsys)
    assert len(list(tmp_path.glob("curated.old-*"))) == 2


def test_8_train_reruns_keep_or_move_aside_the_student(tmp_path, student_dir, capsys):
    curated = write_traces(tmp_path / "curated", trace_rows(4))
    cfg = train_config(tmp_path, student_dir, curated, objective="sft")
    out = train_stage.run(cfg)
    weights = out / "model.safetensors"
    first = weights.read_bytes()
    stamp = rerun.read_stamp(out)["stamp"]
    assert train_stage.run(cfg) == out and weights.read_bytes() == first  # was silently trained again
    assert "nothing to do" in _said(capsys)

    train_stage.run(train_config(tmp_path, student_dir, curated, objective="sft", learning_rate=1e-2))
    aside = tmp_path / f"student.old-{stamp}"
    assert (aside / "model.safetensors").read_bytes() == first  # was overwritten
    assert weights.read_bytes() != first


# 9 ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "env", "expected"), [
    ("smollm2-135m-instruc", {}, "Did you mean 'smollm2-135m-instruct'?"),
    ("org/no-such-model", {"HF_ENDPOINT": CLOSED_PORT}, f"cannot connect to {CLOSED_PORT}"),
    ("org/no-such-model", {"HF_HUB_OFFLINE": "1"}, "(HF_HUB_OFFLINE is set)"),
])
def test_9_an_unknown_model_name_fails_fast_in_one_line(tmp_path, name, env, expected):
    done, seconds = _cli(["generate", f"run_dir={tmp_path}", f"generate.teacher={name}",
                          "generate.source.num_problems=2"], env={"HF_ENDPOINT": CLOSED_PORT, **env})
    print(f"{name} {env}: exit {done.returncode} after {seconds:.2f} s (was 51.5 s, a traceback and exit 1)")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], done.stderr
    # a fresh process importing torch and transformers, no network wait: ~3 s alone, more on a loaded machine
    # (the bound tells it from the 51.5 s of retries it replaced, not from a quiet machine's time)
    assert seconds < 20
    assert not (tmp_path / "traces").exists()  # nothing touched


# 10 --------------------------------------------------------------------------------------------------------------
def test_10_columns_join_or_fill_a_template(tmp_path, teacher_dir):
    svamp = [{"ID": "chal-1", "Body": "Jack had 8 pens and gave 3 away.", "Question": "How many pens are left?",
              "Answer": 5.0}]
    path = _jsonl(tmp_path / "svamp.jsonl", svamp)
    joined = load_problems(SourceConfig(path=str(path), columns={"id": "ID", "problem": ["Body", "Question"],
                                                                  "answer": "Answer"}))
    templated = load_problems(SourceConfig(path=str(path), columns={"id": "ID", "problem": "{Body} {Question}",
                                                                     "answer": "Answer"}))
    assert joined == templated == [{"id": "chal-1", "problem": "Jack had 8 pens and gave 3 away. How many pens are "
                                                               "left?", "answer": "5"}]
    with pytest.raises(UserError, match=r"column 'Title' \(mapped to 'problem'\) is in no row"):
        load_problems(SourceConfig(path=str(path), columns={"problem": "{Title}: {Body}", "answer": "Answer"}))
    with pytest.raises(ConfigError, match="columns.problem: expected a column name, a list"):
        SourceConfig(path=str(path), columns={"problem": []})
    # the mapping as the user types it (was TypeError: unhashable type: 'list')
    assert main(_eval(tmp_path, f"{{path: {path}, columns: {{id: ID, problem: [Body, Question], answer: Answer}}}}",
                      )) == 0
    assert _summary(tmp_path)["svamp"]["problems"] == 1


def test_10_every_written_config_is_a_recipe_for_its_stage(tmp_path, teacher_dir):
    from r1distill.pipeline import STAGES, build_configs

    configs = build_configs(load_recipe(REPO / "recipes" / "quickstart.yaml", [f"run_dir={tmp_path}"]))
    configs |= build_configs(load_recipe(REPO / "recipes" / "cpu-import.yaml", [f"run_dir={tmp_path}"]))
    for name, cls, _ in STAGES:  # import and score from cpu-import.yaml, the others from the quickstart's
        path = write_resolved(configs[name], tmp_path / name, name)
        assert stage_config(load_recipe(path), name, cls) == configs[name], name
    # and one as a stage wrote it, run again from the file (was: Unknown key 'models')
    bench = _jsonl(tmp_path / "mine.jsonl", [{"id": "q", "problem": "What is 2 + 2?", "answer": "4"}])
    assert main(_eval(tmp_path, f"{{path: {bench}}}")) == 0
    assert main(["eval", str(tmp_path / "run" / "eval" / "config.yaml")]) == 0


def test_10_input_dir_is_documented_and_curates_ones_own_traces(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["curate", "--help"])
    assert "curate.input_dir=DIR reads every *.parquet in DIR" in capsys.readouterr().out
    readme = (REPO / "README.md").read_text()
    own = readme[readme.index("## Your own data"):]
    assert "curate.input_dir=" in own and "problem: [Body, Question]" in own and "r1distill import run_dir=" in own
    out = curate.run(curate.CurateConfig(run_dir=str(tmp_path), input_dir=str(_hand_traces(tmp_path / "mine")),
                                         decontaminate=[], num_workers=1))
    assert json.loads((out / "stats.json").read_text())["kept"] == 4


def test_10_the_screenshot_fits_the_whole_report(tmp_path):
    """The script's plumbing, with a stand-in for Chromium (none is installed here): the height it measures on a
    first pass is the height it shoots at."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.html").write_text("<html><body><main>report</main></body></html>")
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "chromium"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n"
                    "case \"$*\" in *--dump-dom*) echo '<body data-page-height=\"6123\">';; esac\n")
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(REPO / "scripts" / "screenshot_report.sh"), str(run), str(tmp_path / "r.png")],
                          capture_output=True, text=True, env={**os.environ, "CHROMIUM": str(fake)})
    assert done.returncode == 0, done.stderr
    shots = [c for c in calls.read_text().splitlines() if "--screenshot" in c]
    assert len(shots) == 1 and "--window-size=1280,6139" in shots[0]  # was a fixed 1280,4000
    probe = [c for c in calls.read_text().splitlines() if "--dump-dom" in c]
    assert len(probe) == 1 and "--window-size=1280," in probe[0]


def test_fingerprints_cover_content_not_paths(tmp_path):
    (tmp_path / "a").mkdir()
    a = _jsonl(tmp_path / "a" / "mine.jsonl", [{"id": "q", "problem": "p", "answer": "1"}])
    b = _jsonl(tmp_path / "mine.jsonl", [{"id": "q", "problem": "p", "answer": "1"}])
    cfg = EvalConfig(run_dir=str(tmp_path))
    fa = evaluate._fingerprint(cfg, MODEL, SourceConfig(path=str(a)), 1, load_problems(SourceConfig(path=str(a))))
    fb = evaluate._fingerprint(cfg, MODEL, SourceConfig(path=str(b)), 1, load_problems(SourceConfig(path=str(b))))
    assert fa == fb  # the same problems under another path
    _jsonl(b, [{"id": "q", "problem": "p", "answer": "2"}])
    assert evaluate._fingerprint(cfg, MODEL, SourceConfig(path=str(b)), 1,
                                 load_problems(SourceConfig(path=str(b)))) != fa
    assert np.unique([rerun.fingerprint([_hand_traces(tmp_path / d, n).joinpath("shard-00000.parquet")])
                      for d, n in (("t1", 2), ("t2", 2), ("t3", 3))]).size == 2  # same content, same hash
