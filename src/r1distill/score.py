"""Stage `score`: trace shards -> the same traces with a teacher's top-k log-probs over their own tokens.

Why: most trace sets were not written by a model whose log-probs anyone kept (OpenR1-Math, OpenThoughts, s1K, a
hosted API's outputs). Offline KD needs the teacher's distribution at each completion token; a forward pass of an
open teacher over prompt + completion gives it for a fraction of the cost of generating (DistillKit does the same
with vLLM's prompt log-probs). No library writes it in our trace schema, so this stage does.

Per row the teacher sees `teacher_prompt` (or `prompt` where there is none) rendered by its chat template with the
assistant turn opened, then the completion tokens:
- the row's own `completion_ids` when the shard's tokenizer fingerprint (`TOKENIZER_KEY`) is the teacher's: the
  tokens a generation sampled, so scoring `generate`'s traces with the same teacher gives generate's own top-k;
- else the completion text in the teacher's tokens, plus its eos when the trace stopped cleanly (finish_reason
  "stop"), as a generation would have ended. When the chat template already opens the reasoning (the rendered
  prompt ends with "<think>", as DeepSeek-R1's does) and the completion starts with "<think>", the completion's
  own "<think>" is dropped from its tokens (it is in the prompt).
It writes `completion_ids`, `num_tokens`, `topk_ids`, `topk_logprobs` (raw log-probs), `token_logprobs` and the
byte spans (`token_nbytes`, `token_bytes_ok`) as generate does; every other column is kept as it is (curated
columns too). Shard metadata: `logprobs_kind: raw`, the teacher's tokenizer fingerprint, the scoring teacher.
Rows whose prompt + completion exceed the teacher's context are left out, named in a warning and counted in the
summary (like generate's too-long prompts).

Where it sits in `run`: after curate (import -> curate -> score -> train -> eval), so only the traces training
will use are scored: a forward pass over every token is the costly part, curating needs no log-probs, and
curate rejects a quarter to a half of a typical trace set (wrong answers, cut-offs, duplicates). Its default
input is therefore `{run_dir}/curated` and its output `{run_dir}/scored`, which `train` then reads.

Output: one shard per input shard, of the same name, written whole under a temporary name and renamed (row
groups streamed, so memory stays flat in the shard's size), so a killed run resumes at the first shard without
an output and never writes a row twice. `shard: i/N` takes every N-th input shard (from the i-th), so N workers
fill one output dir. Reruns follow `r1distill.rerun`; like generate, a dir of another config or input is refused
rather than moved (scores cost a teacher pass).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from r1distill import layout, rerun
from r1distill.backends import BACKENDS, check_options, close, get_backend
from r1distill.config import LAYOUT, ConfigError, UserError, config_hash, parse_worker, to_dict, write_resolved
from r1distill.console import console, progress
from r1distill.data import traces as store
from r1distill.data.traces import (
    FORMAT_KEY,
    KIND_KEY,
    Q8_COLUMNS,
    SPAN_FIELDS,
    TOKENIZER_KEY,
    TOPK_FORMATS,
    TRACE_SCHEMA,
    file_metadata,
    parquet_file,
    parquet_writer,
    rows_to_table,
    shard_paths,
)
from r1distill.models import check_model

SCORER_KEY = "r1distill.scored_by"  # shard metadata: the teacher that scored the traces
TOPK_COLUMNS = {"topk_ids", "topk_logprobs", *(n for n, _ in Q8_COLUMNS), *(n for n, _ in SPAN_FIELDS)}
ROWS_PER_CALL = 64  # rows handed to the backend at once (and one Parquet row group)


@dataclass
class ScoreConfig:
    run_dir: str = "runs/default"  # the run's directory: each stage's default input and output dirs are under it
    teacher: str = "smollm2-135m-instruct"  # the model whose top-k is stored: built-in name, hub id or local dir
    input_dir: str | None = None  # trace or curated shards; default: {run_dir}/curated
    output_dir: str | None = None  # default: {run_dir}/scored
    backend: str = "hf"  # hf | vllm (prompt log-probs) | openai (a vLLM server's prompt log-probs)
    backend_options: dict = field(default_factory=dict)  # settings of the chosen backend (see its module)
    topk_logprobs: int = 20  # top-k log-probs stored per completion token
    topk_format: str = "exact"  # exact (float16) | q8 (8-bit; see data/traces.py)
    batch_size: int = 8  # sequences per forward pass (hf)
    shard: str | None = None  # "i/N": this worker takes input shards i, i+N, i+2N, ...
    # auto (bf16 on a GPU that has it or a CPU with native bf16, else fp32) | float32 | bfloat16 | float16
    dtype: str = "auto"
    device: str = "auto"  # auto (CUDA if present, else CPU) | cpu | cuda | cuda:N
    trust_remote_code: bool = False  # run a model's own Python from the hub: off unless you trust that code
    # delete this stage's earlier outputs (after the input is checked) instead of resuming or moving aside
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.topk_logprobs < 1:
            raise ConfigError(f"score.topk_logprobs must be >= 1, got {self.topk_logprobs}")
        if self.batch_size < 1:
            raise ConfigError(f"score.batch_size must be >= 1, got {self.batch_size}")
        if self.topk_format not in TOPK_FORMATS:
            raise ConfigError(f"score.topk_format must be one of {', '.join(TOPK_FORMATS)}, got {self.topk_format!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"score.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "vllm":
            check_options("vllm", self.backend_options).check_topk(self.topk_logprobs, "score.topk_logprobs")
        if self.worker and self.overwrite:
            raise ConfigError("score.overwrite would delete the other workers' shards too: delete the output dir "
                              "once before starting the workers instead")

    @property
    def worker(self) -> tuple[int, int] | None:
        return parse_worker(self.shard, "score.shard")

    @property
    def inp(self) -> Path:
        return Path(self.input_dir or Path(self.run_dir) / LAYOUT["curated"])

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path(self.run_dir) / LAYOUT["scored"])


RESTART = "Use another output_dir, or pass score.overwrite=true to score again."
UNSTAMPED = ("overwrite", "run_dir", "input_dir", "output_dir", "batch_size", "shard", "device", "backend_options")


def stamp(cfg: ScoreConfig, shards: list[Path]) -> str:
    """What the scores depend on: the teacher, k, the format, the dtype, and the input shards' content."""
    return config_hash(cfg, rerun.fingerprint(shards), exclude=UNSTAMPED)



def _check_inputs(shards: list[Path]) -> None:
    """Every input shard must hold the trace columns scoring reads (named file and column otherwise)."""
    need = ["prompt", "completion", "finish_reason"]
    for p in shards:
        schema = parquet_file(p).schema_arrow
        for name in need:
            if name not in schema.names:
                raise UserError(f"{p}: missing column {name!r} (score reads trace shards: the trace schema of "
                                "r1distill.data.traces, as generate, import and curate write it)")


def _output_schema(schema: pa.Schema) -> pa.Schema:
    """The input's columns, q8 top-k columns replaced by float ones, the top-k and span columns present."""
    fields = []
    for f in schema:
        if f.name in ("topk_lp_top1", "topk_lp_q8"):
            if f.name == "topk_lp_top1":
                fields.append(TRACE_SCHEMA.field("topk_logprobs"))
        elif f.name in ("topk_ids", "topk_logprobs"):
            fields.append(TRACE_SCHEMA.field(f.name))
        elif f.name in dict(SPAN_FIELDS):
            continue
        else:
            fields.append(f)
    for name in ("topk_ids", "topk_logprobs"):
        if name not in [f.name for f in fields]:
            fields.append(TRACE_SCHEMA.field(name))
    return pa.schema([*fields, *(pa.field(n, t) for n, t in SPAN_FIELDS)])


class Tokens:
    """The teacher's view of a row: its rendered prompt ids and completion ids (module doc)."""

    def __init__(self, tokenizer):
        from r1distill.prompts import render_prompt
        from r1distill.tokenbytes import fingerprint, token_bytes

        self.tok, self.render = tokenizer, render_prompt
        self.fingerprint = fingerprint(tokenizer)
        self.table = token_bytes(tokenizer)
        self.eos = tokenizer.eos_token_id

    def prompt(self, messages: list[dict]) -> list[int]:
        return self.render(self.tok, messages)

    def completion(self, prompt_ids: list[int], text: str, finish: str | None) -> list[int]:
        if text.lstrip().startswith("<think>") and self.tok.decode(prompt_ids[-4:]).rstrip().endswith("<think>"):
            text = text.lstrip()[len("<think>"):].lstrip("\n")
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return ids + [self.eos] if finish == "stop" and self.eos is not None else ids


def _score_shard(cfg: ScoreConfig, backend, tokens: Tokens, src: Path, dest: Path, context: int,
                 stats: Counter, tick) -> list[str]:
    """Score one input shard into `dest` (streamed row groups, renamed into place); returns the ids of rows left
    out as too long."""
    pf = parquet_file(src)
    own_ids = file_metadata(src).get(TOKENIZER_KEY) == tokens.fingerprint
    schema = _output_schema(pf.schema_arrow)
    meta = {FORMAT_KEY: cfg.topk_format.encode(), KIND_KEY.encode(): b"raw",
            TOKENIZER_KEY.encode(): tokens.fingerprint.encode(), SCORER_KEY.encode(): cfg.teacher.encode()}
    from r1distill.tokenbytes import spans

    too_long: list[str] = []
    read_cols = [n for n in pf.schema_arrow.names if n not in TOPK_COLUMNS]

    def write(f) -> None:
        writer = None
        for batch in pf.iter_batches(batch_size=ROWS_PER_CALL, columns=read_cols):
            rows = pa.Table.from_batches([batch]).to_pylist()
            inputs, keep = [], []
            for r in rows:
                messages = r.get("teacher_prompt") or r["prompt"]
                p_ids = tokens.prompt(messages)
                ids = r.get("completion_ids")
                if not (own_ids and ids is not None):
                    ids = tokens.completion(p_ids, r["completion"] or "", r["finish_reason"])
                    stats["retokenized"] += 1
                if len(p_ids) + len(ids) > context:
                    too_long.append(str(r.get("prompt_id")))
                    continue
                inputs.append((p_ids, list(ids)))
                keep.append(r)
            scored = backend.score(inputs, cfg.topk_logprobs, progress=tick) if inputs else []
            for r, (_, ids), s in zip(keep, inputs, scored):
                text = r["completion"] or ""
                nbytes, ok = spans(ids, tokens.table, text)
                r.update(completion_ids=ids, num_tokens=len(ids), topk_ids=s.topk_ids, topk_logprobs=s.topk_logprobs,
                         token_logprobs=s.token_logprobs, token_nbytes=nbytes, token_bytes_ok=ok)
                stats["tokens"] += len(ids)
            stats["rows"] += len(keep)
            table = rows_to_table(keep, schema, topk_format=cfg.topk_format)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
            if writer is None:
                writer = parquet_writer(f, table.schema)
            if table.num_rows:
                writer.write_table(table)
        if writer is None:  # an empty input shard
            empty = rows_to_table([], schema, topk_format=cfg.topk_format)
            writer = parquet_writer(f, empty.schema.with_metadata({**(empty.schema.metadata or {}), **meta}))
        writer.close()

    store.write_atomic(dest, write, f".{dest.name}.tmp")
    return too_long


def run(cfg: ScoreConfig) -> Path:
    """Score every input shard that has no output yet; resume what an earlier run left."""
    shards = shard_paths(cfg.inp)
    if not shards:
        raise UserError(f"No Parquet shards in {cfg.inp}: run curate (or import / generate) first, or set "
                        "score.input_dir")
    _check_inputs(shards)
    if cfg.backend != "openai":  # a server's model names are its own
        check_model(cfg.teacher)
    out, h = cfg.out, stamp(cfg, shards)
    state = rerun.claim(out, h, "score", overwrite=cfg.overwrite, refuse=RESTART, config=to_dict(cfg),
                        ignore=UNSTAMPED)
    if state == "done":
        console.print(f"score: {out} already holds these traces scored by {cfg.teacher} (stamp {h}); nothing to do "
                      "(score.overwrite=true scores again)")
        return out
    out.mkdir(parents=True, exist_ok=True)
    mine = _mine(cfg, shards)
    names = {s.name for s in mine}
    for p in out.glob(".*.tmp"):  # what a killed run left (the other workers may be writing theirs)
        if cfg.worker is None or p.name[1:-len(".tmp")] in names:
            p.unlink(missing_ok=True)
    if cfg.worker is None:
        write_resolved(cfg, out, "score")
    rerun.write_stamp(out, h, complete=False)
    todo = [s for s in mine if not (out / s.name).exists()]
    worker = f" (worker {cfg.shard})" if cfg.worker else ""
    console.print(f"[bold]score[/]{worker} {len(mine)} shards with {cfg.teacher} ({cfg.backend}, top-"
                  f"{cfg.topk_logprobs}; {len(mine) - len(todo)} already done) -> {out}")
    stats: Counter = Counter()
    too_long: list[str] = []
    t0, t_load = time.time(), 0.0
    if todo:
        backend = get_backend(cfg.backend, cfg.teacher, cfg.backend_options, dtype=cfg.dtype, device=cfg.device,
                              batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code)
        try:
            t_load = time.time()
            tokens = Tokens(backend.tokenizer)
            total = sum(parquet_file(s).metadata.num_rows for s in todo)
            with progress() as bar:
                task = bar.add_task("rows", total=total, info="")

                def tick(rows: int, toks: int) -> None:
                    rate = (stats["tokens"] + toks) / max(time.time() - t_load, 1e-9)
                    bar.update(task, advance=rows, info=f"{rate:.0f} tok/s")

                for s in todo:
                    too_long += _score_shard(cfg, backend, tokens, s, out / s.name, backend.context_length, stats,
                                             tick)
        finally:
            close(backend)
    seconds = time.time() - (t_load or t0)
    if too_long:
        console.print(f"[yellow]warning[/]: {len(too_long)} rows left out: prompt + completion exceed "
                      f"{cfg.teacher}'s context: {', '.join(too_long[:10])}{' ...' if len(too_long) > 10 else ''}")
    summary = {"teacher": cfg.teacher, "backend": cfg.backend, "shards": len(mine), "scored_shards": len(todo),
               "rows": stats["rows"], "tokens": stats["tokens"], "retokenized_rows": stats["retokenized"],
               "skipped": {"too_long": len(too_long)} if too_long else {}, "skipped_ids": too_long,
               "seconds": round(seconds, 2), "tokens_per_s": stats["tokens"] / seconds if stats["tokens"] else 0.0,
               "topk_logprobs": cfg.topk_logprobs, "topk_format": cfg.topk_format}
    tag = f"-w{cfg.worker[0]}of{cfg.worker[1]}" if cfg.worker else ""
    if todo or not (out / layout.summary(tag)).exists():
        store.write_text_atomic(out / layout.summary(tag), json.dumps(summary, indent=1))
    if all((out / s.name).exists() for s in shards):
        rerun.finish(out, h)
    console.print(f"score: {stats['rows']} rows, {stats['tokens']} tokens scored in {seconds:.0f}s "
                  f"({summary['tokens_per_s']:.0f} tok/s; {stats['retokenized']} re-tokenized from text, "
                  f"{len(too_long)} too long) -> {out}")
    return out


def _mine(cfg: ScoreConfig, shards: list[Path]) -> list[Path]:
    w = cfg.worker
    return shards if w is None else [s for i, s in enumerate(shards) if i % w[1] == w[0]]
