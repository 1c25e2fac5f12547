"""Curated traces -> token rows for training: a cache of memory-mapped Arrow files, read row by row.

Why a cache: the curated Parquet shards are compressed, so every rank would have to decompress and hold the whole
top-k (about 120 B per token at k = 20 once decoded; 640M tokens in a production set). Instead the local main
process of each node converts the shards once, shard by shard in record batches, into uncompressed Arrow IPC
files, and every rank memory-maps them: the pages live in the page cache, shared by the ranks, and a batch reads
only its rows. Each record batch holds at most `BATCH_ROWS` rows, so no array's int32 offsets see more than one
batch's values (top-k of 2^31 values would otherwise wrap).

The cache is keyed by content: a sha256 of every shard's bytes, the tokenizer (vocabulary, chat template, special
tokens), whether top-k and re-tokenizing are asked for, and FORMAT. A changed trace, tokenizer or option is
another key; the same inputs under another path reuse it. Default place: `~/.cache/r1distill/tokens/<key>/`
(`train.cache_dir`); entries are left for the next run (the cpu-lab recipe trains many students on one set) and
may be deleted at any time.

Columns per row: `input_ids` (the prompt rendered with the chat template, then the completion: the teacher's own
ids, or the completion text re-tokenized for a student with another tokenizer), `prompt_len`, and for KD
`topk_ids` / `topk_logprobs`, list<fixed_size_list<k>>, one entry per completion token (read and checked by
topk.py). Truncation to max_length happens when a row is read, so one cache serves every max_length.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from r1distill import layout
from r1distill.config import UserError
from r1distill.console import console
from r1distill.data.traces import KIND_KEY, decode_topk, file_metadata, list_offsets, parquet_file, shard_paths
from r1distill.models import load_tokenizer, r1distill_home
from r1distill.prompts import render_prompt
from r1distill.train.config import TrainConfig
from r1distill.train.topk import (
    check_topk_present,
    check_topk_usable,
    read_topk,
    topk_counts,
    topk_lists,
)

FORMAT = 2  # bump when the cache's layout or content changes (2: top-k log-probs checked, counts in meta.json)
BATCH_ROWS = 512  # rows per record batch: at 16k tokens x k 20, 1.7e8 top-k values, far below 2^31


# ---- checks on the inputs ----

def check_vocab(student_path: str, tokenizer, teacher: str | None, what: str) -> None:
    """Teacher and student must share one tokenizer (sizes of padded embedding rows may differ)."""
    if teacher is None:
        return
    if load_tokenizer(teacher).get_vocab() != tokenizer.get_vocab():
        raise UserError(f"The student ({student_path}) and teacher ({teacher}) tokenizers differ: {what} needs a "
                        "shared vocabulary (cross-tokenizer KD is not in this objective without train.xtok: set e.g. "
                        "train.xtok.method=gold), or use train.objective=sft or a student from the teacher's family")


def same_tokenizer(tokenizer, teacher: str) -> bool:
    """Whether the traces' completion_ids (the teacher's tokens) are the student's tokens too. False when the
    teacher's tokenizer differs, or when the teacher names no model at all (an API model such as
    deepseek-reasoner: the hub says the repo does not exist). Any other failure to load it (the hub unreachable,
    a broken download) is raised: guessing would switch SFT between stored ids and re-tokenized text silently."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        return load_tokenizer(teacher).get_vocab() == tokenizer.get_vocab()
    except OSError as e:
        if isinstance(e.__cause__, RepositoryNotFoundError) or isinstance(e, RepositoryNotFoundError):
            return False
        raise UserError(f"train: cannot tell whether the teacher's ({teacher}) tokenizer is the student's: loading "
                        f"it failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}). Fix that, or set "
                        "train.retokenize: true (SFT on the completion text in the student's tokens) or false (the "
                        "stored ids are the student's)") from None


def check_logprobs_kind(cfg: TrainConfig) -> None:
    """Offline KD against "processed" log-probs (after the teacher's temperature/top-p) matches a sharpened,
    truncated distribution, not the teacher's: say so unless the recipe says it is meant."""
    kinds = {file_metadata(p).get(KIND_KEY, "unrecorded") for p in shard_paths(cfg.inp)}
    if "processed" in kinds and not cfg.allow_processed_logprobs:
        console.print(f"[yellow]warning[/]: train: {cfg.inp} holds 'processed' top-k log-probs (after the teacher's "
                      "temperature/top-p: a sampling server's or a hosted API's), so kd learns that sharpened, "
                      "truncated distribution rather than the teacher's own (generate with the hf backend, or "
                      "vLLM's --logprobs-mode raw_logprobs, for raw ones). Set train.allow_processed_logprobs: "
                      "true if that is meant.")


def input_shards(inp: Path) -> list[Path]:
    shards = shard_paths(inp)
    if not shards:
        raise UserError(f"No Parquet shards in {inp}: run curate first (or set train.input_dir)")
    return shards


def readable_shards(inp: Path) -> list[Path]:
    """input_shards, each opened (its footer read): a truncated or damaged shard is a UserError naming it, raised
    before train moves an earlier student aside (r1distill.rerun, rule 1)."""
    shards = input_shards(inp)
    for p in shards:
        parquet_file(p)
    return shards


def read_columns(inp: Path, columns: list[str]) -> pa.Table:
    """Some thin columns of every shard (gkd's prompts and completions; never the top-k)."""
    tables = [parquet_file(p).read(columns=columns) for p in input_shards(inp)]
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        raise UserError(f"{inp}: 0 rows to train on (curation kept none: see {inp / layout.CURATE_STATS_MD})")
    return table


# ---- the cache ----

def tokenizer_fingerprint(tokenizer) -> str:
    blob = json.dumps([sorted(tokenizer.get_vocab().items()), tokenizer.chat_template,
                       sorted(map(str, tokenizer.all_special_tokens)), tokenizer.eos_token_id], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_key(shards: list[Path], tokenizer, need_topk: bool, retok: bool, extra: str = "") -> str:
    parts = [FORMAT, [_file_sha256(p) for p in shards], tokenizer_fingerprint(tokenizer), need_topk, retok,
             *([extra] if extra else [])]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


class _Where:
    """Names row i of a shard in errors: the file, the row and its (prompt_id, sample)."""

    def __init__(self, shard: Path, first: int, table: pa.Table):
        self.shard, self.first, self.table = shard, first, table

    def __call__(self, i: int) -> str:
        loc = f"{self.shard} row {self.first + i}"
        if "prompt_id" in self.table.column_names:
            loc += f" (prompt_id {self.table['prompt_id'][i].as_py()}, sample {self.table['sample_idx'][i].as_py()})"
        return loc


def completion_ids_of(table: pa.Table, tokenizer, retok: bool,
                      where: Callable[[int], str]) -> tuple[np.ndarray, np.ndarray]:
    """(per-row completion lengths, the completion ids one row after another) of one record batch."""
    if retok:  # the stored ids are the teacher's: the completion text in the student's tokens, + eos on a stop
        texts = table["completion"].to_pylist()
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        eos = tokenizer.eos_token_id
        stops = [r == "stop" for r in table["finish_reason"].to_pylist()]
        ids = [x + [eos] if stop and eos is not None else x for x, stop in zip(ids, stops)]
        lens = np.array([len(x) for x in ids], dtype=np.int64)
        flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(lens.sum()))
        return lens, flat
    comp = table["completion_ids"].combine_chunks()
    if comp.null_count:
        i = int(np.flatnonzero(comp.is_null().to_numpy(zero_copy_only=False))[0])
        raise UserError(f"{where(i)}: no completion_ids")
    return (pc.list_value_length(comp).to_numpy().astype(np.int64),
            pc.list_flatten(comp).to_numpy(zero_copy_only=False).astype(np.int32, copy=False))


def interleave(prompts: list[list[int]], plen: np.ndarray, comp: np.ndarray, comp_len: np.ndarray) -> np.ndarray:
    """Row i's prompt ids then its completion ids, for every row: (Σ plen + Σ comp_len,) int32."""
    flat_prompts = np.fromiter((t for p in prompts for t in p), np.int32, int(plen.sum()))
    out_off = np.concatenate([[0], np.cumsum(plen + comp_len)])
    p_off = np.concatenate([[0], np.cumsum(plen)])
    c_off = np.concatenate([[0], np.cumsum(comp_len)])
    out = np.empty(int(out_off[-1]), np.int32)
    out[np.repeat(out_off[:-1] - p_off[:-1], plen) + np.arange(flat_prompts.size)] = flat_prompts
    out[np.repeat(out_off[:-1] + plen - c_off[:-1], comp_len) + np.arange(comp.size)] = comp
    return out


def token_lists(lengths: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(list_offsets(lengths)), pa.array(values))


def _convert_shard(shard: Path, dest: Path, tokenizer, need_topk: bool, retok: bool,
                   k: int | None) -> tuple[int | None, dict[str, int]]:
    """One curated shard -> one Arrow IPC file of token rows, a record batch at a time. Returns the top-k width
    and the top-k's `topk_counts`; a shard whose top-k has no usable entry at all is an error."""
    pf = parquet_file(shard)
    names = pf.schema_arrow.names
    for col in ("prompt", "completion_ids"):
        if col not in names:
            raise UserError(f"{shard}: no column {col!r}; train reads traces written by generate/curate")
    cols = ["prompt", "completion_ids"] + [c for c in ("prompt_id", "sample_idx") if c in names]
    if retok:
        cols += ["completion", "finish_reason"]
    if need_topk:
        stored = [c for c in ("topk_ids", "topk_logprobs", "topk_lp_top1", "topk_lp_q8") if c in names]
        if "topk_ids" not in stored or not ({"topk_logprobs", "topk_lp_q8"} & set(stored)):
            raise UserError(f"{shard}: no topk_ids/topk_logprobs column: train.objective=kd needs the teacher's "
                            "top-k log-probs (generate with generate.topk_logprobs > 0), or use train.objective=sft "
                            "or kd_online")
        cols += stored
    width, counts = k, {}

    def rows(table: pa.Table, where: _Where) -> dict:
        nonlocal width
        comp_len, comp = completion_ids_of(table, tokenizer, retok, where)
        prompts = [render_prompt(tokenizer, p) for p in table["prompt"].to_pylist()]
        plen = np.array([len(p) for p in prompts], dtype=np.int64)
        arrays = {"input_ids": token_lists(plen + comp_len, interleave(prompts, plen, comp, comp_len)),
                  "prompt_len": pa.array(plen.astype(np.int32))}
        if need_topk:
            ids, lps, width = read_topk(table, comp_len, len(tokenizer), width, where)
            arrays["topk_ids"], arrays["topk_logprobs"] = topk_lists(comp_len, ids, lps, width)
            for name, n in topk_counts(ids, lps, comp_len).items():
                counts[name] = counts.get(name, 0) + n
        return arrays

    write_ipc(shard, pf, cols, dest, rows)
    check_topk_usable(shard, counts)
    return width, counts


def write_ipc(shard: Path, pf, columns: list[str], dest: Path, rows: Callable[[pa.Table, "_Where"], dict]) -> None:
    """Stream `columns` of a curated shard a record batch at a time (q8 codes decoded to float16 log-probs) through
    `rows` (table, where -> dict of Arrow arrays) into one Arrow IPC file at dest, so that no shard is ever held
    whole. An empty shard still gets a (schema-less) marker file so the parts line up."""
    writer, first = None, 0
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            table = decode_topk(pa.Table.from_batches([batch]))
            rb = pa.RecordBatch.from_pydict(rows(table, _Where(shard, first, table)))
            if writer is None:
                writer = pa.ipc.new_file(str(dest), rb.schema)
            writer.write_batch(rb)
            first += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        dest.write_bytes(b"")


def prepare_tokens(cfg: TrainConfig, tokenizer, need_topk: bool, retok: bool, convert=None, extra: str = "") -> Path:
    """The cache dir for these inputs, converting the shards first when it does not exist yet (atomically: a
    temporary dir renamed into place, so a killed conversion is redone, never half-read). convert(shard, dest,
    k) -> (k, counts): another converter (cross-tokenizer KD's, train/xtok/data.py); `extra` then names what it
    makes, for the cache key. The converter's counts (the default one's: `topk_counts`) are summed into meta.json."""
    shards = input_shards(cfg.inp)
    if need_topk:
        check_topk_present(cfg.inp, shards)
    key = cache_key(shards, tokenizer, need_topk, retok, extra)
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else r1distill_home() / "tokens"
    final = root / key
    if (final / layout.CACHE_META).exists():
        return final
    tmp = root / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    console.print(f"train: converting {len(shards)} shards of {cfg.inp} to memory-mapped token rows in {final}")
    if convert is None:
        def convert(shard: Path, dest: Path, k: int | None) -> tuple[int | None, dict[str, int]]:
            return _convert_shard(shard, dest, tokenizer, need_topk, retok, k)
    k, counts = None, {}
    try:
        for i, shard in enumerate(shards):
            k, got = convert(shard, tmp / f"part-{i:05d}.arrow", k)
            for name, n in got.items():
                counts[name] = counts.get(name, 0) + n
    except BaseException:  # a bad shard: no half-built cache left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / layout.CACHE_META).write_text(json.dumps({"format": FORMAT, "k": k, "shards": [str(p) for p in shards],
                                               "topk": need_topk, "retokenized": retok, "counts": counts}))
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same conversion first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def require_rows(rows: TokenData, inp: Path, max_length: int) -> None:
    """Refuse an input with nothing to train on: no curated row at all, or every prompt filling max_length."""
    if not rows.rows_total:
        raise UserError(f"{inp}: 0 rows to train on (curation kept none: see {inp / layout.CURATE_STATS_MD})")
    if not len(rows):
        raise UserError(f"{inp}: all {rows.rows_total} rows were dropped: their prompts alone fill "
                        f"train.max_length={max_length}; raise it")


class TokenData:
    """Token rows from a cache dir, memory-mapped: row r (of the rows that keep a completion token within
    max_length) as numpy views; nothing is copied until the collator pads a batch."""

    def __init__(self, cache: Path, max_length: int):
        meta = json.loads((cache / layout.CACHE_META).read_text())
        self.k: int | None = meta["k"]
        self.counts: dict = meta.get("counts", {})  # the converter's tallies (topk_counts; xtok's flagged rows)
        self._extra: list[str] = []  # other columns (cross-tokenizer KD's): whole per-row arrays or scalars
        self._batches: list[dict] = []
        plen, total = [], []
        for part in sorted(cache.glob("part-*.arrow")):
            if part.stat().st_size == 0:
                continue
            reader = pa.ipc.open_file(pa.memory_map(str(part)))  # zero-copy: buffers point into the map
            for b in range(reader.num_record_batches):
                rb = reader.get_batch(b)
                ids = rb.column("input_ids")
                entry = {"off": ids.offsets.to_numpy(), "ids": ids.values.to_numpy(),
                         "plen": rb.column("prompt_len").to_numpy()}
                if "topk_ids" in rb.schema.names:
                    for name in ("topk_ids", "topk_logprobs"):
                        col = rb.column(name)
                        entry[name] = col.values.values.to_numpy().reshape(-1, self.k)
                        entry[name + "_off"] = col.offsets.to_numpy()
                for name in rb.schema.names:
                    if name not in ("input_ids", "prompt_len", "topk_ids", "topk_logprobs"):
                        self._load_extra(entry, name, rb.column(name))
                self._batches.append(entry)
                plen.append(entry["plen"].astype(np.int64))
                total.append(np.diff(entry["off"]).astype(np.int64))
        plen_all = np.concatenate(plen) if plen else np.zeros(0, np.int64)
        total_all = np.concatenate(total) if total else np.zeros(0, np.int64)
        comp_len = total_all - plen_all
        keep = np.minimum(comp_len, np.maximum(max_length - plen_all, 0))
        self.truncated = int((comp_len > keep).sum())
        self.rows_total = len(plen_all)
        self._rows = np.flatnonzero(keep > 0)  # kept row -> global row
        self._keep = keep
        counts = np.array([len(b["plen"]) for b in self._batches])
        self._batch_start = np.concatenate([[0], np.cumsum(counts)])
        self.completion_tokens = int(keep[self._rows].sum())

    def _load_extra(self, entry: dict, name: str, col: pa.Array) -> None:
        if name not in self._extra:
            self._extra.append(name)
        if not pa.types.is_list(col.type):
            entry[name] = col.to_numpy(zero_copy_only=False)
            return
        values = col.values
        width = values.type.list_size if pa.types.is_fixed_size_list(values.type) else None
        entry[name] = values.values.to_numpy().reshape(-1, width) if width is not None else values.to_numpy()
        entry[name + "_off"] = col.offsets.to_numpy()

    def __len__(self) -> int:
        return len(self._rows)

    def global_row(self, r: int) -> int:
        """Kept row r's position among all the input's rows (shards in order), counting the dropped ones."""
        return int(self._rows[r])

    def row(self, r: int) -> dict:
        """Kept row r: input_ids (prompt + its completion cut to max_length), prompt_len, and its top-k rows."""
        g = int(self._rows[r])
        b = int(np.searchsorted(self._batch_start, g, side="right") - 1)
        e, j = self._batches[b], g - int(self._batch_start[b])
        p, c = int(e["plen"][j]), int(self._keep[g])
        a = int(e["off"][j])
        feat = {"input_ids": e["ids"][a:a + p + c], "prompt_len": p}
        if "topk_ids" in e:
            t = int(e["topk_ids_off"][j])
            feat["topk_ids"], feat["topk_logprobs"] = e["topk_ids"][t:t + c], e["topk_logprobs"][t:t + c]
        for name in self._extra:  # whole (never cut to max_length: they need not count the student's tokens)
            if name + "_off" in e:
                feat[name] = e[name][int(e[name + "_off"][j]):int(e[name + "_off"][j + 1])]
            else:
                feat[name] = e[name][j]
        return feat
