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
from functools import lru_cache
from pathlib import Path
from typing import Any

from r1distill import hub
from r1distill.config import ConfigError, UserError
from r1distill.data import synthetic

TEMPLATE_RE = re.compile(r"\{([^{}]+)\}")  # "{Body} {Question}": each {Name} is a column
FIELDS = ("id", "problem", "answer", "solution", "source")  # what `columns` may map
SHOWN_BAD_ROWS = 5  # bad rows named in the error (all are counted)
SHOWN_COLUMNS = 30  # a file's columns named in an error


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


# ---- records ----------------------------------------------------------------------------------
class RowError(UserError):
    """One bad row: `kind` counts it when skipped (bad_row | duplicate_id | ungradeable_answer)."""

    def __init__(self, message: str, kind: str = "bad_row"):
        super().__init__(message)
        self.kind = kind


def _as_text(value: Any, where: str, fld: str, empty_ok: bool = False) -> str:
    """A problem/answer value as a stripped string; numbers are accepted (18 -> "18", 18.0 -> "18")."""
    if value is None:
        raise RowError(f"{where}: field {fld!r} is null")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError(f"{where}: field {fld!r} must be a string or number, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # Parquet/pandas often store integer answers as floats
    text = str(value).strip()
    if not text and not empty_ok:
        raise RowError(f"{where}: field {fld!r} is empty")
    return text


def _source_columns(spec: str | list[str]) -> list[str]:
    """The columns one mapping value reads: itself, the list, or the template's {Name}s."""
    if isinstance(spec, list):
        return list(spec)
    return TEMPLATE_RE.findall(spec) or [spec]


def _mapped(row: dict, ours: str, spec: str | list[str], where: str) -> Any:
    """Our field `ours` from a row: one column's value as it is, or the text of a join or template."""
    for col in _source_columns(spec):
        if col not in row:
            raise RowError(f"{where}: column {col!r} (mapped to {ours!r}) is missing; "
                           f"columns present: {', '.join(map(str, row))}")
    if isinstance(spec, str) and not TEMPLATE_RE.search(spec):
        return row[spec]
    parts = {c: _as_text(row[c], where, c, empty_ok=True) for c in _source_columns(spec)}
    if isinstance(spec, list):
        return " ".join(v for v in parts.values() if v)
    return TEMPLATE_RE.sub(lambda m: parts[m[1]], spec)


def normalize(row: Any, columns: dict[str, str | list[str]], where: str, default_id: str) -> dict:
    """Map source columns to our fields and check problem/answer; unmapped keys are kept as extras."""
    if not isinstance(row, dict):
        raise RowError(f"{where}: expected an object with problem/answer fields, got {type(row).__name__}")
    used = {c for spec in columns.values() for c in _source_columns(spec)}
    rec = {k: v for k, v in row.items() if k not in used}
    for ours, spec in columns.items():
        rec[ours] = _mapped(row, ours, spec, where)
    for fld in ("problem", "answer"):
        if fld not in rec:
            col = columns.get(fld, fld)
            raise RowError(f"{where}: field {fld!r} (column {col!r}) is missing; map it with "
                           f"columns: {{{fld}: <column name>}}")
        rec[fld] = _as_text(rec[fld], where, fld)
    rid = rec.get("id")
    rec["id"] = default_id if rid is None or str(rid).strip() == "" else str(rid)
    return {"id": rec.pop("id"), "problem": rec.pop("problem"), "answer": rec.pop("answer"), **rec}


_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}


def _number_in_words(text: str) -> int | None:
    """12 for "twelve", 105 for "one hundred and five"; None unless the text is only number words."""
    words = [w for w in re.split(r"[\s-]+", text.strip().lower().rstrip(".")) if w]
    if not words or words == ["and"]:
        return None
    total = current = 0
    for w in words:
        if w in _UNITS:
            current += _UNITS.index(w)
        elif w in _TENS:
            current += 10 * (_TENS.index(w) + 2)
        elif w == "hundred":
            current = max(current, 1) * 100
        elif w in _SCALES:
            total, current = total + max(current, 1) * _SCALES[w], 0
        elif w != "and":
            return None
    return total + current


_UNIT_AFTER_RE = re.compile(r"\s*\([A-Za-z][A-Za-z .'/-]*\)\s*$|(?<=[a-z])\s+[A-Za-z]+\s*$")  # "(apples)", " apples"


@lru_cache(maxsize=65536)
def ungradeable(answer: str) -> str | None:
    """Why a gold answer can never be matched by the verifier (None when it can be)."""
    if (n := _number_in_words(answer)) is not None:
        return f"it is a number in words, which extracted answers never are: write it in digits ({n})"
    if (n := _number_in_words(_UNIT_AFTER_RE.sub("", answer))) is not None and _UNIT_AFTER_RE.search(answer):
        return f"it is a number in words with a unit: write the number in digits ({n}); the unit may stay"
    from r1distill.verify import verify_answer  # math-verify is a heavy import: only when there are golds

    if not verify_answer("", answer).gold_ok:
        return "the verifier reads neither a number nor a math expression in it"
    return None


@dataclass
class Checker:
    """Checks the rows of one source as they are read, and raises (or counts, with `skip`) the bad ones."""

    columns: dict[str, str | list[str]]
    skip: bool
    check_answers: bool
    skipped: Counter

    def rows(self, rows: Iterable[tuple[str, Any]], stem: str, origin: str) -> list[dict]:
        """rows: (where, record or RowError) pairs, `where` a row's place ("line 3"); origin: the file or
        dataset, named once at the start of the error."""
        out: list[dict] = []
        bad: list[RowError] = []
        first_at: dict[str, str] = {}
        needed = self.needed_columns()
        lacking: Counter = Counter()  # needed column -> objects without it
        seen: dict[str, None] = {}  # every column of the objects, in order
        objects = 0
        for i, (where, row) in enumerate(rows):
            if isinstance(row, dict):
                objects += 1
                seen.update(dict.fromkeys(map(str, row)))
                lacking.update(c for c in needed if c not in row)
            try:
                if isinstance(row, RowError):
                    raise row
                rec = normalize(row, self.columns, where, f"{stem}/{i}")
                if rec["id"] in first_at:
                    raise RowError(f"{where}: duplicate id {rec['id']!r} (first at {first_at[rec['id']]})",
                                   "duplicate_id")
                if self.check_answers and (why := ungradeable(rec["answer"])):
                    raise RowError(f"{where}: answer {rec['answer']!r} cannot be graded: {why}", "ungradeable_answer")
            except RowError as e:
                bad.append(e)
                continue
            first_at[rec["id"]] = where
            out.append(rec)
        if objects and (nowhere := [c for c in needed if lacking[c] == objects]):
            raise UserError(f"{origin}: {self.nowhere_message(nowhere[0], list(seen))}")
        if bad and not self.skip:
            shown = "; ".join(str(e) for e in bad[:SHOWN_BAD_ROWS])
            more = f"; ... and {len(bad) - SHOWN_BAD_ROWS} more" if len(bad) > SHOWN_BAD_ROWS else ""
            count = f"{len(bad)} bad rows: " if len(bad) > 1 else ""
            raise UserError(f"{origin}: {count}{shown}{more} ({'fix it' if len(bad) == 1 else 'fix them'}, or set "
                            "skip_bad_rows: true to leave bad rows out, counted)")
        self.skipped.update(e.kind for e in bad)
        if not out:
            raise UserError(f"{origin}: no problems found" + (f" ({len(bad)} bad rows left out)" if bad else ""))
        return out

    def needed_columns(self) -> list[str]:
        """The columns every row must have: those the mapping reads, and problem/answer when they are not mapped."""
        mapped = [c for spec in self.columns.values() for c in _source_columns(spec)]
        return list(dict.fromkeys(mapped + [f for f in ("problem", "answer") if f not in self.columns]))

    def nowhere_message(self, col: str, present: list[str]) -> str:
        """Why no row can be read when no row has column `col`: a misspelt mapping, or an unmapped field."""
        close = difflib.get_close_matches(col, present, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        ours = [o for o, spec in self.columns.items() if col in _source_columns(spec)]
        what = (f"column {col!r} (mapped to {ours[0]!r}) is in no row" if ours else
                f"no row has a column {col!r}: map yours with columns: {{{col}: <column name>}}")
        shown = ", ".join(present[:SHOWN_COLUMNS]) + (" ..." if len(present) > SHOWN_COLUMNS else "")
        return f"{what}.{hint} The columns: {shown}"


# ---- local files ------------------------------------------------------------------------------
def read_file(path: Path, check: Checker | None = None) -> list[dict]:
    """Read and check a .jsonl, .json (a list of objects), .parquet or .csv/.tsv (with a header line) file of
    problems."""
    if not path.is_file():
        raise UserError(f"Problem file not found: {path}")
    check = check or Checker({}, False, True, Counter())
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _jsonl_rows(path)
    elif suffix == ".json":
        rows = _json_rows(path)
    elif suffix == ".parquet":
        rows = _parquet_rows(path)
    elif suffix in (".csv", ".tsv"):
        rows = csv_rows(path, "\t" if suffix == ".tsv" else ",")
    else:
        raise UserError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json, .parquet, .csv or .tsv")
    return check.rows(rows, path.stem, str(path))


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"line {lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                yield f"line {lineno}", RowError(f"line {lineno}: invalid JSON ({e.msg})")


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON at line {e.lineno} ({e.msg})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: a .json problem file must be a list of objects, not {type(data).__name__}")
    for i, row in enumerate(data, start=1):
        yield f"row {i}", row


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read as Parquet ({e})") from None
    for i, row in enumerate(rows, start=1):
        yield f"row {i}", row


def csv_rows(path: Path, delimiter: str) -> Iterator[tuple[str, Any]]:
    """The records of a CSV/TSV file under its header line. Every cell is text (an empty answer cell is an empty
    answer, a bad row); a record with more or fewer cells than the header is a bad row. A record's place is the
    line it ends on (a quoted cell may span lines)."""
    import csv

    with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: a spreadsheet's byte-order mark is not a column
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise UserError(f"{path}: empty file (a CSV needs a header line naming its columns)") from None
        except csv.Error as e:
            raise UserError(f"{path}: line 1: cannot read as CSV ({e})") from None
        if len(set(header)) != len(header) or not all(h.strip() for h in header):
            raise UserError(f"{path}: line 1: the header must name each column once, got {header}")
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield f"line {reader.line_num}", RowError(f"line {reader.line_num}: cannot read as CSV ({e})")
                continue
            where = f"line {reader.line_num}"
            if not cells:  # a blank line
                continue
            if len(cells) != len(header):
                yield where, RowError(f"{where}: {len(cells)} cells, but the header names {len(header)} columns")
                continue
            yield where, dict(zip(header, cells))


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
