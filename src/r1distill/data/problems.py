"""Problem sources behind one config: synthetic, local files, named benchmarks and hub datasets.

`load_problems(SourceConfig)` always returns records `{"id", "problem", "answer", **extras}` with
`problem` and `answer` as non-empty strings. Every row is checked before a stage uses any: bad rows
(unreadable JSON, a missing, null or empty field, a duplicate id, a gold answer the verifier cannot
grade) are all listed in one `UserError` naming the file and each row, or, with `skip_bad_rows: true`,
left out and counted (`Problems.skipped`), which the stages report.

Column mapping (`columns: {our field: theirs}`), e.g. for SVAMP-style rows
`{"ID": "chal-1", "Body": "Jack had 8 pens.", "Question": "How many pens are left?", "Answer": 5.0}`:
  `columns: {id: ID, problem: [Body, Question], answer: Answer}` -> problem "Jack had 8 pens. How many pens
  are left?", answer "5". A value is one column, a list of columns (joined by a space), or a template
  such as `"{Body} {Question}"` where every `{Name}` is a column. Mapped columns are not kept as extras.
  A column that no row has (a misspelt mapping, or `problem`/`answer` unmapped in a file that names them otherwise)
  is one error with a "did you mean" over the file's columns, whatever `skip_bad_rows` says.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1distill import hub
from r1distill.config import ConfigError, UserError
from r1distill.data import synthetic
from r1distill.data.problem_rows import Checker, read_file

FIELDS = ("id", "problem", "answer", "solution", "source")  # what `columns` may map


@dataclass
class SourceConfig:
    name: str | None = None  # synthetic|gsm8k|math500|aime24|aime25|amc23|file|hf; unset: file if path, else synthetic
    path: str | None = None  # file: .jsonl/.json/.parquet/.csv/.tsv; hf: hub dataset id; benchmarks: local JSONL or dir
    split: str = "train"  # synthetic: train | test; hf: the split
    subset: str | None = None  # hf dataset config name
    level: str = "easy"  # synthetic only: easy | medium | hard | mixed
    num_problems: int | None = None  # keep the first N (after shuffle, if any)
    shuffle: bool = False  # shuffle the problems (by `seed`) before num_problems is taken
    seed: int = 0  # the shuffle's seed
    columns: dict[str, str | list[str]] = field(default_factory=dict)  # ours -> a column, [columns], "{A} {B}"
    skip_bad_rows: bool = False  # leave out (and count) bad rows instead of stopping at them

    @classmethod
    def from_shorthand(cls, value: str) -> "SourceConfig":
        """`gsm8k` in a recipe list means SourceConfig(name="gsm8k"); `synthetic` means its test split."""
        return cls(name=value, split="test") if value == "synthetic" else cls(name=value)

    @property
    def label(self) -> str:
        """A short name for tables and file names, e.g. `gsm8k` or `synthetic-easy`."""
        if self.name == "synthetic":
            return f"synthetic-{self.level}" if self.split == "test" else f"synthetic-{self.split}-{self.level}"
        if self.name in ("file", "hf"):
            return Path(self.path or self.name).stem.replace("/", "_")
        return self.name or "synthetic"

    def __post_init__(self) -> None:
        if self.name is None:  # `{path: mine.jsonl}` alone is a file, not the synthetic default
            self.name = "file" if self.path else "synthetic"
        if self.name not in SOURCES:
            raise ConfigError(f"Unknown problem source {self.name!r}; set name to {', '.join(SOURCES)}")
        if self.level not in (*synthetic.LEVELS, "mixed"):
            raise ConfigError(f"Unknown level {self.level!r}; set level to easy, medium, hard or mixed")
        if self.num_problems is not None and self.num_problems < 1:
            raise ConfigError(f"num_problems must be >= 1 (got {self.num_problems}); leave it unset for all")
        if self.name == "synthetic" and self.split not in synthetic.SPLITS:
            raise ConfigError(f"Synthetic split must be train or test, got {self.split!r}")
        if self.name == "synthetic" and self.path:
            raise ConfigError(f"name: synthetic ignores path {self.path!r}: drop `name` (a path alone is a file) "
                              "or set name: file")
        if self.name in ("file", "hf") and not self.path:
            what = "a .jsonl/.json/.parquet/.csv file" if self.name == "file" else "a hub dataset id"
            raise ConfigError(f"Source name={self.name} needs path= set to {what}")
        for ours, theirs in self.columns.items():
            if ours not in FIELDS:
                close = difflib.get_close_matches(str(ours).lower(), FIELDS, n=1, cutoff=0.7)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"columns: unknown field {ours!r}{hint}; columns maps our fields "
                                  f"({', '.join(FIELDS)}) to your columns, e.g. {{problem: {ours}}}")
            ok = (isinstance(theirs, str) and theirs.strip()) or (
                isinstance(theirs, list) and theirs and all(isinstance(c, str) and c for c in theirs))
            if not ok:
                raise ConfigError(f"columns.{ours}: expected a column name, a list of columns (joined by a space) "
                                  f"or a template such as \"{{Body}} {{Question}}\", got {theirs!r}")


class Problems(list):
    """The records of one source, and the bad rows `skip_bad_rows` left out, counted by kind."""

    def __init__(self, rows: Iterable[dict] = (), skipped: dict[str, int] | None = None):
        super().__init__(rows)
        self.skipped: dict[str, int] = dict(skipped or {})


def fingerprint(problems: Iterable[dict]) -> str:
    """A hash of the problems' content (ids, texts, answers, extras, in order): what resume checks compare,
    so an edited file is noticed whatever its path."""
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps(p, sort_keys=True, default=str).encode() + b"\n")
    return h.hexdigest()[:16]


def prompt_id(source: str, problem: str) -> str:
    """A stable id for a problem: a hash of its source name and text (generate's and import's trace ids)."""
    return hashlib.sha256(f"{source}\n{problem}".encode()).hexdigest()[:16]


BENCHMARKS = ("gsm8k", "math500", "aime24", "aime25", "amc23")
INTEGER_ANSWERS = ("aime24", "aime25")  # AIME answers are integers 0-999, written without leading zeros
SOURCES = ("synthetic", *BENCHMARKS, "file", "hf")
BENCHMARKS_ENV = "R1DISTILL_BENCHMARKS_DIR"


def load_problems(cfg: SourceConfig, check_answers: bool = True) -> Problems:
    """Load, check, optionally shuffle (seeded), and truncate problems for one source.

    check_answers: also refuse gold answers the verifier cannot grade (off for decontamination, which reads
    only the problem texts)."""
    skipped: Counter = Counter()
    check = Checker(cfg.columns, cfg.skip_bad_rows, check_answers, skipped)
    if cfg.name == "synthetic":
        rows = _load_synthetic(cfg)
    elif cfg.name == "file":
        rows = read_file(Path(cfg.path or ""), check)
    elif cfg.name in BENCHMARKS:
        rows = _load_benchmark(cfg, check)
    else:
        rows = _load_hf(cfg, check)
    if cfg.shuffle:
        random.Random(cfg.seed).shuffle(rows)
    return Problems(rows[: cfg.num_problems] if cfg.num_problems else rows, skipped)


def _load_synthetic(cfg: SourceConfig) -> list[dict]:
    if cfg.split == "train":
        return synthetic.generate_problems(cfg.num_problems or 100, "train", cfg.level, cfg.seed)
    return synthetic.load_test_set(cfg.level)


# ---- benchmarks -------------------------------------------------------------------------------
def _local_benchmark(cfg: SourceConfig) -> Path | None:
    """The local JSONL for a benchmark: `path` (file or dir) first, then $R1DISTILL_BENCHMARKS_DIR."""
    fname = f"{cfg.name}_test.jsonl"
    if cfg.path:
        p = Path(cfg.path)
        p = p / fname if p.is_dir() else p
        if not p.is_file():
            raise UserError(f"Benchmark file for {cfg.name} not found: {p}")
        return p
    env = os.environ.get(BENCHMARKS_ENV)
    if env and (Path(env) / fname).is_file():
        return Path(env) / fname
    return None


HUB_BENCHMARKS = {"gsm8k": "openai/gsm8k", "math500": "HuggingFaceH4/MATH-500", "aime24": "HuggingFaceH4/aime_2024",
                  "aime25": "opencompass/AIME2025", "amc23": "math-ai/amc23"}


def _load_benchmark(cfg: SourceConfig, check: Checker) -> list[dict]:
    local = _local_benchmark(cfg)
    if local is not None:
        rows = read_file(local, check)
    else:
        loaders = {"gsm8k": _hub_gsm8k, "math500": _hub_math500, "aime24": _hub_aime24, "aime25": _hub_aime25,
                   "amc23": _hub_amc23}
        rows = check.rows(loaders[cfg.name](), cfg.name, HUB_BENCHMARKS[cfg.name])
    if cfg.name in INTEGER_ANSWERS:  # local files too: a hand-made aime25_test.jsonl may keep the printed "025"
        for r in rows:
            r["answer"] = _integer_text(r["answer"])
    return rows


def _integer_text(text: str) -> str:
    """A zero-padded integer answer without its padding ("025" -> "25"); any other text is kept as it is."""
    return str(int(text)) if text.isdecimal() else text


def _hub(name: str, *args: Any, **kwargs: Any) -> Any:
    """`datasets.load_dataset`, turning any failure into an actionable UserError. When the hub cannot be reached
    (probed once per process) datasets reads its local cache only, so a missing dataset fails at once."""
    offline = hub.offline_reason()
    try:
        from datasets import load_dataset

        return load_dataset(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 -- offline, missing dataset, auth, import: all end the same way
        why = (f"the hub is unreachable ({offline}) and it is not in the local datasets cache" if offline
               else f"{type(e).__name__}: {' '.join(str(e).split())[:300]}. The hub may be unreachable")
        raise UserError(
            f"Could not load {name} from the Hugging Face hub ({why}): set path= to a local {name}_test.jsonl "
            f"(or a dir holding it), or set {BENCHMARKS_ENV} to such a dir."
        ) from None


def _hub_gsm8k() -> Iterator[tuple[str, dict]]:
    for i, row in enumerate(_hub("gsm8k", "openai/gsm8k", "main", split="test")):
        answer = row["answer"].split("####")[-1].strip().replace(",", "")
        rec = {"id": f"gsm8k/test/{i}", "problem": row["question"], "answer": answer,
               "solution": row["answer"]}
        yield f"row {i + 1}", rec


def _hub_math500() -> Iterator[tuple[str, dict]]:
    for i, row in enumerate(_hub("math500", "HuggingFaceH4/MATH-500", split="test")):
        yield f"row {i + 1}", {"id": row["unique_id"], **row}


def _hub_aime24() -> Iterator[tuple[str, dict]]:
    # Hub columns: id (int), problem, solution, answer (str, may be zero-padded), url, year.
    for i, row in enumerate(_hub("aime24", "HuggingFaceH4/aime_2024", split="train")):
        row = dict(row)
        answer = str(row["answer"]).strip()
        m = re.search(r"(\d{4}_AIME_[I]+)_Problems/Problem_(\d+)", str(row.get("url", "")))
        rec = {**row, "id": f"{m[1]}_{m[2]}" if m else f"aime24/{row.get('id', i)}",
               "answer_original": answer, "source_id": str(row.get("id", i))}
        yield f"row {i + 1}", rec


def _hub_aime25() -> Iterator[tuple[str, dict]]:
    # opencompass/AIME2025: configs AIME2025-I and AIME2025-II, split test, 15 rows each with columns question and
    # answer (str). Chosen over yentinglin/aime_2025 (lighteval's aime25) because it keeps the two exams apart as
    # named configs (MIT license). Rows carry no id: the id is the exam and the row's place in it, as the files
    # list problems 1-15 in order.
    for exam in ("I", "II"):
        config = f"AIME2025-{exam}"
        for n, row in enumerate(_hub("aime25", "opencompass/AIME2025", config, split="test"), start=1):
            rec = {k: v for k, v in row.items() if k != "question"}
            rec.update(id=f"2025_AIME_{exam}_{n}", problem=row["question"], answer_original=str(row["answer"]).strip())
            yield f"{config} row {n}", rec


def _hub_amc23() -> Iterator[tuple[str, dict]]:
    # math-ai/amc23: split test, 40 rows with columns id (int), question, answer (a number, float in the Parquet:
    # 27.0 becomes "27" in `normalize`) and url (the AoPS page). It is the set lighteval's amc23 task reads
    # (question -> answer), so scores compare with open-r1's. The id is the row index (like gsm8k's), unique
    # whatever the hub's ids are; the hub's own id is kept as source_id.
    for i, row in enumerate(_hub("amc23", "math-ai/amc23", split="test")):
        rec = {k: v for k, v in row.items() if k not in ("id", "question")}
        rec.update(id=f"amc23/test/{i}", problem=row["question"], source_id=str(row.get("id", i)))
        yield f"row {i + 1}", rec


# ---- generic hub datasets ---------------------------------------------------------------------
def _load_hf(cfg: SourceConfig, check: Checker) -> list[dict]:
    ds = _hub(str(cfg.path), cfg.path, cfg.subset, split=cfg.split)
    stem = str(cfg.path).rstrip("/").split("/")[-1]
    rows = ((f"row {i + 1}", dict(r)) for i, r in enumerate(ds))
    return check.rows(rows, stem, f"{cfg.path} ({cfg.split})")
