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

Normalisation:
- the completion's reasoning is always `<think>…</think>`: OpenThoughts' `<|begin_of_thought|>…` markers are
  rewritten (`<think>\\n{thought}\\n</think>\\n\\n{solution}`), s1K's trajectory and attempt are joined the same way,
  a chat turn's `reasoning_content` (DeepSeek's API) is put in front, and a completion with a closing `</think>`
  but no opening one (its prompt opened the block) gets `<think>\\n` in front;
- finish reason "length" when the completion was cut off: an unclosed `<think>`, an OpenThoughts solution without
  its closing marker, OpenR1's `finish_reasons[i] == "length"` or `is_reasoning_complete[i]` false, or a
  `finish_reason` column saying "length"; "stop" otherwise;
- the gold answer: the `answer` column, else the last `\\boxed{}` of the reference solution (`solution`), else the
  row is bad. OpenR1's `correctness_math_verify` / `correctness_llama` are not kept: curate verifies every trace
  again with the one verifier curation and eval share.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1distill import hub
from r1distill.config import ConfigError, UserError
from r1distill.data.problems import SHOWN_BAD_ROWS, RowError, csv_rows
from r1distill.prompts import has_unclosed_think

FORMATS = ("messages", "sharegpt", "openr1", "openthoughts", "s1k", "columns")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")

# Our field -> their column, per format (dataset cards: open-r1/OpenR1-Math-220k, open-thoughts/OpenThoughts-114k
# and bespokelabs/Bespoke-Stratos-17k (system + conversations of {from, value}; OpenThoughts' reference solutions
# are `ground_truth_solution` in its metadata config), simplescaling/s1K, GAIR/LIMO (question, solution, answer)).
PRESETS: dict[str, dict[str, str]] = {
    "messages": {"messages": "messages", "answer": "answer", "solution": "solution"},
    "sharegpt": {"conversations": "conversations", "system": "system", "answer": "answer", "solution": "solution"},
    "openthoughts": {"conversations": "conversations", "system": "system", "answer": "answer",
                     "solution": "ground_truth_solution"},
    "openr1": {"problem": "problem", "answer": "answer", "solution": "solution", "generations": "generations",
               "finish_reasons": "finish_reasons", "is_reasoning_complete": "is_reasoning_complete"},
    "s1k": {"problem": "question", "answer": "answer", "solution": "solution",
            "thinking_trajectories": "thinking_trajectories", "attempt": "attempt"},
    "columns": {"problem": "problem", "answer": "answer", "completion": "completion", "solution": "solution",
                "finish_reason": "finish_reason"},
}
# The fields a row must have (a missing one is a bad row); the others are read when present.
REQUIRED = {"messages": ("messages",), "sharegpt": ("conversations",), "openthoughts": ("conversations",),
            "openr1": ("problem", "generations"), "s1k": ("problem", "thinking_trajectories", "attempt"),
            "columns": ("problem", "completion")}
DEFAULT_MARKERS = {"think_open": "<|begin_of_thought|>", "think_close": "<|end_of_thought|>",
                   "solution_open": "<|begin_of_solution|>", "solution_close": "<|end_of_solution|>"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
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
class Sample:
    """One completion, normalised. prompt: the chat turns before it (messages/sharegpt/openthoughts), or None for
    "build the default prompt from the problem"."""

    problem: str
    answer: str
    prompt: list[dict[str, str]] | None
    completion: str
    finish_reason: str  # stop | length
    where: str  # "line 7", "row 12"
    sample_in_row: int = 0


@dataclass
class BadRow:
    where: str
    kind: str  # invalid_json | missing_column | no_assistant_turn | no_user_turn | empty_completion | empty_problem
    #            | missing_answer | bad_value
    message: str  # one line naming the row and the field (the file is named once by whoever reports it)


class _Bad(Exception):
    def __init__(self, where: str, theirs: str | None, why: str, kind: str):
        super().__init__(f"{where}: {f'field {theirs!r}: ' if theirs else ''}{why}")
        self.bad = BadRow(where, kind, str(self))


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
        try:
            yield from _parse(cfg.format, mapping, marks, row, where)
        except _Bad as e:
            yield e.bad


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


# ---- one row -> samples -----------------------------------------------------------------------
def _parse(fmt: str, cols: dict[str, str], marks: dict[str, str], row: dict, where: str) -> Iterator[Sample | BadRow]:
    for ours in REQUIRED[fmt]:
        if cols[ours] not in row:
            raise _Bad(where, cols[ours], f"missing (format {fmt}); columns present: {', '.join(map(str, row))}; "
                       f"map it with columns: {{{ours}: <column>}}", "missing_column")
    if fmt in ("messages", "sharegpt", "openthoughts"):
        yield _chat_sample(fmt, cols, marks, row, where)
    elif fmt == "openr1":
        yield from _openr1_samples(cols, row, where)
    elif fmt == "s1k":
        yield _s1k_sample(cols, row, where)
    else:
        yield _columns_sample(cols, row, where)


def _chat_sample(fmt: str, cols: dict[str, str], marks: dict[str, str], row: dict, where: str) -> Sample:
    col = cols["messages" if fmt == "messages" else "conversations"]
    turns, reasoning = _turns(row[col], fmt, where, col)
    last = next((i for i in range(len(turns) - 1, -1, -1) if turns[i]["role"] == "assistant"), None)
    if last is None:
        raise _Bad(where, col, "no assistant turn (the completion is the last one)", "no_assistant_turn")
    text = turns[last]["content"]
    if fmt == "openthoughts":
        completion, cut = _openthoughts(text, marks, where, col)
    else:
        if reasoning[last]:  # DeepSeek API style: the chain of thought beside the answer
            text = f"<think>\n{reasoning[last].strip()}\n</think>\n\n{text.lstrip()}"
        completion, cut = _open_think(text), False
    if not completion.strip():
        raise _Bad(where, col, "the assistant turn is empty", "empty_completion")
    prompt = turns[:last]
    system = row.get(cols["system"]) if "system" in cols else None
    if isinstance(system, str) and system.strip() and not any(t["role"] == "system" for t in prompt):
        prompt = [{"role": "system", "content": system}, *prompt]
    user = next((t for t in reversed(prompt) if t["role"] == "user"), None)
    if user is None:
        raise _Bad(where, col, "no user turn before the assistant turn (the problem)", "no_user_turn")
    if not user["content"].strip():
        raise _Bad(where, col, "the user turn (the problem) is empty", "empty_problem")
    return Sample(user["content"].strip(), _answer(cols, row, where), prompt, completion,
                  _finish(completion, cut), where)


def _turns(value: Any, fmt: str, where: str, col: str) -> tuple[list[dict[str, str]], list[str | None]]:
    """The chat as [{role, content}] (ShareGPT's from/value and its role names mapped), and each turn's
    reasoning_content (None where it has none)."""
    if not isinstance(value, list):
        raise _Bad(where, col, f"expected a list of chat turns, got {type(value).__name__}", "bad_value")
    role_key, text_key = ("role", "content") if fmt == "messages" else ("from", "value")
    turns, reasoning = [], []
    for i, t in enumerate(value):
        if not isinstance(t, dict) or not isinstance(t.get(role_key), str) or not isinstance(t.get(text_key), str):
            raise _Bad(where, col, f"turn {i} is not an object with string {role_key!r} and {text_key!r}",
                       "bad_value")
        role = t[role_key] if fmt == "messages" else SHAREGPT_ROLES.get(t[role_key].lower(), t[role_key])
        turns.append({"role": role, "content": t[text_key]})
        rc = t.get("reasoning_content")
        reasoning.append(rc if isinstance(rc, str) and rc.strip() else None)
    return turns, reasoning


def _openthoughts(text: str, m: dict[str, str], where: str, col: str) -> tuple[str, bool]:
    """OpenThoughts' markers -> (`<think>\\n{thought}\\n</think>\\n\\n{solution}`, whether it was cut off)."""
    start = text.find(m["think_open"])
    if start < 0:
        raise _Bad(where, col, f"the assistant turn has no {m['think_open']} marker: not in the openthoughts format "
                   "(read it with format: sharegpt, or set markers)", "bad_value")
    rest = text[start + len(m["think_open"]):]
    end = rest.find(m["think_close"])
    if end < 0:  # cut off inside the thought
        return f"<think>\n{rest.strip()}", True
    thought, after = rest[:end].strip(), rest[end + len(m["think_close"]):]
    opened = after.find(m["solution_open"])
    solution = after[opened + len(m["solution_open"]):] if opened >= 0 else after
    closed = solution.find(m["solution_close"])
    if closed >= 0:
        solution = solution[:closed]
    if not thought and not solution.strip():
        return "", False
    return f"<think>\n{thought}\n</think>\n\n{solution.strip()}", closed < 0


def _openr1_samples(cols: dict[str, str], row: dict, where: str) -> Iterator[Sample | BadRow]:
    problem = _text(row, cols["problem"], where, "empty_problem")
    answer = _answer(cols, row, where)
    gens = row[cols["generations"]]
    if not isinstance(gens, list) or not gens:
        raise _Bad(where, cols["generations"], "expected a non-empty list of completions", "bad_value")
    finish = row.get(cols["finish_reasons"])
    complete = row.get(cols["is_reasoning_complete"])
    for i, g in enumerate(gens):
        if not isinstance(g, str) or not g.strip():
            yield BadRow(where, "empty_completion", f"{where}: field {cols['generations'] + f'[{i}]'!r}: empty")
            continue
        completion = _open_think(g)
        cut = _at(finish, i) == "length" or _at(complete, i) is False
        yield Sample(problem, answer, None, completion, _finish(completion, cut), where, i)


def _s1k_sample(cols: dict[str, str], row: dict, where: str) -> Sample:
    problem = _text(row, cols["problem"], where, "empty_problem")
    answer = _answer(cols, row, where)
    trajs = row[cols["thinking_trajectories"]]
    thought = trajs[0] if isinstance(trajs, list) and trajs else trajs  # the first (s1K has one)
    if not isinstance(thought, str) or not thought.strip():
        raise _Bad(where, cols["thinking_trajectories"], "empty (no thinking trajectory)", "empty_completion")
    attempt = _text(row, cols["attempt"], where, "empty_completion")
    completion = f"<think>\n{thought.strip()}\n</think>\n\n{attempt}"
    return Sample(problem, answer, None, completion, _finish(completion, False), where)


def _columns_sample(cols: dict[str, str], row: dict, where: str) -> Sample:
    problem = _text(row, cols["problem"], where, "empty_problem")
    answer = _answer(cols, row, where)
    raw = row[cols["completion"]]
    if not isinstance(raw, str) or not raw.strip():
        raise _Bad(where, cols["completion"], "empty completion" if isinstance(raw, str) or raw is None
                   else f"expected a string, got {type(raw).__name__}", "empty_completion")
    completion = _open_think(raw)
    said = row.get(cols["finish_reason"])
    return Sample(problem, answer, None, completion, _finish(completion, str(said).strip().lower() == "length"),
                  where)


def _finish(completion: str, cut: bool) -> str:
    return "length" if cut or has_unclosed_think(completion) else "stop"


def _at(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) and i < len(values) else None


def _open_think(text: str) -> str:
    """A completion whose prompt opened the think block ("…</think>answer") gets its `<think>` back."""
    close = text.find("</think>")
    if close >= 0 and not 0 <= text.find("<think>") < close:
        return "<think>\n" + text
    return text


def _scalar(value: Any) -> str | None:
    """A cell as stripped text (18 and 18.0 -> "18"); None when null or not a string/number."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _text(row: dict, col: str, where: str, kind: str) -> str:
    text = _scalar(row.get(col))
    if not text:
        value = row.get(col)
        why = "empty" if value is None or isinstance(value, str) else f"expected text, got {type(value).__name__}"
        raise _Bad(where, col, why, kind)
    return text


def _answer(cols: dict[str, str], row: dict, where: str) -> str:
    """The gold answer: its column, else the last \\boxed{} of the reference solution, else a bad row."""
    if text := _scalar(row.get(cols["answer"])):
        return text
    solution = row.get(cols["solution"])
    if isinstance(solution, str) and (boxed := last_boxed(solution)):
        return boxed
    had = (f"no \\boxed{{}} in {cols['solution']!r}" if isinstance(solution, str)
           else f"no {cols['solution']!r} column with a \\boxed{{}} answer either")
    raise _Bad(where, cols["answer"], f"no gold answer ({had}); map a gold-answer column with "
               "columns: {answer: <column>}", "missing_answer")


def last_boxed(text: str) -> str | None:
    """The stripped content of the last closed, non-empty `\\boxed{…}` (or `\\fbox{…}`), by the verifier's own rule
    (so curate grades against what import took); None when there is none."""
    from r1distill.verify import last_boxed as boxed  # math-verify loads only when a gold has to come from a box

    content = boxed(text)
    return content.strip() if content and content.strip() else None
