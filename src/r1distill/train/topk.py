"""The teacher's top-k log-probs as the token cache (data.py) reads them from curated shards: checked (a list
per completion token, the same k throughout, ids in the student's vocabulary, log-probs <= 0), tallied where
they carry nothing (and warned about when train starts), and written as the cache's list<fixed_size_list<k>>
columns. Cross-tokenizer KD's converter (xtok/data.py) reads the teacher's top-k with the same functions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from r1distill.config import UserError
from r1distill.console import console
from r1distill.data.traces import list_offsets, parquet_file

# The teacher's top-k log-probs, as read into the cache (the loss's side is losses.valid_topk):
#   > LOGPROB_TOLERANCE  (finite) an error naming the row: a log-prob is <= 0 (these are probabilities or logits);
#                        (0, tolerance] is a log-prob of ~1 rounded up, kept;
#   -inf                 a legitimate "no entry" (an unmapped token, one masked by top-p), as is id -1;
#   NaN, +inf            broken: read as no entry, counted and warned about (`warn_topk`);
#   a position with no usable entry (all of the above) has no KD term, only CE: counted, and said (legitimate at
#   a llama.cpp server's appended eos); a shard where no position has one is an error naming it, since KD on it
#   would be α·CE alone under the name kd.
LOGPROB_TOLERANCE = 1e-3


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def read_topk(table: pa.Table, comp_len: np.ndarray, vocab: int, k: int | None, where: Callable[[int], str]):
    """The top-k columns of one record batch as (n_tokens, k) int32 / float16 arrays, checked: present in every
    row, one entry per completion token, the same k everywhere (`k`: the dataset's so far), ids in the vocab."""
    off = np.concatenate([[0], np.cumsum(comp_len)])
    out = {}
    for col, dtype in (("topk_ids", np.int32), ("topk_logprobs", np.float16)):
        arr = table[col].combine_chunks()
        if arr.null_count:
            raise UserError(f"{where(_first(arr.is_null().to_numpy(zero_copy_only=False)))}: no topk_ids/"
                            "topk_logprobs; offline KD needs traces generated with generate.topk_logprobs > 0 "
                            "(or use train.objective=sft)")
        lens = pc.list_value_length(arr).to_numpy()
        if (bad := np.flatnonzero(lens != comp_len)).size:
            i = int(bad[0])
            raise UserError(f"{where(i)}: {col} has {lens[i]} positions but completion_ids has {comp_len[i]} "
                            "tokens; the teacher's top-k must align with the completion (regenerate the traces, "
                            "or use sft)")
        per_token = pc.list_flatten(arr)
        widths = pc.list_value_length(per_token).to_numpy()
        want = k if k is not None else (int(widths[0]) if widths.size else None)
        if widths.size and (bad := np.flatnonzero(widths != want)).size:
            i = int(np.searchsorted(off, bad[0], side="right") - 1)
            raise UserError(f"{where(i)}: the top-k lists have different lengths from token to token "
                            f"({widths[bad[0]]} vs {want}); all rows need the same k")
        k = want
        out[col] = pc.list_flatten(per_token).to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(
            -1, k or 0)
    ids, lps = out["topk_ids"], out["topk_logprobs"]
    if lps.size and (high := np.isfinite(lps) & (lps > LOGPROB_TOLERANCE)).any():  # NaN/+inf: topk_counts
        t = _first(high.any(axis=1))
        i = int(np.searchsorted(off, t, side="right") - 1)
        raise UserError(f"{where(i)}: top-k log-prob {float(lps[t][high[t]][0]):.4g} is above 0: topk_logprobs must "
                        "be natural-log probabilities (<= 0), not probabilities or logits")
    # -1 marks an entry an API server named by a string the tokenizer could not map (losses.valid_topk)
    if ids.size and (ids.max() >= vocab or ids.min() < -1):
        t = _first(((ids >= vocab) | (ids < -1)).any(axis=1))
        i = int(np.searchsorted(off, t, side="right") - 1)
        bad_id = int(ids[t][(ids[t] >= vocab) | (ids[t] < -1)][0])
        raise UserError(f"{where(i)}: top-k id {bad_id} is outside the student's vocabulary of {vocab}: the traces "
                        "come from another tokenizer (for cross-tokenizer KD set train.xtok)")
    return ids, out["topk_logprobs"], k


def topk_counts(ids: np.ndarray, lps: np.ndarray, comp_len: np.ndarray) -> dict[str, int]:
    """A record batch's top-k (flat (n_tokens, k)) tallied: its positions, the NaN/+inf entries and the positions and
    rows holding one, and the positions with no usable entry (id >= 0 and a finite log-prob: losses.valid_topk)."""
    bad = np.isnan(lps) | np.isposinf(lps)
    broken = np.flatnonzero(bad.any(axis=1))  # positions holding one; their rows found from the row ends
    rows = np.unique(np.searchsorted(np.cumsum(comp_len), broken, side="right")) if broken.size else broken
    return {"topk_positions": len(lps), "topk_invalid_entries": int(bad.sum()),
            "topk_invalid_positions": int(broken.size), "topk_invalid_rows": int(rows.size),
            "topk_empty_positions": int((~((ids >= 0) & np.isfinite(lps)).any(axis=1)).sum())}


def warn_topk(counts: dict, inp: Path) -> None:
    """One line on the teacher's top-k entries that carry nothing, from the counts made when the cache was built."""
    c = {k: counts.get(k, 0) for k in ("topk_positions", "topk_invalid_entries", "topk_invalid_positions",
                                        "topk_invalid_rows", "topk_empty_positions")}
    if c["topk_invalid_entries"]:
        console.print(f"[yellow]warning[/]: train: {inp}: {c['topk_invalid_entries']} top-k log-probs are NaN or +inf "
                      f"({c['topk_invalid_positions']} of {c['topk_positions']} positions, {c['topk_invalid_rows']} "
                      f"rows): read as missing entries; {c['topk_empty_positions']} positions have no usable entry and "
                      "train on CE only")
    elif c["topk_empty_positions"]:
        console.print(f"[dim]train: {c['topk_empty_positions']} of {c['topk_positions']} positions have no usable "
                      "teacher entry (all -inf or unmapped, e.g. an eos the server did not return): CE only there[/]")


def check_topk_usable(shard: Path, counts: dict) -> None:
    """A shard whose top-k (`topk_counts`) has no usable entry at all: an error, not a quiet SFT run called kd."""
    if counts.get("topk_positions") and counts["topk_empty_positions"] == counts["topk_positions"]:
        raise UserError(f"{shard}: none of the teacher's top-k log-probs at its {counts['topk_positions']} completion "
                        f"tokens is usable ({counts['topk_invalid_entries']} NaN or +inf, the rest -inf or unmapped): "
                        "offline KD would train on CE alone; regenerate or re-score the traces, or use "
                        "train.objective=sft")


def topk_lists(comp_len: np.ndarray, ids: np.ndarray, lps: np.ndarray, k: int | None) -> tuple[pa.Array, pa.Array]:
    """Flat [N, k] top-k ids and log-probs -> two list<fixed_size_list<k>> columns, one list per row."""
    off = pa.array(list_offsets(comp_len))
    return tuple(pa.ListArray.from_arrays(off, pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), k or 0))
                 for flat in (ids, lps))


def check_topk_present(inp: Path, shards: list[Path]) -> None:
    """Traces generated without top-k (generate.topk_logprobs: 0) have topk_ids null in every row: one line for
    the whole dir, from the footers' null counts, before anything is converted."""
    rows = nulls = 0
    for p in shards:
        md = parquet_file(p).metadata
        rows += md.num_rows
        names = [md.schema.column(j).path for j in range(md.num_columns)]
        col = next((j for j, n in enumerate(names) if n.startswith("topk_ids.")), None)
        if col is None:
            return  # no such column: the converter (data.py) names the shard
        for g in range(md.num_row_groups):
            stats = md.row_group(g).column(col).statistics
            if stats is None or not stats.has_null_count:
                return
            nulls += stats.null_count
    if rows and nulls == rows:
        raise UserError(f"{inp}: topk_ids is empty in all {rows} rows: offline KD needs traces generated with "
                        "generate.topk_logprobs > 0, or use train.objective=sft or kd_online")
