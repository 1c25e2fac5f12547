"""Problem sources behind one config: synthetic, local files, named benchmarks and hub datasets.

`load_problems(SourceConfig)` always returns records `{"id", "problem", "answer", **extras}` with
`problem` and `answer` as non-empty strings. Bad rows raise `UserError` naming the file, the row
and the field, so a user can fix the input rather than read a traceback.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1distill.config import ConfigError, UserError
from r1distill.data import synthetic


@dataclass
class SourceConfig:
    name: str = "synthetic"  # synthetic | gsm8k | math500 | aime24 | aime25 | amc23 | file | hf
    path: str | None = None  # file: .jsonl/.json/.parquet; hf: hub dataset id; benchmarks: local JSONL or dir
    split: str = "train"  # synthetic: train | test; hf: the split
    subset: str | None = None  # hf dataset config name
    level: str = "easy"  # synthetic only: easy | medium | hard | mixed
    num_problems: int | None = None  # keep the first N (after shuffle, if any)
    shuffle: bool = False
    seed: int = 0
    columns: dict[str, str] = field(default_factory=dict)  # our field -> source column

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
        return self.name

    def __post_init__(self) -> None:
        if self.name not in SOURCES:
            raise ConfigError(f"Unknown problem source {self.name!r}; set name to {', '.join(SOURCES)}")
        if self.level not in (*synthetic.LEVELS, "mixed"):
            raise ConfigError(f"Unknown level {self.level!r}; set level to easy, medium, hard or mixed")
        if self.num_problems is not None and self.num_problems < 1:
            raise ConfigError(f"num_problems must be >= 1 (got {self.num_problems}); leave it unset for all")
        if self.name == "synthetic" and self.split not in synthetic.SPLITS:
            raise ConfigError(f"Synthetic split must be train or test, got {self.split!r}")
        if self.name in ("file", "hf") and not self.path:
            what = "a .jsonl/.json/.parquet file" if self.name == "file" else "a hub dataset id"
            raise ConfigError(f"Source name={self.name} needs path= set to {what}")


BENCHMARKS = ("gsm8k", "math500", "aime24", "aime25", "amc23")
INTEGER_ANSWERS = ("aime24", "aime25")  # AIME answers are integers 0-999, written without leading zeros
SOURCES = ("synthetic", *BENCHMARKS, "file", "hf")
BENCHMARKS_ENV = "R1DISTILL_BENCHMARKS_DIR"


def load_problems(cfg: SourceConfig) -> list[dict]:
    """Load, optionally shuffle (seeded), and truncate problems for one source."""
    if cfg.name == "synthetic":
        rows = _load_synthetic(cfg)
    elif cfg.name == "file":
        rows = read_file(Path(cfg.path or ""), cfg.columns)
    elif cfg.name in BENCHMARKS:
        rows = _load_benchmark(cfg)
    else:
        rows = _load_hf(cfg)
    if cfg.shuffle:
        random.Random(cfg.seed).shuffle(rows)
    return rows[: cfg.num_problems] if cfg.num_problems else rows


def _load_synthetic(cfg: SourceConfig) -> list[dict]:
    if cfg.split == "train":
        return synthetic.generate_problems(cfg.num_problems or 100, "train", cfg.level, cfg.seed)
    return synthetic.load_test_set(cfg.level)


# ---- records ----------------------------------------------------------------------------------
def _as_text(value: Any, where: str, fld: str) -> str:
    """A problem/answer value as a stripped string; numbers are accepted (18 -> "18")."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"{where}: field {fld!r} must be a string or number, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # Parquet/pandas often store integer answers as floats
    text = str(value).strip()
    if not text:
        raise UserError(f"{where}: field {fld!r} is empty")
    return text


def normalize(row: Any, columns: dict[str, str], where: str, default_id: str) -> dict:
    """Map source columns to our fields and check problem/answer; unmapped keys are kept as extras."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object with problem/answer fields, got {type(row).__name__}")
    rec = {k: v for k, v in row.items() if k not in columns.values()}
    for ours, theirs in columns.items():
        if theirs not in row:
            raise UserError(f"{where}: column {theirs!r} (mapped to {ours!r}) is missing; "
                            f"columns present: {', '.join(map(str, row))}")
        rec[ours] = row[theirs]
    for fld in ("problem", "answer"):
        if rec.get(fld) is None:
            col = columns.get(fld, fld)
            raise UserError(f"{where}: field {fld!r} (column {col!r}) is missing; map it with "
                            f"columns: {{{fld}: <column name>}}")
        rec[fld] = _as_text(rec[fld], where, fld)
    rid = rec.get("id")
    rec["id"] = default_id if rid is None or str(rid).strip() == "" else str(rid)
    return {"id": rec.pop("id"), "problem": rec.pop("problem"), "answer": rec.pop("answer"), **rec}


def _normalize_all(rows: Iterable[tuple[str, Any]], columns: dict[str, str], stem: str) -> list[dict]:
    return [normalize(row, columns, where, f"{stem}/{i}") for i, (where, row) in enumerate(rows)]


# ---- local files ------------------------------------------------------------------------------
def read_file(path: Path, columns: dict[str, str] | None = None) -> list[dict]:
    """Read a .jsonl, .json (a list of objects) or .parquet file of problems."""
    if not path.is_file():
        raise UserError(f"Problem file not found: {path}")
    columns = columns or {}
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _jsonl_rows(path)
    elif suffix == ".json":
        rows = _json_rows(path)
    elif suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise UserError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json or .parquet")
    out = _normalize_all(rows, columns, path.stem)
    if not out:
        raise UserError(f"{path}: no problems found")
    return out


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}: line {lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON at line {e.lineno} ({e.msg})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: a .json problem file must be a list of objects, not {type(data).__name__}")
    for i, row in enumerate(data, start=1):
        yield f"{path}: row {i}", row


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read as Parquet ({e})") from None
    for i, row in enumerate(rows, start=1):
        yield f"{path}: row {i}", row


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


def _load_benchmark(cfg: SourceConfig) -> list[dict]:
    local = _local_benchmark(cfg)
    if local is not None:
        rows = read_file(local, cfg.columns)
    else:
        loaders = {"gsm8k": _hub_gsm8k, "math500": _hub_math500, "aime24": _hub_aime24, "aime25": _hub_aime25,
                   "amc23": _hub_amc23}
        rows = _normalize_all(loaders[cfg.name](), cfg.columns, cfg.name)
    if cfg.name in INTEGER_ANSWERS:  # local files too: a hand-made aime25_test.jsonl may keep the printed "025"
        for r in rows:
            r["answer"] = _integer_text(r["answer"])
    return rows


def _integer_text(text: str) -> str:
    """A zero-padded integer answer without its padding ("025" -> "25"); any other text is kept as it is."""
    return str(int(text)) if text.isdecimal() else text


def _hub(name: str, *args: Any, **kwargs: Any) -> Any:
    """`datasets.load_dataset`, turning any failure into an actionable UserError."""
    try:
        from datasets import load_dataset

        return load_dataset(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 -- offline, missing dataset, auth, import: all end the same way
        raise UserError(
            f"Could not load {name} from the Hugging Face hub ({type(e).__name__}: {e}). The hub may be "
            f"unreachable: set path= to a local {name}_test.jsonl (or a dir holding it), or set "
            f"{BENCHMARKS_ENV} to such a dir."
        ) from None


def _hub_gsm8k() -> Iterator[tuple[str, dict]]:
    for i, row in enumerate(_hub("gsm8k", "openai/gsm8k", "main", split="test")):
        answer = row["answer"].split("####")[-1].strip().replace(",", "")
        rec = {"id": f"gsm8k/test/{i}", "problem": row["question"], "answer": answer,
               "solution": row["answer"]}
        yield f"openai/gsm8k row {i + 1}", rec


def _hub_math500() -> Iterator[tuple[str, dict]]:
    for i, row in enumerate(_hub("math500", "HuggingFaceH4/MATH-500", split="test")):
        yield f"HuggingFaceH4/MATH-500 row {i + 1}", {"id": row["unique_id"], **row}


def _hub_aime24() -> Iterator[tuple[str, dict]]:
    # Hub columns: id (int), problem, solution, answer (str, may be zero-padded), url, year.
    for i, row in enumerate(_hub("aime24", "HuggingFaceH4/aime_2024", split="train")):
        row = dict(row)
        answer = str(row["answer"]).strip()
        m = re.search(r"(\d{4}_AIME_[I]+)_Problems/Problem_(\d+)", str(row.get("url", "")))
        rec = {**row, "id": f"{m[1]}_{m[2]}" if m else f"aime24/{row.get('id', i)}",
               "answer_original": answer, "source_id": str(row.get("id", i))}
        yield f"HuggingFaceH4/aime_2024 row {i + 1}", rec


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
            yield f"opencompass/AIME2025 ({config}) row {n}", rec


def _hub_amc23() -> Iterator[tuple[str, dict]]:
    # math-ai/amc23: split test, 40 rows with columns id (int), question, answer (a number, float in the Parquet:
    # 27.0 becomes "27" in `normalize`) and url (the AoPS page). It is the set lighteval's amc23 task reads
    # (question -> answer), so scores compare with open-r1's. The id is the row index (like gsm8k's), unique
    # whatever the hub's ids are; the hub's own id is kept as source_id.
    for i, row in enumerate(_hub("amc23", "math-ai/amc23", split="test")):
        rec = {k: v for k, v in row.items() if k not in ("id", "question")}
        rec.update(id=f"amc23/test/{i}", problem=row["question"], source_id=str(row.get("id", i)))
        yield f"math-ai/amc23 row {i + 1}", rec


# ---- generic hub datasets ---------------------------------------------------------------------
def _load_hf(cfg: SourceConfig) -> list[dict]:
    ds = _hub(str(cfg.path), cfg.path, cfg.subset, split=cfg.split)
    stem = str(cfg.path).rstrip("/").split("/")[-1]
    rows = ((f"{cfg.path} ({cfg.split}) row {i + 1}", dict(r)) for i, r in enumerate(ds))
    return _normalize_all(rows, cfg.columns, stem)
