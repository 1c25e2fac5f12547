"""Cross-tokenizer KD, the data: curated shards -> token rows of the cache in train/data.py (one converter more).

Per row: the student's `input_ids` (its chat template, then the completion text in its tokens, + its eos on a
stop), `prompt_len`, `s_nbytes` (its completion tokens' bytes, eos 0) and `s_ok` (they make the completion's
bytes); and the teacher's side:
- offline (kd): `t_nbytes`, `t_lp`, `t_ok` from the trace columns `token_nbytes`, `token_logprobs`,
  `token_bytes_ok`, and its top-k as `t_topk_ids` / `t_topk_lp` (T_teacher, k), one row per teacher token;
- online (kd_online): the teacher's own tokens: `t_input_ids` (its chat template, then the completion text in
  its tokens, + its eos on a stop), `t_prompt_len`, `t_nbytes`, `t_ok`.
Traces written before these columns existed are refused for offline KD in one line naming the shard; every other
objective reads them as before. Rows whose bytes do not round-trip (either side) are counted (`meta.json`) and
get CE only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from r1distill.config import UserError
from r1distill.data.traces import SPAN_FIELDS, list_offsets, parquet_file
from r1distill.prompts import render_prompt
from r1distill.tokenbytes import fingerprint, spans, token_bytes
from r1distill.train import data
from r1distill.train.data import completion_ids_of, interleave, token_lists, write_ipc
from r1distill.train.topk import check_topk_usable, read_topk, topk_counts, topk_lists

SPAN_COLUMNS = [n for n, _ in SPAN_FIELDS]
OLD_TRACES = ("cross-tokenizer KD (train.xtok) reads the byte spans and sampled-token log-probs that `r1distill "
              "generate` writes (columns token_nbytes, token_logprobs, token_bytes_ok); these traces were written "
              "without them: generate them again, or use objective sft, or kd_online (its teacher tokenizes the "
              "text itself)")


def cache_tag(online: bool, teacher_tok) -> str:
    """What this converter makes, for the cache key."""
    return hashlib.sha256(f"xtok/{'online/' + fingerprint(teacher_tok) if online else 'offline'}".encode()).hexdigest()


def own_tokens(tok, texts: list[str], stops: list[bool]) -> tuple[list[list[int]], list[np.ndarray], list[bool]]:
    """Each text in `tok`'s tokens (+ eos on a stop), each token's bytes (eos 0), and whether they round-trip."""
    table, eos = token_bytes(tok, "text"), tok.eos_token_id
    ids = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    out_ids, widths, oks = [], [], []
    for x, text, stop in zip(ids, texts, stops):
        w, ok = spans(x, table, text)
        if stop and eos is not None:
            x, w = x + [eos], np.append(w, 0)
        out_ids.append(x)
        widths.append(w.astype(np.int32))
        oks.append(ok)
    return out_ids, widths, oks


def _lists(rows: list[np.ndarray], dtype) -> pa.Array:
    flat = np.concatenate(rows).astype(dtype) if rows else np.zeros(0, dtype)
    return pa.ListArray.from_arrays(pa.array(list_offsets(np.array([len(r) for r in rows]))), pa.array(flat))


def convert_shard(shard: Path, dest: Path, student_tok, teacher_tok, online: bool, k: int | None):
    """One curated shard -> one Arrow IPC file of xtok rows (module doc). Returns (k, counts)."""
    pf = parquet_file(shard)
    names = pf.schema_arrow.names
    need = _check_columns(shard, names, online)
    cols = need + [c for c in ("prompt_id", "sample_idx") if c in names]
    if not online:
        stored = [c for c in ("topk_ids", "topk_logprobs", "topk_lp_top1", "topk_lp_q8") if c in names]
        if "topk_ids" not in stored:
            raise UserError(f"{shard}: no topk_ids/topk_logprobs column: offline cross-tokenizer KD needs the "
                            "teacher's top-k log-probs (generate with generate.topk_logprobs > 0), or use kd_online")
        cols += stored
    counts = {"rows": 0, "teacher_bytes_mismatch": 0, "student_bytes_mismatch": 0}
    width = k

    def rows(table: pa.Table, where) -> dict:
        nonlocal width
        texts = table["completion"].to_pylist()
        stops = [r == "stop" for r in table["finish_reason"].to_pylist()]
        s_ids, s_w, s_ok = own_tokens(student_tok, texts, stops)
        prompts = [render_prompt(student_tok, p) for p in table["prompt"].to_pylist()]
        plen = np.array([len(p) for p in prompts], dtype=np.int64)
        comp_len = np.array([len(x) for x in s_ids], dtype=np.int64)
        comp = np.fromiter((t for x in s_ids for t in x), np.int32, int(comp_len.sum()))
        arrays = {"input_ids": token_lists(plen + comp_len, interleave(prompts, plen, comp, comp_len)),
                  "prompt_len": pa.array(plen.astype(np.int32)), "s_nbytes": _lists(s_w, np.int32),
                  "s_ok": pa.array(s_ok)}
        if online:
            t_ids, t_w, t_ok = own_tokens(teacher_tok, texts, stops)
            t_prompts = [render_prompt(teacher_tok, p) for p in table["prompt"].to_pylist()]
            arrays.update(t_input_ids=_lists([np.array(p + x) for p, x in zip(t_prompts, t_ids)], np.int32),
                          t_prompt_len=pa.array(np.array([len(p) for p in t_prompts], np.int32)),
                          t_nbytes=_lists(t_w, np.int32), t_ok=pa.array(t_ok))
        else:
            t_len, _ = completion_ids_of(table, None, False, where)
            t_ok = _stored_spans(table, t_len, where, arrays)
            ids, lps, width = read_topk(table, t_len, 2**31 - 1, width, where)
            arrays["t_topk_ids"], arrays["t_topk_lp"] = topk_lists(t_len, ids, lps, width)
            for name, n in topk_counts(ids, lps, t_len).items():
                counts[name] = counts.get(name, 0) + n
        counts["rows"] += table.num_rows
        counts["teacher_bytes_mismatch"] += int(np.sum(~np.asarray(t_ok, bool)))
        counts["student_bytes_mismatch"] += int(np.sum(~np.asarray(s_ok, bool)))
        return arrays

    write_ipc(shard, pf, cols, dest, rows)
    check_topk_usable(shard, counts)
    return width, counts


def _check_columns(shard: Path, names: list[str], online: bool) -> list[str]:
    """The columns this converter reads; a UserError naming every missing one (the span columns: OLD_TRACES)."""
    need = ["prompt", "completion", "finish_reason"] + ([] if online else ["completion_ids", *SPAN_COLUMNS])
    missing = [c for c in need if c not in names]
    spans_missing = [c for c in missing if c in SPAN_COLUMNS]
    if spans_missing:
        raise UserError(f"{shard}: no column{'s' * (len(spans_missing) > 1)} "
                        f"{', '.join(repr(c) for c in spans_missing)}: {OLD_TRACES}")
    if missing:
        raise UserError(f"{shard}: no column {missing[0]!r}: train reads traces written by generate/curate")
    return need


def _stored_spans(table: pa.Table, t_len: np.ndarray, where, arrays: dict) -> list[bool]:
    """The teacher's stored spans and sampled log-probs into `arrays`, checked against its completion_ids."""
    for name, out, dtype in (("token_nbytes", "t_nbytes", np.int32), ("token_logprobs", "t_lp", np.float32)):
        col = table[name].combine_chunks()
        if col.null_count:
            i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise UserError(f"{where(i)}: {name} is empty: {OLD_TRACES}")
        lens = pc.list_value_length(col).to_numpy()
        if (bad := np.flatnonzero(lens != t_len)).size:
            i = int(bad[0])
            raise UserError(f"{where(i)}: {name} has {lens[i]} entries but completion_ids {t_len[i]} tokens")
        values = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(dtype)
        arrays[out] = pa.ListArray.from_arrays(pa.array(list_offsets(t_len)), pa.array(values))
    ok = table["token_bytes_ok"].fill_null(False).to_pylist()
    arrays["t_ok"] = pa.array(ok)
    return ok


def prepare(cfg, student_tok, teacher_tok, online: bool) -> Path:
    """The xtok token cache for cfg's curated shards (data.prepare_tokens with this converter)."""
    for shard in data.input_shards(cfg.inp):  # every shard's footer, before anything is converted
        _check_columns(shard, parquet_file(shard).schema_arrow.names, online)
    convert = lambda shard, dest, k: convert_shard(shard, dest, student_tok, teacher_tok, online, k)  # noqa: E731
    return data.prepare_tokens(cfg, student_tok, not online, True, convert=convert,
                               extra=cache_tag(online, teacher_tok))
