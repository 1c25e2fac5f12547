"""The trace schema and its Parquet shards.

One row per teacher completion (DESIGN.md's trace contract). Top-k columns are stored compactly:
int32 ids and float16 log-probs, zstd-compressed (about 66 B/token at k=20 on real teacher
tokens, against 98 KB for a dense fp16 row of a 49k vocabulary). Shards are written to a
temporary name and renamed when complete, so a reader never sees half a shard. We write with
pyarrow directly because `Dataset.to_parquet(compression="zstd")` raises in datasets 5.2.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from r1distill.config import UserError

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

TRACE_SCHEMA = pa.schema([
    ("prompt_id", pa.string()),
    ("sample_idx", pa.int32()),
    ("problem", pa.string()),
    ("answer", pa.string()),
    ("prompt", pa.list_(MESSAGE)),
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


def _nested_array(values: list, dtype, typ: pa.DataType) -> pa.Array:
    """A list of (T_i, k) arrays (or None) -> Arrow list<list<>> without a Python-level loop per value."""
    if any(v is None for v in values) or not values:
        return pa.array([None if v is None else [np.asarray(x, dtype) for x in v] for v in values], type=typ)
    arrs = [np.asarray(v, dtype=dtype) for v in values]
    k = arrs[0].shape[1] if arrs[0].ndim == 2 and arrs[0].shape[0] else 0
    if any(a.ndim != 2 or (a.shape[0] and a.shape[1] != k) for a in arrs):
        raise ValueError("top-k arrays must all be (T, k) with the same k")
    lengths = np.array([a.shape[0] for a in arrs])
    flat = np.concatenate([a.reshape(-1) for a in arrs]) if lengths.sum() else np.zeros(0, dtype)
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, flat.size + 1, max(k, 1), dtype=np.int32)),
                                     pa.array(flat, type=typ.value_type.value_type))
    outer = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(outer), inner).cast(typ)


def rows_to_table(rows: list[dict], schema: pa.Schema = TRACE_SCHEMA) -> pa.Table:
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    for name, dtype in (("topk_ids", np.int32), ("topk_logprobs", np.float16)):
        if name in cols:
            cols[name] = _nested_array(cols[name], dtype, schema.field(name).type)
    return pa.Table.from_pydict(cols, schema=schema)


def write_table_atomic(table: pa.Table, path: str | Path) -> Path:
    """Write a zstd Parquet file under a temporary name, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def shard_paths(directory: str | Path) -> list[Path]:
    """Finished shards of a dataset dir, in order (temporary files are hidden and skipped)."""
    d = Path(directory)
    return sorted(p for p in d.glob("*.parquet") if not p.name.startswith("."))


def read_table(directory: str | Path, columns: list[str] | None = None) -> pa.Table:
    shards = shard_paths(directory)
    if not shards:
        raise UserError(f"No Parquet shards in {directory}: run the stage that writes them first")
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in shards], promote_options="default")


def check_schema(table: pa.Table, schema: pa.Schema, where: str) -> None:
    """Raise a UserError naming the first missing or mistyped column."""
    for f in schema:
        if f.name not in table.column_names:
            raise UserError(f"{where}: missing column {f.name!r} (expected the trace schema)")
        if not table.schema.field(f.name).type.equals(f.type):
            raise UserError(f"{where}: column {f.name!r} has type {table.schema.field(f.name).type}, "
                            f"expected {f.type}")
