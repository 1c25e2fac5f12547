"""The trace schema, its Parquet shards, and where they live (a local path or an fsspec URL).

One row per teacher completion (DESIGN.md's trace contract). Top-k columns are stored compactly:
int32 ids and float16 log-probs, zstd-compressed (about 66 B/token at k=20 on real teacher
tokens, against 98 KB for a dense fp16 row of a 49k vocabulary). We write with pyarrow directly
because `Dataset.to_parquet(compression="zstd")` raises in datasets 5.2.
Every page carries a CRC checksum (`WRITE_OPTIONS`), verified when read through `parquet_file`: a damaged
shard (truncated, a changed byte) is a UserError naming it, never a traceback or a silently changed value.

Top-k formats (`topk_format`, recorded in each shard's Parquet metadata):
- "exact": `topk_logprobs` as float16, the log-probs as the backend gave them (to fp16 precision).
- "q8": `topk_logprobs` is replaced by `topk_lp_top1` (T,) float16, the best log-prob of each token,
  and `topk_lp_q8` (T, k) uint8 codes of each entry's distance below it, delta = top1 - logprob >= 0,
  on a logarithmic grid: code c in 0..254 stands for delta = expm1(c / 254 * log(21)) (0 to 20 nats),
  255 for -inf. Each token's codes are stored as differences mod 256 from the previous entry (exact
  to undo; in rank order they are small and non-negative, which zstd compresses to about half).
  Why this design: distillation losses renormalise over the top-k (or add one tail bucket), so
  what matters is each entry's log-prob relative to the others, weighted by its probability. The
  log grid is finest near the top-1, where the probability is: half a step at delta d is
  0.006 * (d + 1) nats, so 0.006 for the top entries and 0.07 ten nats down, where the probability
  ratio is 5e-5. One exact float16 top-1 keeps the absolute level for tail-mass losses. Entries
  more than 20 nats below the top-1 (probability ratio < 2e-9) are clipped to 20. On real teacher
  tokens this grid gave a lower KL error than a uniform or square-root one at the same size.
  DistillKit's alternative (a few exact values and a fitted curve for the rest) can save more
  bytes, but its error depends on how well the curve fits each token; here it has a fixed bound.
  The ids are stored as in "exact" (int32, zstd): they are now most of the bytes. Measured bytes
  and KL error: scripts/bench_generate.py.
`read_table` returns float log-probs (`topk_logprobs`, list<list<float16>>) whatever the format, so
curation and training read both. Reading q8 shards with `datasets` directly gives the codes;
`decode_topk` turns such a table back into the trace schema.

Cross-tokenizer KD columns (`SPAN_FIELDS`; generate writes them, older traces lack them and serve everything else):
`token_nbytes` (T,) int16, the bytes of each completion token within `completion` (its own vocabulary bytes,
r1distill.tokenbytes; special tokens are 0), `token_logprobs` (T,) float16, the raw log-prob of each sampled token
(also when it is outside the top-k), and `token_bytes_ok`, false for a row whose tokens' bytes do not make exactly
the completion's bytes (cross-tokenizer KD leaves such rows out). Each shard's metadata holds the teacher
tokenizer's fingerprint (`TOKENIZER_KEY`).

Locations (a local path or an fsspec URL) and atomic writes: r1distill.data.locations, whose helpers are
re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from r1distill.config import UserError
from r1distill.data.locations import (  # noqa: F401 (re-exported: stages reach their run dir as traces' `store.*`)
    Location,
    as_location,
    atomic_rename,
    exists,
    file_size,
    filesystem,
    is_url,
    join,
    list_names,
    makedirs,
    name_of,
    read_text,
    remove,
    write_atomic,
    write_text_atomic,
)
from r1distill.data.q8 import (  # noqa: F401 (the q8 codec, re-exported: traces is where readers look for it)
    Q8_LEVELS,
    Q8_LOG_SPAN,
    Q8_MAX_DELTA,
    Q8_NEG_INF,
    dequantize_q8,
    q8_error_bound,
    quantize_q8,
    row_diff,
    row_undiff,
)

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

TRACE_SCHEMA = pa.schema([
    ("prompt_id", pa.string()),
    ("sample_idx", pa.int32()),
    ("problem", pa.string()),
    ("answer", pa.string()),
    ("prompt", pa.list_(MESSAGE)),  # what the student trains on
    ("teacher_prompt", pa.list_(MESSAGE)),  # what the teacher saw (with its few-shot examples); null = `prompt`
    ("completion", pa.string()),
    ("reasoning", pa.string()),  # text inside <think>…</think>, null if none
    ("completion_ids", pa.list_(pa.int32())),
    ("topk_ids", pa.list_(pa.list_(pa.int32()))),  # (T, k), null when logprobs were not asked for
    ("topk_logprobs", pa.list_(pa.list_(pa.float16()))),  # (T, k)
    ("finish_reason", pa.string()),
    ("num_tokens", pa.int32()),
    ("teacher", pa.string()),
    ("gen_config_hash", pa.string()),
])

CURATED_FIELDS = [
    ("pred_answer", pa.string()),
    ("correct", pa.bool_()),
    ("format_ok", pa.bool_()),
    ("reject_reason", pa.string()),  # null for kept rows
]
CURATED_SCHEMA = pa.schema([*TRACE_SCHEMA, *CURATED_FIELDS])

TOPK_FORMATS = ("exact", "q8")
FORMAT_KEY = b"r1distill.topk_format"
KIND_KEY = "r1distill.logprobs_kind"  # raw | processed | none: what the top-k log-probs are (generate writes it)
UNMAPPED_KEY = "r1distill.unmapped_tokens"
Q8_COLUMNS = [("topk_lp_top1", pa.list_(pa.float16())), ("topk_lp_q8", pa.list_(pa.list_(pa.uint8())))]
# Cross-tokenizer KD's columns (generate writes them; traces without them serve everything else). Not in
# TRACE_SCHEMA, so that older traces still check; curate passes them through. See r1distill.tokenbytes.
SPAN_FIELDS = [
    ("token_nbytes", pa.list_(pa.int16())),  # (T,) bytes of each completion token in `completion`
    ("token_logprobs", pa.list_(pa.float16())),  # (T,) raw log-prob of each sampled token, in the top-k or not
    ("token_bytes_ok", pa.bool_()),  # whether the tokens' bytes, one after another, are exactly the completion's
]
SPAN_SCHEMA = pa.schema([*TRACE_SCHEMA, *SPAN_FIELDS])  # what generate writes
TOKENIZER_KEY = "r1distill.teacher_tokenizer"  # shard metadata: tokenbytes.fingerprint of the teacher's tokenizer
# Every Parquet file r1distill writes: zstd, and a CRC per page, so that a changed byte in a page is an error on read
# (parquet_file verifies them) instead of a silently different top-k or token id.
WRITE_OPTIONS = {"compression": "zstd", "write_page_checksum": True}


# ---- Top-k formats ----

def _flat(values: list, dtype) -> tuple[np.ndarray, np.ndarray, int]:
    """A list of (T_i, k) arrays -> ((sum T_i, k) array, the T_i, k)."""
    arrs = [np.asarray(v, dtype=dtype) for v in values]
    k = next((a.shape[1] for a in arrs if a.ndim == 2 and a.shape[0]), 0)
    if any(a.ndim != 2 or (a.shape[0] and a.shape[1] != k) for a in arrs):
        raise ValueError("top-k arrays must all be (T, k) with the same k")
    lengths = np.array([a.shape[0] for a in arrs], dtype=np.int64)
    flat = np.concatenate([a.reshape(-1, k) for a in arrs]) if lengths.sum() else np.zeros((0, k), dtype)
    return flat, lengths, k


INT32_MAX = 2**31 - 1  # the last offset an Arrow list<> (int32 offsets) can hold


def list_offsets(lengths: np.ndarray, width: int = 1) -> np.ndarray:
    """int32 Arrow list offsets [0, l0·w, (l0 + l1)·w, ...] for rows of `lengths` items of `width` values each.

    Computed in int64 and checked: past 2^31 − 1 values in one array, int32 offsets would wrap silently (at k = 20,
    about 107M tokens of top-k in one table). Raises OverflowError then: write the data as several shards (or
    record batches), each of which has offsets of its own."""
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64) * np.int64(width))
    if ends.size and ends[-1] > INT32_MAX:
        raise OverflowError(f"{int(ends[-1])} values in one Arrow list array: more than int32 offsets hold "
                            f"({INT32_MAX}); split the rows into several shards or record batches")
    return np.concatenate([np.zeros(1, np.int64), ends]).astype(np.int32)


def _lists(flat: np.ndarray, lengths: np.ndarray, typ: pa.DataType) -> pa.Array:
    """(N, k) or (N,) values and row lengths -> Arrow list<list<>> or list<> of type `typ`."""
    outer = pa.array(list_offsets(lengths))
    if flat.ndim == 1:
        return pa.ListArray.from_arrays(outer, pa.array(flat, type=typ.value_type)).cast(typ)
    k = flat.shape[1]
    inner = pa.ListArray.from_arrays(pa.array(list_offsets(np.full(flat.shape[0], 1), max(k, 1))),
                                     pa.array(flat.reshape(-1), type=typ.value_type.value_type))
    return pa.ListArray.from_arrays(outer, inner).cast(typ)


def _nested_array(values: list, dtype, typ: pa.DataType) -> pa.Array:
    """A list of (T_i, k) arrays (or None) -> Arrow list<list<>> without a Python-level loop per value."""
    if any(v is None for v in values) or not values:
        return pa.array([None if v is None else [np.asarray(x, dtype) for x in v] for v in values], type=typ)
    flat, lengths, _ = _flat(values, dtype)
    return _lists(flat, lengths, typ)


def _vector_array(values: list, typ: pa.DataType) -> pa.Array:
    """A list of (T_i,) arrays (or None) -> Arrow list<> of type `typ`."""
    dtype = typ.value_type.to_pandas_dtype()
    arrs = [None if v is None else np.asarray(v, dtype) for v in values]
    if not arrs or any(a is None for a in arrs):
        return pa.array(arrs, type=typ)
    return _lists(np.concatenate(arrs), np.array([len(a) for a in arrs]), typ)


def q8_schema(schema: pa.Schema = TRACE_SCHEMA) -> pa.Schema:
    """`schema` with topk_logprobs replaced by the q8 columns, at its place."""
    fields = []
    for f in schema:
        fields += [pa.field(n, t) for n, t in Q8_COLUMNS] if f.name == "topk_logprobs" else [f]
    return pa.schema(fields)


def rows_to_table(rows: list[dict], schema: pa.Schema = TRACE_SCHEMA, topk_format: str = "exact") -> pa.Table:
    if topk_format not in TOPK_FORMATS:
        raise ValueError(f"topk_format must be one of {TOPK_FORMATS}, got {topk_format!r}")
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    if "topk_ids" in cols:
        cols["topk_ids"] = _nested_array(cols["topk_ids"], np.int32, schema.field("topk_ids").type)
    for name, typ in SPAN_FIELDS[:2]:
        if name in cols:
            cols[name] = _vector_array(cols[name], typ)
    if topk_format == "q8" and "topk_logprobs" in cols:
        values = cols.pop("topk_logprobs")
        if rows and all(v is not None for v in values):
            flat, lengths, _ = _flat(values, np.float32)
            top1, codes = quantize_q8(flat)
            cols["topk_lp_top1"] = _lists(top1, lengths, Q8_COLUMNS[0][1])
            cols["topk_lp_q8"] = _lists(row_diff(codes), lengths, Q8_COLUMNS[1][1])
        else:  # no log-probs asked for (or some rows without): the columns stay null
            cols["topk_lp_top1"] = pa.array([None] * len(values), type=Q8_COLUMNS[0][1])
            cols["topk_lp_q8"] = pa.array([None] * len(values), type=Q8_COLUMNS[1][1])
        schema = q8_schema(schema)
    elif "topk_logprobs" in cols:
        cols["topk_logprobs"] = _nested_array(cols["topk_logprobs"], np.float16, schema.field("topk_logprobs").type)
    table = pa.Table.from_pydict(cols, schema=schema)
    return table.replace_schema_metadata({FORMAT_KEY: topk_format.encode()})


def _decode_column(top1: pa.ChunkedArray, codes: pa.ChunkedArray) -> pa.Array:
    """The q8 columns of one table -> topk_logprobs as list<list<float16>>."""
    typ = TRACE_SCHEMA.field("topk_logprobs").type
    outer, tops = codes.combine_chunks(), top1.combine_chunks()
    if outer.null_count == len(outer):
        return pa.nulls(len(outer), typ)
    inner = outer.flatten()  # (sum T) lists of k codes; null rows contribute nothing
    n = len(inner)
    k = len(inner.flatten()) // n if n else 0
    lp = dequantize_q8(tops.flatten().to_numpy(zero_copy_only=False).reshape(n),
                       row_undiff(inner.flatten().to_numpy(zero_copy_only=False).reshape(n, k)))
    offsets = np.asarray(outer.offsets, dtype=np.int64)
    lengths = np.where(np.asarray(outer.is_null()), 0, offsets[1:] - offsets[:-1])
    decoded = _lists(lp.astype(np.float16), lengths, typ)
    return pa.ListArray.from_arrays(decoded.offsets, decoded.values, type=typ, mask=outer.is_null()) \
        if outer.null_count else decoded


def decode_topk(table: pa.Table) -> pa.Table:
    """A table in any top-k format -> the same rows with float `topk_logprobs` (the q8 columns replaced)."""
    if "topk_lp_q8" not in table.column_names:
        return table
    at = table.column_names.index("topk_lp_top1")
    lp = _decode_column(table.column("topk_lp_top1"), table.column("topk_lp_q8"))
    table = table.drop_columns(["topk_lp_top1", "topk_lp_q8"])
    table = table.add_column(at, pa.field("topk_logprobs", TRACE_SCHEMA.field("topk_logprobs").type), lp)
    meta = dict(table.schema.metadata or {})
    meta.pop(FORMAT_KEY, None)
    return table.replace_schema_metadata(meta)


def topk_format_of(schema: pa.Schema) -> str:
    return "q8" if "topk_lp_q8" in schema.names else "exact"


# ---- Shards ----

def write_table_atomic(table: pa.Table, path: Location, metadata: dict[str, str] | None = None) -> Location:
    """Write a zstd Parquet file under a temporary name, then rename it into place (see r1distill.data.locations).

    metadata: extra key-value pairs for the file's schema metadata (read back cheaply from the footer)."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               **{k.encode(): str(v).encode() for k, v in metadata.items()}})
    path = as_location(path)
    # A per-process temporary name: two processes writing the same shard name never share one half-written file.
    write_atomic(path, lambda f: pq.write_table(table, f, **WRITE_OPTIONS), f".{name_of(path)}.{os.getpid()}.tmp")
    return path


def parquet_writer(where, schema: pa.Schema) -> pq.ParquetWriter:
    """A streaming writer with WRITE_OPTIONS (for files written row group by row group)."""
    return pq.ParquetWriter(where, schema, **WRITE_OPTIONS)


def shard_paths(directory: Location) -> list[Location]:
    """Finished shards of a dataset dir, in order (temporary files are hidden and skipped)."""
    if not is_url(directory):
        d = Path(directory)
        return sorted(p for p in d.glob("*.parquet") if not p.name.startswith("."))
    return [join(directory, n) for n in list_names(directory) if n.endswith(".parquet") and not n.startswith(".")]


@contextmanager
def _readable(location: Location) -> Iterator[None]:
    """Turn pyarrow's errors on a damaged file (no footer, a bad page checksum, a page that fails to decode) into a
    one-line UserError naming it."""
    try:
        yield
    except (OSError, pa.ArrowException) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UserError(f"{location}: cannot read this Parquet file ({why}): it is damaged (truncated, or bytes "
                        "changed) or not Parquet: restore it, or rerun the stage that wrote it") from None


class CheckedParquetFile(pq.ParquetFile):
    """A ParquetFile that verifies page checksums (WRITE_OPTIONS writes them) and reports a damaged file as a
    UserError naming it, when it is opened and when its data is read."""

    def __init__(self, location: Location):
        self.location = location
        with _readable(location):
            if is_url(location):
                fs, path = filesystem(location)
                source = fs.open(path, "rb")
            else:
                source = location
            super().__init__(source, page_checksum_verification=True)

    def read(self, *args, **kwargs) -> pa.Table:
        with _readable(self.location):
            return super().read(*args, **kwargs)

    def read_row_group(self, *args, **kwargs) -> pa.Table:
        with _readable(self.location):
            return super().read_row_group(*args, **kwargs)

    def read_row_groups(self, *args, **kwargs) -> pa.Table:
        with _readable(self.location):
            return super().read_row_groups(*args, **kwargs)

    def iter_batches(self, *args, **kwargs) -> Iterator[pa.RecordBatch]:
        with _readable(self.location):
            yield from super().iter_batches(*args, **kwargs)


def parquet_file(location: Location) -> CheckedParquetFile:
    """A ParquetFile (footer read, data not) for a local path or URL; a damaged file is a UserError naming it."""
    return CheckedParquetFile(location)


def file_metadata(location: Location) -> dict[str, str]:
    """The key-value metadata r1distill wrote into a shard's footer (topk format, logprobs kind, ...)."""
    meta = parquet_file(location).schema_arrow.metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"r1distill.")}


def read_shard(location: Location, columns: list[str] | None = None) -> pa.Table:
    """One shard with float `topk_logprobs` whatever its top-k format."""
    pf = parquet_file(location)
    cols = columns
    if columns is not None and "topk_logprobs" in columns and topk_format_of(pf.schema_arrow) == "q8":
        cols = [c for c in columns if c != "topk_logprobs"] + [n for n, _ in Q8_COLUMNS]
    table = decode_topk(pf.read(columns=cols))
    return table.select(columns) if columns is not None else table


def read_table(directory: Location, columns: list[str] | None = None) -> pa.Table:
    shards = shard_paths(directory)
    if not shards:
        raise UserError(f"No Parquet shards in {directory}: run the stage that writes them first")
    return pa.concat_tables([read_shard(p, columns) for p in shards], promote_options="default")


# Added later: older traces without them are read as they are (the span columns only cross-tokenizer KD needs,
# and it names them when they are missing: train/xtok/data.py).
OPTIONAL_COLUMNS = {"teacher_prompt", *(n for n, _ in SPAN_FIELDS)}


def check_schema(table: pa.Table, schema: pa.Schema, where: str) -> None:
    """Raise a UserError naming the first missing or mistyped column (OPTIONAL_COLUMNS may be missing)."""
    for f in schema:
        if f.name not in table.column_names and f.name in OPTIONAL_COLUMNS:
            continue
        if f.name not in table.column_names:
            raise UserError(f"{where}: missing column {f.name!r} (expected the trace schema)")
        if not table.schema.field(f.name).type.equals(f.type):
            raise UserError(f"{where}: column {f.name!r} has type {table.schema.field(f.name).type}, "
                            f"expected {f.type}")
