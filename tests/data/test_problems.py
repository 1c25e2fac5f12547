"""Problem sources: synthetic generator, frozen test set, benchmark files and the file loader."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from r1distill.config import ConfigError, UserError, from_dict
from r1distill.data import synthetic
from r1distill.data.problems import BENCHMARKS, SourceConfig, load_problems
from r1distill.data.synthetic import LEVELS, generate_problems, is_test_text, load_test_set

BENCH = Path(__file__).resolve().parents[3] / "shared" / "benchmarks"
needs_bench = pytest.mark.skipif(not BENCH.is_dir(), reason=f"local benchmark files not present at {BENCH}")
STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)\.")


def _check_solution(p: dict) -> None:
    """Every `a op b = c` line is exact arithmetic and the last result is the answer."""
    steps = STEP.findall(p["solution"])
    assert steps, p
    for a, op, b, c in steps:
        a, b, c = int(a), int(b), int(c)
        expected = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
        assert expected == c, p
    assert p["solution"].endswith(f"#### {p['answer']}")
    assert int(steps[-1][3]) == int(p["answer"]) >= 0


# ---- synthetic --------------------------------------------------------------------------------
def test_synthetic_deterministic_and_seed_dependent() -> None:
    for level in (*LEVELS, "mixed"):
        a = generate_problems(50, "train", level, seed=7)
        assert a == generate_problems(50, "train", level, seed=7)
        assert a != generate_problems(50, "train", level, seed=8)
        assert [p["id"] for p in a] == [f"synthetic/train/{level}/{i}" for i in range(50)]


def test_synthetic_records_and_arithmetic() -> None:
    for level in LEVELS:
        probs = generate_problems(300, "train", level, seed=3)
        assert len({p["problem"] for p in probs}) == 300
        assert {p["template"] for p in probs} == set(synthetic.TEMPLATES[level])
        for p in probs:
            assert set(p) == {"id", "problem", "answer", "solution", "source", "level", "template"}
            assert p["level"] == level and p["source"] == "synthetic"
            _check_solution(p)
        n_steps = {len(STEP.findall(p["solution"])) for p in probs}
        assert n_steps == ({1} if level != "hard" else {2, 3})


def test_easy_is_small() -> None:
    for p in generate_problems(500, "train", "easy", seed=0):
        assert 0 <= int(p["answer"]) <= 100
        assert all(int(n) <= 20 for n in re.findall(r"\d+", p["problem"])), p["problem"]


def test_mixed_round_robin() -> None:
    probs = generate_problems(9, "train", "mixed", seed=0)
    assert [p["level"] for p in probs] == list(LEVELS) * 3


def test_train_test_disjoint() -> None:
    frozen = {p["problem"] for p in load_test_set()}
    assert all(is_test_text(t) for t in frozen)
    for level in LEVELS:
        train = generate_problems(2000, "train", level, seed=0)
        assert not frozen & {p["problem"] for p in train}
        assert not any(is_test_text(p["problem"]) for p in train)


def test_frozen_test_set() -> None:
    rows = load_test_set()
    assert len(rows) == 600
    assert len({p["problem"] for p in rows}) == 600
    assert [p["level"] for p in rows] == ["easy"] * 400 + ["medium"] * 100 + ["hard"] * 100
    assert [len(load_test_set(level)) for level in LEVELS] == [400, 100, 100]
    # The easy level grew from 100 to 400 by drawing more from the same seed: its first 100 are the old ones.
    assert synthetic.generate_problems(100, "test", "easy", synthetic.TEST_SEED) == load_test_set("easy")[:100]
    for p in rows:
        _check_solution(p)
    assert rows == synthetic.build_test_set(), "data/synthetic_test.jsonl is stale: rerun write_test_set"


def test_synthetic_source() -> None:
    train = load_problems(SourceConfig(num_problems=20, level="medium", seed=1))
    assert train == generate_problems(20, "train", "medium", seed=1)
    assert len(load_problems(SourceConfig(split="test", level="hard"))) == 100
    assert len(load_problems(SourceConfig(split="test", level="mixed"))) == 600
    assert len(load_problems(SourceConfig(split="test", level="easy", num_problems=5))) == 5


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="set name to synthetic, gsm8k"):
        SourceConfig(name="gsm9k")
    with pytest.raises(ConfigError, match="easy, medium, hard or mixed"):
        SourceConfig(level="expert")
    with pytest.raises(ConfigError, match="num_problems must be >= 1"):
        SourceConfig(num_problems=0)
    with pytest.raises(ConfigError, match="needs path="):
        SourceConfig(name="file")
    cfg = from_dict(SourceConfig, {"name": "file", "path": "x.jsonl", "columns": {"problem": "q"}})
    assert cfg.columns == {"problem": "q"}


# ---- benchmarks -------------------------------------------------------------------------------
@needs_bench
def test_benchmarks_from_path() -> None:
    gsm = load_problems(SourceConfig(name="gsm8k", path=str(BENCH / "gsm8k_test.jsonl")))
    assert len(gsm) == 1319 and gsm[0]["answer"] == "18" and gsm[0]["id"] == "gsm8k/test/0"
    assert "solution" in gsm[0]
    assert len(load_problems(SourceConfig(name="math500", path=str(BENCH)))) == 500
    aime = load_problems(SourceConfig(name="aime24", path=str(BENCH)))
    assert len(aime) == 30 and all(a["answer"].isdigit() for a in aime)


@needs_bench
def test_benchmarks_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1DISTILL_BENCHMARKS_DIR", str(BENCH))
    got = load_problems(SourceConfig(name="math500", num_problems=10, shuffle=True, seed=0))
    assert len(got) == 10 and len({p["id"] for p in got}) == 10


def test_benchmark_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="gsm8k_test.jsonl"):
        load_problems(SourceConfig(name="gsm8k", path=str(tmp_path)))


def test_new_benchmarks_from_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"aime25", "amc23"} <= set(BENCHMARKS)
    _jsonl(tmp_path / "aime25_test.jsonl", [{"id": "2025_AIME_I_1", "problem": "P1", "answer": "070"},
                                            {"id": "2025_AIME_I_2", "problem": "P2", "answer": 0}])
    _jsonl(tmp_path / "amc23_test.jsonl", [{"id": "a", "problem": "Q", "answer": 27.0},
                                           {"id": "b", "problem": "R", "answer": "\\frac{1}{2}"}])
    aime = load_problems(SourceConfig(name="aime25", path=str(tmp_path)))
    assert [(p["id"], p["answer"]) for p in aime] == [("2025_AIME_I_1", "70"), ("2025_AIME_I_2", "0")]
    monkeypatch.setenv("R1DISTILL_BENCHMARKS_DIR", str(tmp_path))
    amc = load_problems(SourceConfig(name="amc23"))
    assert [p["answer"] for p in amc] == ["27", "\\frac{1}{2}"]  # not an AIME set: text answers stay as they are
    assert SourceConfig(name="amc23").label == "amc23"


# ---- file loader ------------------------------------------------------------------------------
ROWS = [{"question": "What is 2 + 3?", "final_answer": 5, "uid": "a"},
        {"question": "What is 10 - 4?", "final_answer": "6", "note": "extra"}]
MAPPING = {"problem": "question", "answer": "final_answer", "id": "uid"}
OK = {"problem": "ok", "answer": "1"}


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_file_jsonl_with_mapping(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "mine.jsonl", [ROWS[0], {**ROWS[1], "uid": None}])
    got = load_problems(SourceConfig(name="file", path=str(path), columns=MAPPING))
    assert got[0] == {"id": "a", "problem": "What is 2 + 3?", "answer": "5"}
    assert got[1] == {"id": "mine/1", "problem": "What is 10 - 4?", "answer": "6", "note": "extra"}


def test_file_parquet_and_json(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist([{"question": r["question"], "final_answer": str(r["final_answer"])}
                                         for r in ROWS]), tmp_path / "p.parquet")
    got = load_problems(SourceConfig(name="file", path=str(tmp_path / "p.parquet"),
                                     columns={"problem": "question", "answer": "final_answer"}))
    assert [(g["id"], g["answer"]) for g in got] == [("p/0", "5"), ("p/1", "6")]
    (tmp_path / "j.json").write_text(json.dumps([{"problem": "1 + 1?", "answer": 2.0}]))
    assert load_problems(SourceConfig(name="file", path=str(tmp_path / "j.json")))[0]["answer"] == "2"


def test_file_csv_and_tsv(tmp_path: Path) -> None:
    """ASDiv ships as CSV: a header line, quoted cells with commas and line breaks, a spreadsheet's byte-order mark,
    numbers as text; columns map and join as for any file."""
    path = tmp_path / "asdiv.csv"
    path.write_text('\ufeffID,Body,Question,Answer\n'
                    'nluds-1,"Seven red apples and two green apples are in the basket.",How many apples are in the '
                    'basket?,9\n'
                    '\n'
                    'nluds-2,"Ellen has six more balls than Marin,\nand Marin has nine.",How many balls does Ellen '
                    'have?,15\n', encoding="utf-8")
    got = load_problems(SourceConfig(path=str(path), columns={"id": "ID", "problem": ["Body", "Question"],
                                                               "answer": "Answer"}))
    assert [(g["id"], g["answer"]) for g in got] == [("nluds-1", "9"), ("nluds-2", "15")]
    assert got[1]["problem"] == ("Ellen has six more balls than Marin,\nand Marin has nine. How many balls does "
                                 "Ellen have?")
    (tmp_path / "t.tsv").write_text("problem\tanswer\n1 + 1?\t2\n")
    assert load_problems(SourceConfig(path=str(tmp_path / "t.tsv")))[0] == {"id": "t/0", "problem": "1 + 1?",
                                                                            "answer": "2"}


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("problem,answer\n1 + 1?,2\n2 + 2?,\n", r"bad\.csv: line 3: field 'answer' is empty"),
        ("problem,answer\n1 + 1?,2\n2 + 2?\n", r"bad\.csv: line 3: 1 cells, but the header names 2 columns"),
        ("problem,answer\n1 + 1?,2,extra\n", r"bad\.csv: line 2: 3 cells, but the header names 2 columns"),
        ("question,answer\n1 + 1?,2\n", r"bad\.csv: no row has a column 'problem': map yours with columns: "
                                      r"\{problem: <column name>\}\. The columns: question, answer"),
        ("problem,problem\n1,2\n", r"bad\.csv: line 1: the header must name each column once"),
        ("", r"bad\.csv: empty file"),
    ],
)
def test_file_csv_bad_rows_name_the_line(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=pattern):
        load_problems(SourceConfig(path=str(path)))


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        ([OK, {"problem": "no answer"}], r"bad\.jsonl: line 2: field 'answer'.*missing"),
        ([OK, {"problem": "  ", "answer": "1"}], r"line 2: field 'problem' is empty"),
        ([{"problem": ["a list"], "answer": "1"}], r"line 1: field 'problem' must be a string or number"),
        ([{"problem": "ok", "answer": True}], r"line 1: field 'answer' must be a string or number"),
        ([["not", "an", "object"]], r"line 1: expected an object"),
    ],
)
def test_file_bad_rows(tmp_path: Path, rows: list, pattern: str) -> None:
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError, match=pattern) as e:
        load_problems(SourceConfig(name="file", path=str(path)))
    assert str(path) in str(e.value)


def test_file_bad_json_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n\n{"problem": "b", \n')
    with pytest.raises(UserError, match=r"broken\.jsonl: line 3: invalid JSON"):
        load_problems(SourceConfig(name="file", path=str(path)))
    path = _jsonl(tmp_path / "cols.jsonl", [{"q": "x", "a": "1"}])
    with pytest.raises(UserError, match=r"cols\.jsonl: column 'question' \(mapped to 'problem'\) is in no row"):
        load_problems(SourceConfig(name="file", path=str(path), columns={"problem": "question"}))
    pq.write_table(pa.Table.from_pylist([{"problem": "x", "answer": ""}]), tmp_path / "e.parquet")
    with pytest.raises(UserError, match=r"e\.parquet: row 1: field 'answer' is empty"):
        load_problems(SourceConfig(name="file", path=str(tmp_path / "e.parquet")))
    with pytest.raises(UserError, match="not found"):
        load_problems(SourceConfig(name="file", path=str(tmp_path / "nope.jsonl")))


# ---- hub (faked: the hub is never reached in tests) --------------------------------------------
def _fake_datasets(monkeypatch: pytest.MonkeyPatch, tables: dict[str, list[dict]] | None) -> list[tuple]:
    calls: list[tuple] = []

    def load_dataset(path: str, *args: object, **kwargs: object) -> list[dict]:
        calls.append((path, *args, kwargs))
        if tables is None:
            raise ConnectionError("offline")
        table = tables[path]
        return table[args[0]] if isinstance(table, dict) else table  # a dict of configs: pick the one named

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.delenv("R1DISTILL_BENCHMARKS_DIR", raising=False)
    return calls


def test_hub_benchmarks_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_datasets(monkeypatch, {
        "openai/gsm8k": [{"question": "Q?", "answer": "2 * 600 = 1200\n#### 1,200"}],
        "HuggingFaceH4/aime_2024": [{"id": 60, "problem": "P", "solution": "S", "answer": "025",
                                     "url": "https://x/wiki/index.php/2024_AIME_II_Problems/Problem_4"}],
    })
    gsm = load_problems(SourceConfig(name="gsm8k"))
    assert gsm == [{"id": "gsm8k/test/0", "problem": "Q?", "answer": "1200",
                    "solution": "2 * 600 = 1200\n#### 1,200"}]
    aime = load_problems(SourceConfig(name="aime24"))[0]
    assert (aime["id"], aime["answer"], aime["answer_original"]) == ("2024_AIME_II_4", "25", "025")
    assert calls[0] == ("openai/gsm8k", "main", {"split": "test"})
    assert calls[1] == ("HuggingFaceH4/aime_2024", {"split": "train"})


def test_hub_aime25_and_amc23_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_datasets(monkeypatch, {
        "opencompass/AIME2025": {
            "AIME2025-I": [{"question": "I1?", "answer": "70"}, {"question": "I2?", "answer": "588"}],
            "AIME2025-II": [{"question": "II1?", "answer": "025"}],
        },
        "math-ai/amc23": [{"id": 7, "question": "A?", "answer": 27.0, "url": "https://x/2023_AMC_12A_Problems/Problem_1"},
                          {"id": 7, "question": "B?", "answer": 0.5, "url": "u"}],
    })
    aime = load_problems(SourceConfig(name="aime25"))
    assert [(p["id"], p["problem"], p["answer"]) for p in aime] == [
        ("2025_AIME_I_1", "I1?", "70"), ("2025_AIME_I_2", "I2?", "588"), ("2025_AIME_II_1", "II1?", "25")]
    assert aime[2] == {"id": "2025_AIME_II_1", "problem": "II1?", "answer": "25", "answer_original": "025"}
    assert calls == [("opencompass/AIME2025", "AIME2025-I", {"split": "test"}),
                     ("opencompass/AIME2025", "AIME2025-II", {"split": "test"})]
    amc = load_problems(SourceConfig(name="amc23"))
    assert amc[0] == {"id": "amc23/test/0", "problem": "A?", "answer": "27",
                      "url": "https://x/2023_AMC_12A_Problems/Problem_1", "source_id": "7"}
    assert (amc[1]["id"], amc[1]["answer"]) == ("amc23/test/1", "0.5")  # ids stay unique when the hub's repeat
    assert calls[-1] == ("math-ai/amc23", {"split": "test"})


def test_hf_source_and_unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_datasets(monkeypatch, {"org/ds": [{"q": "1 + 1?", "a": 2}]})
    got = load_problems(SourceConfig(name="hf", path="org/ds", subset="main", split="validation",
                                     columns={"problem": "q", "answer": "a"}))
    assert got == [{"id": "ds/0", "problem": "1 + 1?", "answer": "2"}]
    assert calls == [("org/ds", "main", {"split": "validation"})]
    _fake_datasets(monkeypatch, None)
    with pytest.raises(UserError, match="unreachable.*R1DISTILL_BENCHMARKS_DIR"):
        load_problems(SourceConfig(name="math500"))


def test_a_column_no_row_has_is_one_error_with_a_did_you_mean(tmp_path: Path) -> None:
    # SVAMP-style rows with a misspelt column in the mapping: one error, not one per row, and no skip_bad_rows advice
    # (skipping every row would only find no problems)
    rows = [{"ID": f"chal-{i}", "Body": "Jack had 8 pens.", "Question": "How many?", "Answer": 5.0} for i in range(7)]
    path = _jsonl(tmp_path / "svamp.jsonl", rows)
    mapping = {"id": "ID", "problem": ["Body", "Questoin"], "answer": "Answer"}
    for skip in (False, True):
        with pytest.raises(UserError) as e:
            load_problems(SourceConfig(path=str(path), columns=mapping, skip_bad_rows=skip))
        assert str(e.value) == (f"{path}: column 'Questoin' (mapped to 'problem') is in no row. Did you mean "
                                "'Question'? The columns: ID, Body, Question, Answer")
    # a field left unmapped in a file that names it otherwise
    with pytest.raises(UserError, match=r"no row has a column 'answer': map yours with columns: \{answer: <column "
                                        r"name>\}\. Did you mean 'Answer'\?"):
        load_problems(SourceConfig(path=str(path), columns={"id": "ID", "problem": "Body"}))
    # a column only some rows lack: those rows are bad rows, as before
    with pytest.raises(UserError, match=r"line 2: column 'Question' \(mapped to 'problem'\) is missing.*skip_bad_rows"):
        load_problems(SourceConfig(path=str(_jsonl(tmp_path / "ragged.jsonl", [rows[0], {"Body": "b", "Answer": 1}])),
                                   columns={"problem": "{Body} {Question}", "answer": "Answer"}))
    # a key of ours that is not one of our fields
    with pytest.raises(ConfigError, match=r"columns: unknown field 'question'; columns maps our fields \(id, problem, "
                                          r"answer, solution, source\) to your columns, e\.g\. \{problem: question\}"):
        SourceConfig(path=str(path), columns={"question": "Question", "answer": "Answer"})
    with pytest.raises(ConfigError, match="unknown field 'anwser' \\(did you mean 'answer'\\?\\)"):
        SourceConfig(path=str(path), columns={"problem": "Question", "anwser": "Answer"})
