"""The import stage: public trace sets in their own formats (rows shaped like the real datasets') -> trace shards."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from r1distill import ingest, tokenbytes
from r1distill.config import ConfigError, UserError
from r1distill.data import sources
from r1distill.data.traces import KIND_KEY, SPAN_SCHEMA, TOKENIZER_KEY, check_schema, file_metadata, read_table
from r1distill.ingest import ImportConfig
from r1distill.prompts import PromptConfig

SKY_SYSTEM = "Your role as an assistant involves thoroughly exploring questions through a systematic long thinking ..."


@pytest.fixture(scope="module")
def tok(teacher_dir):
    from r1distill.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def run(tmp_path: Path, path: Path | str, fmt: str, name: str = "out", **kw) -> tuple[pa.Table, dict, Path]:
    src = {k: kw.pop(k) for k in ("columns", "markers", "skip_bad_rows", "num_rows") if k in kw}
    cfg = ImportConfig(source=sources.TraceSourceConfig(path=str(path), format=fmt, **src),
                       output_dir=str(tmp_path / name), **kw)
    out = Path(ingest.run(cfg))
    return read_table(out), json.loads((out / "summary.json").read_text()), out


def openr1_row(problem: str, answer: str, solution: str, gens: list[str], finish=None, complete=None) -> dict:
    """A row of open-r1/OpenR1-Math-220k (every column of its card, default config)."""
    return {"problem": problem, "solution": solution, "answer": answer, "problem_type": "Algebra",
            "question_type": "math-word-problem", "source": "olympiads", "uuid": f"u-{abs(hash(problem))}",
            "is_reasoning_complete": complete if complete is not None else [True] * len(gens),
            "generations": gens, "correctness_math_verify": [True] * len(gens), "correctness_llama": None,
            "finish_reasons": finish, "correctness_count": len(gens),
            "messages": [{"content": problem, "role": "user"}, {"content": gens[0], "role": "assistant"}]}


OPENR1 = [
    openr1_row("What is $2+3$?", "5", "Adding, $2+3=\\boxed{5}$.",
               ["<think>\nTwo plus three is five.\n</think>\n\nThe sum is $\\boxed{5}$.",
                "<think>\n2+3=5\n</think>\n\n$\\boxed{5}$"]),
    # no answer: the last \boxed{} of the solution, nested braces and all; the 2nd sample ran out of tokens
    openr1_row("Simplify $\\frac{2}{4}$.", "", "First \\boxed{1}, no: it is $\\boxed{\\frac{1}{2}}$.",
               ["<think>\nHalve both.\n</think>\n\n$\\boxed{\\frac{1}{2}}$", "<think>\nLet me see, 2 over 4 is"],
               finish=["stop", "length"]),
    # is_reasoning_complete false marks a cut-off sample even when its think block closed; a prompt-opened block
    openr1_row("What is $3 \\cdot 3$?", "9", "",
               ["Three threes.\n</think>\n\n$\\boxed{9}$", "<think>\nnine\n</think>\n\nIt is"],
               complete=[True, False]),
]


def test_openr1_jsonl(tmp_path, tok):
    table, summary, out = run(tmp_path, jsonl(tmp_path / "openr1.jsonl", OPENR1), "openr1")
    check_schema(table, SPAN_SCHEMA, "openr1")
    assert table.num_rows == summary["rows"] == 6 and summary["problems"] == 3 and summary["source_rows"] == 3
    rows = table.to_pylist()
    assert [r["sample_idx"] for r in rows] == [0, 1, 0, 1, 0, 1]
    assert [r["finish_reason"] for r in rows] == ["stop", "stop", "stop", "length", "stop", "length"]
    assert summary["finish_reasons"] == {"stop": 4, "length": 2}
    assert [r["answer"] for r in rows[::2]] == ["5", "\\frac{1}{2}", "9"]
    assert rows[4]["completion"] == "<think>\nThree threes.\n</think>\n\n$\\boxed{9}$"  # the prompt's <think> put back
    assert rows[4]["reasoning"] == "Three threes."
    assert rows[0]["prompt"] == PromptConfig().student_messages("What is $2+3$?") and rows[0]["teacher_prompt"] is None
    assert rows[0]["teacher"] == "openr1" and rows[0]["topk_ids"] is None and rows[0]["token_logprobs"] is None
    assert rows[0]["prompt_id"] == ingest.prompt_id("openr1", "What is $2+3$?")
    for r in rows:  # the completion's tokens, + eos when it finished
        ids = tok(r["completion"], add_special_tokens=False)["input_ids"]
        assert r["completion_ids"] == (ids + [tok.eos_token_id] if r["finish_reason"] == "stop" else ids)
        assert r["num_tokens"] == len(r["completion_ids"]) and r["token_bytes_ok"]
        assert sum(r["token_nbytes"]) == len(r["completion"].encode())
    assert rows[0]["completion_ids"][-1] == tok.eos_token_id and rows[3]["completion_ids"][-1] != tok.eos_token_id
    meta = file_metadata(out / "shard-00000.parquet")
    assert meta[KIND_KEY] == "none" and meta[TOKENIZER_KEY] == tokenbytes.fingerprint(tok)
    assert summary["total_tokens"] == sum(r["num_tokens"] for r in rows)
    assert (out / "config.yaml").read_text().count("format: openr1") == 1


def test_openthoughts_parquet(tmp_path):
    """OpenThoughts-114k / Bespoke-Stratos-17k rows (system + ShareGPT conversations, Sky-T1 markers); the answer
    from a mapped column or the reference solution's \\boxed{}."""
    def row(user, thought, solution, close=True, **extra):
        value = (f"<|begin_of_thought|>\n\n{thought}\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n{solution}"
                 + ("\n\n<|end_of_solution|>" if close else ""))
        return {"system": SKY_SYSTEM, "conversations": [{"from": "user", "value": user},
                                                        {"from": "assistant", "value": value}], **extra}

    rows = [row("Return your final response within \\boxed{}. What is 1+1?", "One and one.\n\nTwo.",
                "The answer is \\boxed{2}.", ground_truth_solution="1+1=\\boxed{2}"),
            row("What is 2+2?", "Four.", "So \\boxed{4", close=False, ground_truth_solution="It is $\\boxed{4}$")]
    table, summary, _ = run(tmp_path, parquet(tmp_path / "ot.parquet", rows), "openthoughts")
    got = table.to_pylist()
    assert [r["completion"] for r in got] == ["<think>\nOne and one.\n\nTwo.\n</think>\n\nThe answer is \\boxed{2}.",
                                             "<think>\nFour.\n</think>\n\nSo \\boxed{4"]
    assert [r["finish_reason"] for r in got] == ["stop", "length"] and [r["answer"] for r in got] == ["2", "4"]
    user = "Return your final response within \\boxed{}. What is 1+1?"
    assert got[0]["prompt"] == [{"role": "system", "content": SKY_SYSTEM}, {"role": "user", "content": user}]
    assert got[0]["problem"] == user
    assert got[1]["completion_ids"][-1] != ingest.load("smollm2-135m-instruct").eos_token_id
    # the card's default config has no gold answer: one line saying so, and how to map one
    bare = [{k: v for k, v in r.items() if k != "ground_truth_solution"} for r in rows]
    with pytest.raises(UserError, match="columns: {answer: <column>}") as e:
        run(tmp_path, parquet(tmp_path / "bare.parquet", bare), "openthoughts", name="bare")
    assert "bare.parquet: 2 bad rows: row 1: field 'answer': no gold answer" in str(e.value)
    # ... and with columns.answer mapped to a column of gold answers
    table, _, _ = run(tmp_path, parquet(tmp_path / "gold.parquet", [{**r, "gold": "2"} for r in bare[:1]]),
                      "openthoughts", name="gold", columns={"answer": "gold"})
    assert table.column("answer").to_pylist() == ["2"]


def test_s1k_json_and_chat_formats(tmp_path):
    s1k = [{"solution": "So the answer is $\\boxed{12}$.", "question": "What is 3 times 4?", "cot_type": "math",
            "source_type": "AI-MO/NuminaMath-CoT/aops_forum", "metadata": "{}", "cot": None,
            "thinking_trajectories": ["  Three fours make twelve.\n"], "attempt": "The product is $\\boxed{12}$."}]
    (tmp_path / "s1k.json").write_text(json.dumps(s1k))
    table, _, _ = run(tmp_path, tmp_path / "s1k.json", "s1k", name="s1k")
    r = table.to_pylist()[0]
    assert r["completion"] == "<think>\nThree fours make twelve.\n</think>\n\nThe product is $\\boxed{12}$."
    assert (r["answer"], r["problem"], r["finish_reason"]) == ("12", "What is 3 times 4?", "stop")

    chat = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is 5+5?"},
                          {"role": "assistant", "content": "<think>\nten\n</think>\n\n\\boxed{10}"}],
             "answer": 10},
            {"messages": [{"role": "user", "content": "What is 6+6?"},
                          {"role": "assistant", "content": "\\boxed{12}", "reasoning_content": "six and six"}],
             "solution": "$\\boxed{12}$"}]
    table, _, _ = run(tmp_path, jsonl(tmp_path / "chat.jsonl", chat), "messages", name="chat")
    a, b = table.to_pylist()
    assert a["prompt"] == chat[0]["messages"][:4] and a["problem"] == "What is 5+5?" and a["answer"] == "10"
    assert a["completion"] == "<think>\nten\n</think>\n\n\\boxed{10}"
    assert b["completion"] == "<think>\nsix and six\n</think>\n\n\\boxed{12}" and b["answer"] == "12"

    share = [{"system": "You are a math tutor.", "conversations": [
        {"from": "human", "value": "What is 7+7?"}, {"from": "gpt", "value": "<think>\nfourteen"}], "answer": "14"}]
    table, _, _ = run(tmp_path, jsonl(tmp_path / "share.jsonl", share), "sharegpt", name="share")
    r = table.to_pylist()[0]
    assert r["prompt"] == [{"role": "system", "content": "You are a math tutor."},
                           {"role": "user", "content": "What is 7+7?"}]
    assert (r["completion"], r["finish_reason"]) == ("<think>\nfourteen", "length")


def test_columns_csv_limo(tmp_path, tok):
    """LIMO's columns (question, solution, answer) through `columns:`, from a CSV; a finish_reason column."""
    with (tmp_path / "limo.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "solution", "answer", "finish_reason"])
        w.writerow(["What is 8+1?", "Eight plus one,\nnine. \\boxed{9}", "9", "stop"])
        w.writerow(["What is 8+2?", "Eight plus two is", "10", "length"])
    table, summary, _ = run(tmp_path, tmp_path / "limo.csv", "columns",
                            columns={"problem": "question", "completion": "solution"}, written_by="deepseek-r1")
    rows = table.to_pylist()
    assert [r["completion"] for r in rows] == ["Eight plus one,\nnine. \\boxed{9}", "Eight plus two is"]
    assert [r["finish_reason"] for r in rows] == ["stop", "length"] and rows[0]["reasoning"] is None
    assert rows[1]["completion_ids"] == tok("Eight plus two is", add_special_tokens=False)["input_ids"]
    assert {r["teacher"] for r in rows} == {"deepseek-r1"} and summary["rows"] == 2


BROKEN = {  # format, file rows, what the one-line error names
    "no_assistant_turn": ("messages", [{"messages": [{"role": "user", "content": "Q?"}], "answer": "1"}],
                     "line 2: field 'messages': no assistant turn"),
    "empty_completion": ("columns", [{"problem": "Q?", "answer": "1", "completion": "  "}],
                         "line 2: field 'completion': empty completion"),
    "missing_answer": ("s1k", [{"question": "Q?", "solution": "no box", "thinking_trajectories": "t", "attempt": "a"}],
                       "line 2: field 'answer': no gold answer (no \\boxed{} in 'solution')"),
    "invalid_json": ("columns", ['{"problem": "Q?", "answer": '], "line 2: invalid JSON"),
    "missing_column": ("openr1", [{"problem": "Q?", "answer": "1"}],
                       "line 2: field 'generations': missing (format openr1); columns present: problem, answer"),
}
GOOD = {"messages": {"messages": [{"role": "user", "content": "P?"}, {"role": "assistant", "content": "x"}],
                     "answer": "2"},
        "columns": {"problem": "P?", "answer": "2", "completion": "x"},
        "s1k": {"question": "P?", "solution": "\\boxed{2}", "thinking_trajectories": ["t"], "attempt": "a"},
        "openr1": openr1_row("P?", "2", "", ["x"])}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_bad_row_is_one_line(tmp_path, kind):
    fmt, bad, expected = BROKEN[kind]
    path = jsonl(tmp_path / f"{kind}.jsonl", [GOOD[fmt], *bad])
    cfg = sources.TraceSourceConfig(path=str(path), format=fmt)
    with pytest.raises(UserError) as e:
        sources.scan(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: {expected}"), msg
    assert "skip_bad_rows" in msg
    with pytest.raises(UserError):  # the stage refuses before it writes anything
        ingest.run(ImportConfig(source=cfg, output_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
    found = sources.scan(sources.TraceSourceConfig(path=str(path), format=fmt, skip_bad_rows=True))
    assert (found.samples, found.rows, dict(found.skipped)) == (1, 2, {kind: 1})


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="Unknown trace format 'alpaca'; set format to one of messages, sharegpt"):
        sources.TraceSourceConfig(path="x.jsonl", format="alpaca")
    with pytest.raises(ConfigError, match="unknown field 'question' for format columns"):
        sources.TraceSourceConfig(path="x.jsonl", columns={"question": "q"})
    with pytest.raises(ConfigError, match="unknown key 'open'"):
        sources.TraceSourceConfig(path="x.jsonl", format="openthoughts", markers={"open": "<t>"})
    assert sources.TraceSourceConfig(path="open-r1/OpenR1-Math-220k", format="openr1").name == "hf"
    assert sources.TraceSourceConfig(path=str(tmp_path / "t.parquet")).name == "file"
    with pytest.raises(UserError, match="column 'generations' .* is missing; columns present: problem"):
        sources.scan(sources.TraceSourceConfig(path=str(parquet(tmp_path / "p.parquet", [{"problem": "Q"}])),
                                               format="openr1"))


def test_skip_bad_rows_counts(tmp_path):
    rows = [*OPENR1, "not json", openr1_row("Q?", "", "no box", ["x"]), openr1_row("R?", "1", "", ["", "y"])]
    table, summary, _ = run(tmp_path, jsonl(tmp_path / "mixed.jsonl", rows), "openr1", skip_bad_rows=True)
    assert table.num_rows == summary["rows"] == 7 and summary["source_rows"] == 6
    assert summary["skipped"] == {"invalid_json": 1, "missing_answer": 1, "empty_completion": 1}
    table, _, _ = run(tmp_path, jsonl(tmp_path / "mixed.jsonl", rows), "openr1", name="two", num_rows=2,
                      skip_bad_rows=True)
    assert table.num_rows == 4


def test_resume_after_a_crash_and_rerun(tmp_path, monkeypatch, capsys):
    src = jsonl(tmp_path / "openr1.jsonl", OPENR1 * 2)  # 12 samples; repeated problems count on: sample_idx 0..3
    clean, _, _ = run(tmp_path, src, "openr1", name="clean", shard_size=5)
    real, calls = ingest.write_table_atomic, []

    def crash_on_second(table, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(table, path, metadata=metadata)

    monkeypatch.setattr(ingest, "write_table_atomic", crash_on_second)
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path, src, "openr1", name="out", shard_size=5)
    out = tmp_path / "out"
    assert [p.name for p in sorted(out.glob("*.parquet"))] == ["shard-00000.parquet"]
    first = (out / "shard-00000.parquet").stat().st_mtime_ns
    monkeypatch.setattr(ingest, "write_table_atomic", real)
    table, summary, _ = run(tmp_path, src, "openr1", name="out", shard_size=5)
    assert (out / "shard-00000.parquet").stat().st_mtime_ns == first  # kept, not written again
    assert summary["new_rows"] == 7 and summary["rows"] == table.num_rows == clean.num_rows == 12
    pairs = list(zip(table.column("prompt_id").to_pylist(), table.column("sample_idx").to_pylist()))
    assert len(set(pairs)) == 12 and sorted(pairs) == sorted(zip(clean.column("prompt_id").to_pylist(),
                                                                 clean.column("sample_idx").to_pylist()))
    assert table.column("completion").to_pylist() == clean.column("completion").to_pylist()
    assert max(table.column("sample_idx").to_pylist()) == 3

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    run(tmp_path, src, "openr1", name="out", shard_size=5)  # same config and input: nothing to do
    assert "nothing to do" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes

    jsonl(src, OPENR1)  # the input changed: the old traces are set aside, not lost
    table, _, _ = run(tmp_path, src, "openr1", name="out", shard_size=5)
    assert table.num_rows == 6 and len(list(tmp_path.glob("out.old-*"))) == 1
    assert "no setting differs from its config.yaml: the input did" in " ".join(capsys.readouterr().err.split())


def test_hub_dataset_streamed(tmp_path, monkeypatch):
    """A hub dataset (faked: tests never reach the hub) is streamed; a failure mid-stream is one UserError."""
    import sys
    import types

    from r1distill import hub

    calls = []

    def load_dataset(path, subset=None, **kw):
        calls.append((path, subset, kw))
        if path == "org/broken":
            def rows():
                yield OPENR1[0]
                raise ConnectionError("connection reset")
            return rows()
        return iter(OPENR1)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    hub.reset()  # first: it restores the environment an earlier probe in this session changed
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        table, summary, _ = run(tmp_path, "open-r1/OpenR1-Math-220k", "openr1")
        assert calls[0] == ("open-r1/OpenR1-Math-220k", None, {"split": "train", "streaming": True})
        assert table.num_rows == 6 and set(table.column("teacher").to_pylist()) == {"open-r1/OpenR1-Math-220k"}
        with pytest.raises(UserError, match=r"Could not read org/broken \[train\] from the Hugging Face hub "
                                            r"\(the hub is unreachable \(HF_HUB_OFFLINE is set\)"):
            sources.scan(sources.TraceSourceConfig(path="org/broken", format="openr1"))
    finally:
        hub.reset()


def test_refuses_generated_traces_dir(tmp_path):
    out = tmp_path / "traces"
    out.mkdir()
    (out / "config.yaml").write_text("generate:\n  teacher: x\n")
    (out / "shard-00000.parquet").write_bytes(b"")
    cfg = ImportConfig(source=sources.TraceSourceConfig(path=str(jsonl(tmp_path / "o.jsonl", OPENR1)),
                                                        format="openr1"), output_dir=str(out))
    with pytest.raises(UserError, match="holds traces generate wrote"):
        ingest.run(cfg)
    assert (out / "shard-00000.parquet").exists()


def test_the_shipped_trace_files_import_together_in_one_run(tmp_path, tok):
    """data/traces/ (scripts/make_trace_files.py): one small file per format, imported by one `sources:` list, each
    trace named by its file, the cut-off ones `length`, prompt ids per (file, problem)."""
    from r1distill.config import load_recipe
    from r1distill.pipeline import build_configs

    repo = Path(__file__).resolve().parents[1]
    cfg = build_configs(load_recipe(repo / "recipes" / "cpu-import.yaml", [f"run_dir={tmp_path}"]))["import"]
    for s in cfg.sources:
        s.path = str(repo / s.path)
    out = Path(ingest.run(cfg))
    rows = read_table(out).to_pylist()
    by_file = Counter(r["teacher"] for r in rows)
    # 32 problems per file; OpenR1 rows hold two generations each
    assert by_file == {"openr1": 64, "openthoughts": 32, "sharegpt": 32, "messages": 32, "s1k": 32, "limo": 32}
    assert Counter(r["finish_reason"] for r in rows) == {"stop": 218, "length": 6}  # every 16th of 3 formats
    assert len({(r["prompt_id"], r["sample_idx"]) for r in rows}) == len(rows) == 224
    assert all(r["prompt"][0]["role"] == "system" for r in rows)  # the recipe's format line, or the file's own
    assert all(r["num_tokens"] == len(r["completion_ids"]) and r["token_bytes_ok"] for r in rows)
