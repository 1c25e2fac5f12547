"""Trace sets from elsewhere, read in their own formats: OpenR1-Math, OpenThoughts / Bespoke-Stratos, s1K, chat
(`messages`) or ShareGPT rows, and plain columns (LIMO, your own files).

Why: the public reasoning trace sets each have a layout of their own, and the `import` stage (r1distill.ingest)
turns any of them into trace shards that curate, score and train read like generated ones. A format is a preset of
a column mapping (`PRESETS`: our field -> their column); `columns:` renames any of them, so a file shaped like a
preset under other column names needs no code.

`iter_samples(cfg)` yields one `Sample` per completion (OpenR1 rows hold several), or a `BadRow` for each row (or
OpenR1 generation) that cannot become one; `scan(cfg)` is the cheap first pass a stage runs before it touches its
outputs: it counts the samples and raises one UserError listing the first bad rows (`skip_bad_rows: true` leaves
them out, counted by kind). Two passes rather than one that writes into a temporary dir: the second pass can then
resume into the output dir shard by shard, and the first costs only parsing (no tokenizer).

Memory stays flat in the size of the source: JSONL is read line by line, Parquet by record batches of only the
columns the format reads (one row group at a time: at most a row group's worth of them is held), CSV/TSV by the csv
module, hub datasets with `streaming=True`; a .json file (one list) is loaded whole.

Normalisation (the `<think>` block, the finish reason, the gold answer) is per format: r1distill.data.trace_formats.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from r1distill import hub
from r1distill.config import ConfigError, UserError
from r1distill.data.problem_rows import SHOWN_BAD_ROWS, RowError, csv_rows
from r1distill.data.trace_formats import DEFAULT_MARKERS, FORMATS, PRESETS, REQUIRED, BadRow, Sample, row_samples

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")
PARQUET_BATCH_ROWS = 256  # rows per record batch: OpenR1 rows are ~100 KB, so a batch is tens of MB


@dataclass
class TraceSourceConfig:
    path: str | None = None  # a local file (.jsonl/.json/.parquet/.csv/.tsv) or a hub dataset id (name: hf)
    name: str | None = None  # file | hf; unset: file (a path that exists or has one of the suffixes), else hf
    format: str = "columns"  # messages | sharegpt | openr1 | openthoughts | s1k | columns
    columns: dict[str, str] = field(default_factory=dict)  # our field -> their column, overriding the preset
    split: str = "train"  # hub datasets
    subset: str | None = None  # hub datasets: the config name
    num_rows: int | None = None  # read only the first N source rows
    markers: dict[str, str] = field(default_factory=dict)  # openthoughts' markers (DEFAULT_MARKERS), overridable
    skip_bad_rows: bool = False  # leave bad rows out, counted, instead of stopping

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"Unknown trace format {self.format!r}; set format to one of {', '.join(FORMATS)}")
        known = PRESETS[self.format]
        for ours, theirs in self.columns.items():
            if ours not in known:
                raise ConfigError(f"source.columns: unknown field {ours!r} for format {self.format}; its fields are "
                                  f"{', '.join(known)}")
            if not isinstance(theirs, str) or not theirs.strip():
                raise ConfigError(f"source.columns.{ours}: expected a column name, got {theirs!r}")
        for key, value in self.markers.items():
            if key not in DEFAULT_MARKERS:
                raise ConfigError(f"source.markers: unknown key {key!r}; the markers are {', '.join(DEFAULT_MARKERS)}")
            if not isinstance(value, str) or not value:
                raise ConfigError(f"source.markers.{key}: expected a non-empty string, got {value!r}")
        if self.markers and self.format != "openthoughts":
            raise ConfigError(f"source.markers apply to format openthoughts only (format is {self.format})")
        if self.num_rows is not None and self.num_rows < 1:
            raise ConfigError(f"source.num_rows must be >= 1 (got {self.num_rows}); leave it unset for all")
        if self.name is None and self.path:
            p = Path(self.path).expanduser()
            self.name = "file" if p.exists() or p.suffix.lower() in FILE_SUFFIXES else "hf"
        if self.name not in (None, "file", "hf"):
            raise ConfigError(f"Unknown trace source name {self.name!r}; set name to file or hf (or leave it unset)")
        if self.name == "file" and self.path and Path(self.path).suffix.lower() not in FILE_SUFFIXES:
            raise ConfigError(f"source.path {self.path}: unsupported file type; use {', '.join(FILE_SUFFIXES)} "
                              "(or name: hf for a hub dataset id)")

    @property
    def mapping(self) -> dict[str, str]:
        return {**PRESETS[self.format], **self.columns}

    @property
    def marks(self) -> dict[str, str]:
        return {**DEFAULT_MARKERS, **self.markers}

    @property
    def label(self) -> str:
        """The source's name: the file's stem or the dataset id (prompt ids hash it; the default `teacher`)."""
        self.require_path()
        return Path(str(self.path)).stem if self.name == "file" else str(self.path)

    @property
    def origin(self) -> str:
        """Where the rows come from, for messages: the file, or the dataset with its split."""
        self.require_path()
        if self.name == "file":
            return str(self.path)
        return f"{self.path}{f' ({self.subset})' if self.subset else ''} [{self.split}]"

    def require_path(self) -> None:
        if not self.path:
            raise ConfigError("source.path is not set: give a local .jsonl/.json/.parquet/.csv/.tsv file or a hub "
                              "dataset id")


@dataclass
class Scan:
    """What the first pass found: samples (after bad ones), source rows read, bad rows left out by kind."""

    samples: int
    rows: int
    skipped: Counter


# ---- reading ----------------------------------------------------------------------------------
def iter_samples(cfg: TraceSourceConfig) -> Iterator[Sample | BadRow]:
    """Every completion of the source in order (and a BadRow where a row or sample cannot be read)."""
    mapping, marks = cfg.mapping, cfg.marks
    for where, row in _rows(cfg):
        if isinstance(row, BadRow):
            yield row
            continue
        yield from row_samples(cfg.format, mapping, marks, row, where)


def scan(cfg: TraceSourceConfig) -> Scan:
    """The first pass: count samples; raise one UserError naming the first bad rows unless `skip_bad_rows`."""
    samples = rows = 0
    shown: list[BadRow] = []  # the first few, for the error; all are counted
    kinds: Counter = Counter()
    last = None
    for item in iter_samples(cfg):
        if isinstance(item, BadRow):
            kinds[item.kind] += 1
            if len(shown) < SHOWN_BAD_ROWS:
                shown.append(item)
        else:
            samples += 1
        if item.where != last:  # a row's samples (and bad samples) come one after another, under one place
            last = item.where
            rows += 1
    nbad = sum(kinds.values())
    if nbad and not cfg.skip_bad_rows:
        listed = "; ".join(b.message for b in shown)
        more = f"; ... and {nbad - len(shown)} more" if nbad > len(shown) else ""
        count = f"{nbad} bad rows: " if nbad > 1 else ""
        raise UserError(f"{cfg.origin}: {count}{listed}{more} ({'fix it' if nbad == 1 else 'fix them'}, or set "
                        "skip_bad_rows: true to leave bad rows out, counted)")
    if not samples:
        left = f" ({nbad} bad rows left out)" if nbad else ""
        raise UserError(f"{cfg.origin}: no traces found in format {cfg.format}{left}")
    return Scan(samples, rows, kinds)


def fingerprint(cfg: TraceSourceConfig) -> str:
    """A content hash of the source: a file's bytes (streamed), or a hub dataset's id, subset, split and revision
    (the revision when the hub answers; `hub_revision` pins the rows read to it)."""
    h = hashlib.sha256()
    if cfg.name == "file":
        path = _file(cfg)
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    else:
        h.update(f"{cfg.path}\n{cfg.subset}\n{cfg.split}\n{hub_revision(cfg)}".encode())
    return h.hexdigest()[:16]


def hub_revision(cfg: TraceSourceConfig) -> str | None:
    """The dataset's current commit on the hub (None offline: then the local cache's copy is read)."""
    if cfg.name != "hf" or hub.offline_reason():
        return None
    key = (cfg.path, cfg.subset, cfg.split)
    if key not in _REVISIONS:
        try:
            from huggingface_hub import HfApi

            _REVISIONS[key] = HfApi().dataset_info(str(cfg.path)).sha
        except Exception:  # noqa: BLE001 -- a private or missing dataset: load_dataset says why, in one line
            _REVISIONS[key] = None
    return _REVISIONS[key]


_REVISIONS: dict[tuple, str | None] = {}


def _file(cfg: TraceSourceConfig) -> Path:
    path = Path(str(cfg.path)).expanduser()
    if not path.is_file():
        raise UserError(f"Trace file not found: {path}")
    return path


def _rows(cfg: TraceSourceConfig) -> Iterator[tuple[str, dict | BadRow]]:
    """(where, row or BadRow) for the first `num_rows` rows of the source."""
    cfg.require_path()
    if cfg.name == "file":
        path = _file(cfg)
        suffix = path.suffix.lower()
        rows = (_jsonl_rows(path) if suffix == ".jsonl" else _json_rows(path) if suffix == ".json"
                else _parquet_rows(path, cfg) if suffix == ".parquet" else _csv(path, suffix))
    else:
        rows = _hub_rows(cfg)
    for n, item in enumerate(rows, start=1):
        if cfg.num_rows is not None and n > cfg.num_rows:
            return
        yield item


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield where, BadRow(where, "invalid_json", f"{where}: invalid JSON ({e.msg} at column {e.colno})")
                continue
            yield where, row if isinstance(row, dict) else BadRow(
                where, "bad_value", f"{where}: expected a JSON object, got {type(row).__name__}")


def _json_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON at line {e.lineno} ({e.msg})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: a .json trace file must be a list of objects, not {type(data).__name__} "
                        "(a file of one object per line is .jsonl)")
    for i, row in enumerate(data, start=1):
        where = f"row {i}"
        yield where, row if isinstance(row, dict) else BadRow(
            where, "bad_value", f"{where}: expected an object, got {type(row).__name__}")


def _parquet_rows(path: Path, cfg: TraceSourceConfig) -> Iterator[tuple[str, dict]]:
    """Record batches of only the columns the format reads; a required one missing from the schema is an error
    about the file (every row would be bad)."""
    from r1distill.data.traces import parquet_file

    pf = parquet_file(path)  # page checksums verified; a damaged file is a UserError naming it
    names = pf.schema_arrow.names
    mapping = cfg.mapping
    for ours in REQUIRED[cfg.format]:
        if mapping[ours] not in names:
            raise UserError(f"{path}: column {mapping[ours]!r} (field {ours} of format {cfg.format}) is missing; "
                            f"columns present: {', '.join(names)}; map it with columns: {{{ours}: <column>}}")
    wanted = sorted({c for c in mapping.values() if c in names})
    i = 0
    # One reader per row group: a single iter_batches over the whole file kept ~0.5 KB of Arrow memory per row
    # read (pyarrow 26: 160 MiB after 300k OpenR1-shaped rows), one per row group stays flat.
    for group in range(pf.num_row_groups):
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[group], columns=wanted):
            for row in batch.to_pylist():
                i += 1
                yield f"row {i}", row


def _csv(path: Path, suffix: str) -> Iterator[tuple[str, dict | BadRow]]:
    for where, row in csv_rows(path, "\t" if suffix == ".tsv" else ","):
        yield where, BadRow(where, "bad_value", str(row)) if isinstance(row, RowError) else row


def _hub_rows(cfg: TraceSourceConfig) -> Iterator[tuple[str, dict]]:
    """A hub dataset, streamed, at the revision the fingerprint names; any failure (offline, missing, auth, a
    dropped connection mid-stream) becomes one UserError, like problems._hub."""
    offline = hub.offline_reason()

    def fail(e: Exception) -> UserError:
        why = (f"the hub is unreachable ({offline}) and it is not in the local datasets cache" if offline
               else f"{type(e).__name__}: {' '.join(str(e).split())[:300]}. The hub may be unreachable")
        return UserError(f"Could not read {cfg.origin} from the Hugging Face hub ({why}): download it and set "
                         "source.path to the local .parquet/.jsonl file")

    try:
        from datasets import load_dataset

        revision = hub_revision(cfg)
        ds = load_dataset(str(cfg.path), cfg.subset, split=cfg.split, streaming=True,
                          **({"revision": revision} if revision else {}))
        it = iter(ds)
    except Exception as e:  # noqa: BLE001 -- offline, missing dataset, auth, import: all end the same way
        raise fail(e) from None
    i = 0
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001
            raise fail(e) from None
        i += 1
        yield f"row {i}", dict(row)
