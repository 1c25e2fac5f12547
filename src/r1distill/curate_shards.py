"""The curate stage's two passes over the trace shards, a shard at a time so that memory stays flat in the
dataset's size: pass 1 (`decide_shard`) reads a shard's thin columns and keeps a slim record per row (the verdict
and the trace features the filters look at, no text); pass 2 (`write_shard`) streams the shard again in record
batches, adds the curated columns and writes the kept rows as stored (top-k never becomes Python objects, q8 stays
q8) and the rejected ones to `rejected.jsonl`. `ShardTexts` reads completion texts back for the duplicate search.

Separate from r1distill.curate, which decides (the filters, in their order) and owns the output dir: here is only
the reading and writing of Parquet shards.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from r1distill import filters
from r1distill.data.traces import (
    CURATED_FIELDS,
    Q8_COLUMNS,
    SPAN_FIELDS,
    SPAN_SCHEMA,
    parquet_file,
    parquet_writer,
    q8_schema,
    topk_format_of,
)
from r1distill.prompts import has_unclosed_think
from r1distill.verify import verify_many

if TYPE_CHECKING:  # curate imports this module: the config only names a type here
    from r1distill.curate import CurateConfig

THIN = ["prompt_id", "sample_idx", "problem", "answer", "completion", "finish_reason", "num_tokens",
        "completion_ids"]  # what the decisions read; never the top-k
BATCH_ROWS = 256  # rows per record batch in the writing pass: memory is bounded by one batch, not a shard


class ShardTexts(Sequence[str]):
    """The completion texts of the rows of several shards, read back a shard's column at a time (the last two
    are cached), so that no pass holds every text."""

    def __init__(self, shards: list[Path], counts: list[int], rows: list[int] | None = None):
        self.shards, self.starts = shards, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.rows = rows  # global row numbers this sequence shows (None: all)
        self._cache: dict[int, list[str]] = {}

    def subset(self, rows: list[int]) -> "ShardTexts":
        return ShardTexts(self.shards, list(np.diff(self.starts)), rows)

    def __len__(self) -> int:
        return int(self.starts[-1]) if self.rows is None else len(self.rows)

    def __getitem__(self, i):  # type: ignore[override]
        g = i if self.rows is None else self.rows[i]
        s = int(np.searchsorted(self.starts, g, side="right") - 1)
        if s not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[s] = parquet_file(self.shards[s]).read(columns=["completion"]).column(0).to_pylist()
        return self._cache[s][g - int(self.starts[s])]


def expected_schema(schema: pa.Schema) -> pa.Schema:
    """What a shard must hold: the trace schema, the span columns optional (checked by type where present)."""
    return q8_schema(SPAN_SCHEMA) if topk_format_of(schema) == "q8" else SPAN_SCHEMA


def decide_shard(cfg: CurateConfig, path: Path, first_row: int, rows: list[dict], problems: dict[str, str],
                  stats: Counter, on_done) -> None:
    """Pass 1 over one shard's thin columns: a slim record per row (verdict and trace features, no text)."""
    t = parquet_file(path).read(columns=THIN)
    ids = t.column("completion_ids").combine_chunks()  # int32 ids, 4 B/token: one shard's worth at most
    lengths = pc.list_value_length(ids).fill_null(0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(ids).to_numpy(zero_copy_only=False)
    row_of = np.repeat(np.arange(t.num_rows), lengths)
    unknown = np.bincount(row_of[flat < 0], minlength=t.num_rows) > 0
    cols = {c: t.column(c).to_pylist() for c in THIN if c != "completion_ids"}
    verdicts = verify_many(cols["completion"], cols["answer"], cfg.last_number, cfg.verify_timeout,
                           cfg.num_workers, on_done=on_done, hard_limit=True)
    for i, v in enumerate(verdicts):
        text, pid = cols["completion"][i], cols["prompt_id"][i]
        problems.setdefault(pid, cols["problem"][i])
        rows.append({
            "_row": first_row + i, "prompt_id": pid, "sample_idx": cols["sample_idx"][i],
            "finish_reason": cols["finish_reason"][i], "num_tokens": cols["num_tokens"][i],
            "completion_ids_unknown": bool(unknown[i]), "pred_answer": v.pred_answer, "correct": v.correct,
            "gold_ok": v.gold_ok, "format_ok": v.pred_answer is not None and not has_unclosed_think(text),
            "unclosed_think": has_unclosed_think(text),
            "repeat_share": filters.repeat_ngram_share(text, cfg.repeat_ngram)
            if cfg.max_repeat_ngram_share is not None else 0.0,
            "foreign_share": filters.foreign_script_share(text, filters.dominant_script(cols["problem"][i]))
            if cfg.max_foreign_script_share is not None else 0.0,
        })
        stats["gold_unparseable"] += not v.gold_ok
        stats["verify_timeouts"] += v.rule == "timeout"


def write_shard(path: Path, out: Path, decided: list[dict], rejected) -> int:
    """Pass 2 over one shard: its kept rows, as stored plus the curated columns, to `out` (none kept: no
    file); its rejected rows, without top-k and ids, to the open `rejected` file. Returns the rows kept."""
    pf = parquet_file(path)
    curated_names = [n for n, _ in CURATED_FIELDS]
    stored = [n for n in pf.schema_arrow.names if n not in curated_names]  # an already curated input: redone
    schema = pa.schema([*(pf.schema_arrow.field(n) for n in stored), *CURATED_FIELDS],
                       metadata=pf.schema_arrow.metadata)
    per_token = ("completion_ids", "topk_ids", "topk_logprobs", *(c for c, _ in (*Q8_COLUMNS, *SPAN_FIELDS[:2])))
    slim = [n for n in stored if n not in per_token]
    kept, writer, tmp, done = 0, None, out.with_name(f".{out.name}.tmp"), 0
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=stored):
            d = decided[done:done + batch.num_rows]
            done += batch.num_rows
            table = pa.Table.from_batches([batch])
            for n, typ in CURATED_FIELDS:
                table = table.append_column(pa.field(n, typ), pa.array([r[n] for r in d], type=typ))
            keep = pa.array([r["reject_reason"] is None for r in d])
            for r in table.filter(pc.invert(keep)).select(slim + curated_names).to_pylist():
                rejected.write(json.dumps(r) + "\n")
            table = table.filter(keep)
            if table.num_rows:
                if writer is None:
                    writer = parquet_writer(tmp, schema)
                writer.write_table(table.replace_schema_metadata(schema.metadata))
                kept += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if kept:
        tmp.replace(out)
    return kept
