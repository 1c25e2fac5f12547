"""Problem rows, read and checked: the column mapping, the row checks (`Checker`) and the local file formats.

Separate from r1distill.data.problems (the source config, the benchmark registry and the hub loaders) because every
source, local or hub, ends in the same per-row checks, and the trace importer (r1distill.data.sources) reads CSV/TSV
files with the same reader; problems re-exports what its callers use (`read_file`). The column mapping
(`columns: {our field: theirs}`) is described in problems' module docstring.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from r1distill.config import UserError

TEMPLATE_RE = re.compile(r"\{([^{}]+)\}")  # "{Body} {Question}": each {Name} is a column
SHOWN_BAD_ROWS = 5  # bad rows named in the error (all are counted)
SHOWN_COLUMNS = 30  # a file's columns named in an error


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
