"""Stage `generate`: problems -> teacher trace shards (batching, resume, workers, progress).

Output dir (default `{run_dir}/traces`): `shard-NNNNN.parquet` (the trace schema), `config.yaml`
(the resolved config and its hash), `manifest.json` (finished shards and their rows) and
`summary.json` (counts, tokens, time, finish reasons, skipped problems, bytes per token). Each shard
holds all samples of whole problems and is renamed into place when complete, so resuming only needs
the (prompt_id, sample_idx) pairs of the finished shards: a killed run loses at most the shard in
flight and never writes a row twice. Every file is written under a temporary name and renamed.

Workers: `shard="i/N"` keeps the problems whose prompt_id hash is i mod N, so N processes (or nodes)
can fill one output dir without coordination. Worker files are `shard-wIofN-NNNNN.parquet`,
`manifest-wIofN.json` and `summary-wIofN.json`, so no two workers write the same file. A worker's
resume skips its siblings' shards (same N: they never hold its problems) but reads every other one,
so a dir begun without `shard` (or with another N) never gets a row twice. `read_table` sees all
shards, and a later run without `shard` finds every worker's problems done. Delete the dir, rather
than pass `overwrite`, to restart a sharded run.

Problems whose prompt plus `max_new_tokens` exceed the teacher's context are skipped, named in a warning and
counted in the summary (`skipped: {"prompt_too_long": n}`, their ids in `skipped_ids`), not an error; so are
the bad rows a source with `skip_bad_rows` left out (`bad_row`, `duplicate_id`, `ungradeable_answer`).

Reruns follow `r1distill.rerun`: the problems are read and checked (and the teacher's name) before the dir is
touched; a dir made with another config is refused, and so is one whose finished problems have since changed
their gold answer (their traces carry the old one). `config.yaml` is a recipe (`r1distill generate
traces/config.yaml`); the config hash and the log-probs kind are in `r1distill_stamp.json`.

`output_dir` may be an fsspec URL (`s3://bucket/traces`, `memory://…`, `file:///…`): every file goes
through `r1distill.data.traces`, which renames into place where the filesystem can and writes to
the final name on object stores (see its module doc). `topk_format: q8` stores 8-bit top-k
log-probs (also there); the reader gives float log-probs either way.

The kind of the stored log-probs (`logprobs_kind`: "raw" temperature-1 log-probs, "processed" ones
after temperature/top-p, or "none") comes from the backend. It is kept in config.yaml, in each
shard's metadata and in the summary; a run whose backend gives another kind than the one on disk
refuses to resume, like a changed config.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field

from r1distill import layout, rerun
from r1distill.backends import Completion, SamplingConfig, close, derive_seed, fits_context, get_backend
from r1distill.console import console, progress
from r1distill.data import traces as store
from r1distill.data.problems import load_problems, prompt_id
from r1distill.data.traces import (
    KIND_KEY,
    SPAN_SCHEMA,
    TOKENIZER_KEY,
    UNMAPPED_KEY,
    Location,
    rows_to_table,
    write_table_atomic,
)
from r1distill.generate_config import GenerateConfig
from r1distill.generate_dir import (
    SESSION_KEYS,
    SHARD_NAME,
    check_answers,
    check_kind,
    expected_kind,
    find_shards,
    lock_path,
    prepare_dir,
    scan_shards,
    stamp_record,
    summarize_shards,
    write_manifest,
)
from r1distill.models import check_model
from r1distill.prompts import split_think


def run(cfg: GenerateConfig) -> Location:
    """Generate `num_samples` traces per problem; resume what an earlier run left unfinished."""
    problems = load_problems(cfg.source)  # before touching the output dir: bad input must not cost old output
    if cfg.backend != "openai":  # a server's model names are its own
        check_model(cfg.teacher)
    try:
        return _run(cfg, problems)
    finally:
        if (lock := lock_path(cfg)) is not None:
            rerun.unlock(lock)  # only if this process holds it


def _chunk_seed(cfg: GenerateConfig, index: int) -> int:
    """The sampling seed of shard `index` of an uninterrupted run (a plain run's are seed + index * 1_000_003, the
    streams the measured quickstart results came from; a worker's come from its file name)."""
    if not cfg.tag:
        return cfg.seed + index * 1_000_003
    return int(hashlib.sha256(f"{cfg.seed}/shard{cfg.tag}-{index:05d}.parquet".encode()).hexdigest()[:8], 16)


def _seeds(cfg: GenerateConfig, pids: list[str], per_shard: int) -> dict[str, int]:
    """Each problem's seed: the one it has in an uninterrupted run, where problem i (of those that fit the context)
    is prompt i % per_shard of shard i // per_shard. A resumed run cuts its shards differently (after Ctrl-C, a kill
    or a lost shard) but draws the same samples."""
    return {pid: derive_seed(_chunk_seed(cfg, i // per_shard), i % per_shard) for i, pid in enumerate(pids)}


@dataclass
class _Scan:
    """What the output dir already holds and what is left to do (`_scan`); `_generate` adds to it as it writes."""

    by_id: dict[str, dict]  # this run's (this worker's) problems by prompt_id
    own: list  # this run's shard files (a worker's own), appended to as shards are written
    manifest: list[dict]  # the manifest's entries: finished shards, their rows and (prompt_id, sample) pairs
    done: set  # (prompt_id, sample_idx) pairs some finished shard holds
    kinds_on_disk: set[str]  # the log-probs kinds of the finished shards
    todo: list[tuple[str, dict]]  # problems missing at least one sample
    stats: Counter = field(default_factory=Counter)  # rows, tokens, finish reasons, ... of this session
    skipped: Counter = field(default_factory=Counter)  # problems left out, by reason
    too_long: list[str] = field(default_factory=list)  # ids of the problems whose prompt does not fit the context


def _run(cfg: GenerateConfig, problems) -> Location:
    prepare_dir(cfg)
    scan = _scan(cfg, problems)
    t0 = time.time()
    gen_seconds = _generate(cfg, scan) if scan.todo else 0.0
    _summarise(cfg, scan, time.time() - t0, gen_seconds)
    return cfg.out


def _scan(cfg: GenerateConfig, problems) -> _Scan:
    """The problems (this worker's), the finished shards' (prompt_id, sample) pairs, and what is left to do."""
    by_id: dict[str, dict] = {}
    for p in problems:  # duplicate problem texts share an id and are generated once
        pid = prompt_id(cfg.source.name, p["problem"])
        if cfg.worker is None or int(pid, 16) % cfg.worker[1] == cfg.worker[0]:
            by_id.setdefault(pid, p)
    relevant, own = find_shards(cfg)
    scanned, kinds_on_disk, answers = scan_shards(relevant)
    check_answers(cfg, by_id, answers)
    done = {(a, b) for e in scanned for a, b in e["pairs"]}
    own_names = {store.name_of(p) for p in own}
    manifest = scanned if cfg.worker is None else [e for e in scanned if e["file"] in own_names]
    write_manifest(cfg, manifest)
    todo = [(pid, p) for pid, p in by_id.items()
            if any((pid, s) not in done for s in range(cfg.num_samples))]
    worker = f" (worker {cfg.shard})" if cfg.worker else ""
    console.print(f"[bold]generate[/]{worker} {len(by_id)} problems x {cfg.num_samples} samples with {cfg.teacher} "
                  f"({len(by_id) - len(todo)} already done) -> {cfg.out}")
    return _Scan(by_id, own, manifest, done, kinds_on_disk, todo, skipped=Counter(problems.skipped))


def _generate(cfg: GenerateConfig, scan: _Scan) -> float:
    """Load the teacher, skip the prompts that do not fit its context, and generate the rest a shard at a time,
    each written whole as it finishes (Ctrl-C keeps the finished problems of the shard in flight). Returns the
    seconds spent generating (the model load left out)."""
    if expected := expected_kind(cfg):  # refuse before loading a model, where the options tell
        check_kind(cfg, expected, scan.kinds_on_disk)
    backend = get_backend(cfg.backend, cfg.teacher, cfg.backend_options, dtype=cfg.dtype, device=cfg.device,
                          batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code)
    try:
        kind = backend.logprobs_kind if cfg.topk_logprobs else "none"
        check_kind(cfg, kind, scan.kinds_on_disk)
        # Prompts that leave no room for max_new_tokens in the context are skipped and counted, not errors.
        fits = fits_context(backend, [cfg.prompt.messages(p["problem"]) for _, p in scan.todo], cfg.max_new_tokens)
        unfit = {pid for (pid, _), ok in zip(scan.todo, fits) if not ok}
        scan.skipped["prompt_too_long"] = fits.count(False)
        scan.too_long = [p["id"] for (_, p), ok in zip(scan.todo, fits) if not ok]
        if scan.too_long:
            console.print(f"[yellow]warning[/]: {len(scan.too_long)} problems skipped: prompt + max_new_tokens "
                          f"({cfg.max_new_tokens}) exceed the teacher's context of {backend.context_length} "
                          f"tokens: {', '.join(scan.too_long[:10])}{' ...' if len(scan.too_long) > 10 else ''}")
        todo = scan.todo = [t for t, ok in zip(scan.todo, fits) if ok]
        sampling = SamplingConfig(n=cfg.num_samples, max_new_tokens=cfg.max_new_tokens,
                                  temperature=cfg.temperature, top_p=cfg.top_p, logprobs=cfg.topk_logprobs)
        per_shard = max(1, cfg.shard_size // cfg.num_samples)
        seeds = _seeds(cfg, [pid for pid in scan.by_id if pid not in unfit], per_shard)
        # Never reuse a shard number: a gap left by a lost shard must not lead to overwriting a later one.
        next_index = 1 + max((int(SHARD_NAME.fullmatch(store.name_of(p))[3]) for p in scan.own), default=-1)

        def write(chunk: list[tuple[str, dict]], outs: list[list[Completion]]) -> str:
            nonlocal next_index
            name = f"shard{cfg.tag}-{next_index:05d}.parquet"
            # Never a row twice, even of a problem some of whose samples a shard from elsewhere holds.
            rows = [r for r in _rows(cfg, chunk, outs, scan.stats)
                    if (r["prompt_id"], r["sample_idx"]) not in scan.done]
            unmapped = sum(c.unmapped_tokens for cs in outs for c in cs)
            scan.stats["unmapped_tokens"] += unmapped
            meta = {KIND_KEY: kind, UNMAPPED_KEY: unmapped,
                    **({TOKENIZER_KEY: fp} if (fp := backend.tokenizer_fingerprint) else {})}
            shard = write_table_atomic(rows_to_table(rows, SPAN_SCHEMA, topk_format=cfg.topk_format),
                                       store.join(cfg.out, name), metadata=meta)
            scan.own.append(shard)
            scan.manifest.append({"file": name, "rows": len(rows),
                                  "pairs": [[r["prompt_id"], r["sample_idx"]] for r in rows]})
            write_manifest(cfg, scan.manifest)
            next_index += 1
            return name

        gen_start = time.time()
        with progress() as bar:
            note = f", {scan.skipped['prompt_too_long']} skipped (too long)" if scan.skipped["prompt_too_long"] else ""
            task = bar.add_task("problems", total=len(todo), info=note)
            tokens = 0

            def tick(seqs: int, toks: int) -> None:
                nonlocal tokens
                tokens += toks
                rate = tokens / max(time.time() - gen_start, 1e-9)
                bar.update(task, advance=seqs / cfg.num_samples, info=f"{rate:.0f} tok/s{note}")

            finished: dict[int, list[Completion | None]] = {}  # the shard in flight's, as samples finish

            def keep(p: int, s: int, c: Completion) -> None:
                finished.setdefault(p, [None] * cfg.num_samples)[s] = c

            for start in range(0, len(todo), per_shard):
                chunk = todo[start:start + per_shard]
                sampling.seeds = [seeds[pid] for pid, _ in chunk]
                finished.clear()
                try:
                    outs = backend.generate([cfg.prompt.messages(p["problem"]) for _, p in chunk],
                                            sampling, progress=tick, on_result=keep)
                except KeyboardInterrupt:  # keep the problems of the shard in flight that are finished
                    whole = [p for p in sorted(finished) if all(c is not None for c in finished[p])]
                    if whole:
                        name = write([chunk[p] for p in whole], [finished[p] for p in whole])
                        console.print(f"generate: interrupted; the {len(whole)} problems finished of the shard "
                                      f"in flight are kept in {name}")
                    raise
                write(chunk, outs)
        return time.time() - gen_start
    finally:
        close(backend)  # the engine's memory is free before the next stage


def _summarise(cfg: GenerateConfig, scan: _Scan, elapsed: float, gen_seconds: float) -> None:
    """summary.json (a no-op rerun keeps the figures of the session that generated) and the closing line."""
    out, stats = cfg.out, scan.stats
    summary = summarize_shards([store.join(out, e["file"]) for e in scan.manifest], stats, scan.skipped, elapsed,
                         gen_seconds)
    summary["skipped_ids"] = {"prompt_too_long": scan.too_long} if scan.too_long else {}
    summary["logprobs_kind"] = (stamp_record(out).get("logprobs_kind") or "/".join(sorted(scan.kinds_on_disk))
                                or None)
    summary["topk_format"] = cfg.topk_format
    summary_path = store.join(out, layout.summary(cfg.tag))
    if not scan.todo and store.exists(summary_path):
        earlier = json.loads(store.read_text(summary_path))
        summary.update({k: earlier[k] for k in SESSION_KEYS if k in earlier})
    store.write_text_atomic(summary_path, json.dumps(summary, indent=1))
    too_long = summary["skipped"].get("prompt_too_long", 0)
    unmapped = f"; {summary['unmapped_tokens']} tokens with unmapped top-k" if summary["unmapped_tokens"] else ""
    session = (f"{stats['tokens']} new tokens in {elapsed:.0f}s ({summary['new_tokens_per_s']:.0f} tok/s generating)"
               if scan.todo else "nothing left to generate")
    console.print(f"generate: {summary['rows']} rows for {summary['problems']} problems ({too_long} skipped: "
                  f"prompt too long), {session}; finish: {summary['finish_reasons']}; "
                  f"{summary['bytes_per_token']:.0f} B/token on disk ({summary['topk_bytes_per_token']:.0f} top-k, "
                  f"{cfg.topk_format}, {summary['logprobs_kind']} log-probs){unmapped}")


def _rows(cfg: GenerateConfig, chunk, outs, stats: Counter) -> list[dict]:
    rows = []
    for (pid, p), completions in zip(chunk, outs):
        teacher_prompt, messages = cfg.prompt.messages(p["problem"]), cfg.prompt.student_messages(p["problem"])
        for s, c in enumerate(completions):
            reasoning, _ = split_think(c.text)
            stats["tokens"] += len(c.token_ids)
            rows.append({
                "prompt_id": pid, "sample_idx": s, "problem": p["problem"], "answer": p["answer"],
                "prompt": messages, "teacher_prompt": teacher_prompt, "completion": c.text, "reasoning": reasoning,
                "completion_ids": c.token_ids, "topk_ids": c.topk_ids, "topk_logprobs": c.topk_logprobs,
                "finish_reason": c.finish_reason, "num_tokens": len(c.token_ids), "teacher": cfg.teacher,
                "gen_config_hash": cfg.hash(), "token_nbytes": c.token_nbytes, "token_logprobs": c.token_logprobs,
                "token_bytes_ok": c.token_bytes_ok,
            })
    return rows
