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

import dataclasses
import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from r1distill import layout, rerun
from r1distill.backends import (
    BACKENDS,
    Completion,
    SamplingConfig,
    check_options,
    close,
    derive_seed,
    fits_context,
    get_backend,
)
from r1distill.config import LAYOUT, ConfigError, UserError, config_hash, parse_worker, resolved_yaml, to_dict
from r1distill.console import console, progress
from r1distill.data import traces as store
from r1distill.data.problems import SourceConfig, load_problems, prompt_id
from r1distill.data.traces import (
    KIND_KEY,
    SPAN_SCHEMA,
    TOKENIZER_KEY,
    TOPK_FORMATS,
    UNMAPPED_KEY,
    Location,
    read_shard,
    rows_to_table,
    shard_paths,
    write_table_atomic,
)
from r1distill.models import DTYPES, check_model
from r1distill.prompts import PromptConfig, split_think

SHARD_NAME = re.compile(r"shard-(?:w(\d+)of(\d+)-)?(\d+)\.parquet")
LOCK_NAME = re.compile(r"\.generate(?:-w(\d+)of(\d+))?\.lock")
# Settings that do not change what is generated: left out of the hash, so they may change on resume (and workers,
# which differ only in `shard`, share one output dir). shard_size is not one of them: it sets which problems share
# a shard, and so each problem's sampling seed (`_seeds`).
UNHASHED = ("overwrite", "output_dir", "run_dir", "batch_size", "shard", "device", "backend_options")
DEFAULT_SHARD_SIZE = 256


@dataclass
class GenerateConfig:
    run_dir: str = "runs/default"  # the run's directory: each stage's default input and output dirs are under it
    teacher: str = "smollm2-135m-instruct"  # built-in name, hub id or local model dir
    source: SourceConfig = field(default_factory=SourceConfig)  # the problems
    output_dir: str | None = None  # default: {run_dir}/traces
    backend: str = "hf"  # hf | vllm | openai
    backend_options: dict = field(default_factory=dict)  # settings of the chosen backend (see its module)
    num_samples: int = 4  # completions per problem
    max_new_tokens: int = 256  # the most tokens a completion may take; longer ones are cut (finish_reason length)
    temperature: float = 0.6  # 0 = greedy
    top_p: float = 0.95  # nucleus sampling: the smallest set of tokens holding this much probability (1: off)
    topk_logprobs: int = 20  # top-k log-probs stored per token for offline KD (0 = none)
    topk_format: str = "exact"  # exact (float16 log-probs) | q8 (8-bit: 0.65x the top-k bytes; see data/traces.py)
    # The teacher's prompt: system line, instruction (R1's by default), few-shot examples. The trace keeps what the
    # teacher saw (`teacher_prompt`) and what the student trains on (`prompt`: the same chat without the examples).
    prompt: PromptConfig = field(default_factory=PromptConfig)
    batch_size: int = 32  # sequences per forward batch
    shard_size: int = DEFAULT_SHARD_SIZE  # rows per Parquet shard (it sets the problems' seeds: in the hash)
    shard: str | None = None  # "i/N": this worker's part of the problems (prompt_id hash mod N == i)
    # auto (bf16 on a GPU that has it or a CPU with native bf16, else fp32) | float32 | bfloat16 | float16
    dtype: str = "auto"
    device: str = "auto"  # auto (CUDA if present, else CPU) | cpu | cuda | cuda:N
    trust_remote_code: bool = False  # run a model's own Python from the hub: off unless you trust that code
    seed: int = 0  # the sampling seed (each problem's stream derives from it and its position)
    # delete this stage's earlier outputs (after the input is checked) instead of resuming or moving aside
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("num_samples", "max_new_tokens", "batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"generate.{name} must be >= 1, got {getattr(self, name)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"generate.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.topk_logprobs < 0:
            raise ConfigError("generate.topk_logprobs must be >= 0 (0 stores no log-probs)")
        if self.topk_format not in TOPK_FORMATS:
            raise ConfigError(f"generate.topk_format must be one of {', '.join(TOPK_FORMATS)}, "
                              f"got {self.topk_format!r}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"generate.top_p must be in (0, 1], got {self.top_p}")
        # Every backend's options are checked here, before run() creates the output dir or its config.yaml.
        options = check_options(self.backend, self.backend_options)
        if self.backend == "vllm":  # vLLM refuses every request above max_logprobs: say so before it starts
            options.check_topk(self.topk_logprobs, "generate.topk_logprobs")
        if self.dtype not in DTYPES:
            raise ConfigError(f"generate.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.worker and self.overwrite:
            raise ConfigError("generate.overwrite would delete the other workers' shards too: delete the output "
                              "dir once before starting the workers instead")

    @property
    def worker(self) -> tuple[int, int] | None:
        """(i, N) parsed from `shard`, or None when this run covers every problem."""
        return parse_worker(self.shard, "generate.shard")

    @property
    def tag(self) -> str:
        """The worker's part of its file names ("" without `shard`)."""
        return f"-w{self.worker[0]}of{self.worker[1]}" if self.worker else ""

    @property
    def out(self) -> Location:
        """The output dir: a Path, or the URL string when output_dir is an fsspec URL."""
        return store.as_location(self.output_dir or Path(self.run_dir) / LAYOUT["traces"])

    def hash(self) -> str:
        """The traces' stamp: every setting but the UNHASHED ones, which do not change what is generated."""
        return config_hash(self, exclude=UNHASHED)


RESTART = "Use another output_dir, or pass generate.overwrite=true to start again."


def _stamp_record(out: Location) -> dict:
    """What the traces in `out` were made with: its stamp (the config hash, the log-probs kind), or {}."""
    return rerun.read_stamp(out) or {}


def _lock_path(cfg: GenerateConfig) -> Path | None:
    """This run's lock file, `.generate[-wIofN].lock` in a local output dir (object stores have no exclusive
    create: none there)."""
    return None if store.is_url(cfg.out) else Path(cfg.out) / f".generate{cfg.tag}.lock"


def _lock(cfg: GenerateConfig) -> None:
    """Hold this run's lock, and refuse while a run that may write the same problems holds one: any other run,
    except the other workers of the same N (they never hold this worker's problems)."""
    if (path := _lock_path(cfg)) is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    what = f"{cfg.out} (generate{f' --shard {cfg.shard}' if cfg.worker else ''})"
    rerun.lock(path, what)
    for other in path.parent.iterdir():
        m = LOCK_NAME.fullmatch(other.name)
        if m and other != path and (cfg.worker is None or m[2] is None or int(m[2]) != cfg.worker[1]):
            holder = rerun.lock_holder(other)
            if holder is not None and holder.get("live", True):
                rerun.unlock(path)
                raise UserError(f"{cfg.out} is in use by another generate (pid {holder.get('pid')} on "
                                f"{holder.get('host')}; lock file {other}), which may write the same problems: wait "
                                "for it to finish")


def _prepare_dir(cfg: GenerateConfig) -> None:
    out = cfg.out
    _lock(cfg)  # before anything in the dir is read or removed
    old = {} if cfg.overwrite else _stamp_record(out)
    rerun.claim(out, cfg.hash(), "generate", overwrite=cfg.overwrite, refuse=RESTART, old=old, config=to_dict(cfg),
                ignore=UNHASHED)
    if cfg.overwrite:  # the dir, and the lock in it, are gone
        _lock(cfg)
    store.makedirs(out)
    # Temporary files a killed run left behind; a worker removes only its own, as the others may be writing.
    tag = re.escape(cfg.tag)
    stale = re.compile(rf"\.(shard{tag}-\d+\.parquet(\.\d+)?|(manifest|summary){tag}\.json\.\d+)\.tmp"
                       if cfg.worker else r"\..*\.tmp")
    for name in store.list_names(out):
        if stale.fullmatch(name):
            store.remove(store.join(out, name))
    # `shard: null`: workers differ only in it and share one config file
    store.write_text_atomic(store.join(out, layout.CONFIG),
                            resolved_yaml(dataclasses.replace(cfg, shard=None), "generate"))
    kind = {"logprobs_kind": old["logprobs_kind"]} if old.get("logprobs_kind") else {}
    rerun.write_stamp(out, cfg.hash(), complete=False, **kind)


def _check_kind(cfg: GenerateConfig, kind: str, on_disk: set[str]) -> None:
    """Refuse to add `kind` log-probs to a dir holding another kind; record it in the stamp if new."""
    old = _stamp_record(cfg.out)
    known = on_disk | ({old["logprobs_kind"]} if old.get("logprobs_kind") else set())
    if known - {kind}:
        raise UserError(
            f"{cfg.out} holds traces with {'/'.join(sorted(known))} top-k log-probs, but the {cfg.backend} backend "
            f"(with these backend_options) gives {kind} ones. Use another output_dir, or pass "
            "generate.overwrite=true to start again."
        )
    if old.get("logprobs_kind") != kind:
        rerun.write_stamp(cfg.out, cfg.hash(), complete=False, logprobs_kind=kind)


def _expected_kind(cfg: GenerateConfig) -> str | None:
    """The log-probs kind the backend will give, when its options tell without loading it (else None)."""
    if not cfg.topk_logprobs:
        return "none"
    if cfg.backend == "hf":
        return "raw"  # HFBackend.logprobs_kind (importing it here would load torch before the config is checked)
    kind = getattr(check_options(cfg.backend, cfg.backend_options), "logprobs_kind", None)
    return None if kind == "auto" else kind  # auto: the backend asks its server once loaded


def _worker_of(path: Location) -> tuple[int, int] | None:
    m = SHARD_NAME.fullmatch(store.name_of(path))
    return (int(m[1]), int(m[2])) if m and m[1] else None


def _shards(cfg: GenerateConfig) -> tuple[list[Location], list[Location]]:
    """(the shards that may hold this run's problems, this run's own shards)."""
    me = cfg.worker
    relevant = [p for p in shard_paths(cfg.out)
                if me is None or (w := _worker_of(p)) is None or w == me or w[1] != me[1]]
    own = [p for p in relevant if SHARD_NAME.fullmatch(store.name_of(p)) and _worker_of(p) == me]
    return relevant, own


def _scan_shards(paths: list[Location]) -> tuple[list[dict], set[str], dict[str, str]]:
    """(manifest entries of finished shards: file name and the (prompt_id, sample_idx) pairs it holds;
    the log-probs kinds their metadata records; the gold answer each finished prompt_id was generated with).

    Read from the shards themselves, so a kill between a shard's rename and the manifest's rewrite
    loses nothing."""
    entries, kinds, answers = [], set(), {}
    for p in paths:
        t = read_shard(p, columns=["prompt_id", "sample_idx", "answer"])
        ids = t.column("prompt_id").to_pylist()
        pairs = [[a, b] for a, b in zip(ids, t.column("sample_idx").to_pylist())]
        answers.update(zip(ids, t.column("answer").to_pylist()))
        entries.append({"file": store.name_of(p), "rows": len(pairs), "pairs": pairs})
        kind = (t.schema.metadata or {}).get(KIND_KEY.encode())
        if kind:
            kinds.add(kind.decode())
    return entries, kinds, answers


def _check_answers(cfg: GenerateConfig, by_id: dict[str, dict], answers: dict[str, str]) -> None:
    """Refuse to resume when a problem that has traces now has another gold answer: they would keep the old one."""
    changed = [(p["id"], answers[pid], p["answer"]) for pid, p in by_id.items()
               if pid in answers and answers[pid] != p["answer"]]
    if changed:
        shown = "; ".join(f"{i}: {a!r} -> {b!r}" for i, a, b in changed[:5]) + ("; ..." if len(changed) > 5 else "")
        raise UserError(f"{cfg.out} holds traces of {len(changed)} problems whose gold answer has changed since "
                        f"they were generated ({shown}). {RESTART}")


def _write_manifest(cfg: GenerateConfig, entries: list[dict]) -> None:
    store.write_text_atomic(store.join(cfg.out, layout.manifest(cfg.tag)), json.dumps({"shards": entries}))


def run(cfg: GenerateConfig) -> Location:
    """Generate `num_samples` traces per problem; resume what an earlier run left unfinished."""
    problems = load_problems(cfg.source)  # before touching the output dir: bad input must not cost old output
    if cfg.backend != "openai":  # a server's model names are its own
        check_model(cfg.teacher)
    try:
        return _run(cfg, problems)
    finally:
        if (lock := _lock_path(cfg)) is not None:
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
    _prepare_dir(cfg)
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
    relevant, own = _shards(cfg)
    scanned, kinds_on_disk, answers = _scan_shards(relevant)
    _check_answers(cfg, by_id, answers)
    done = {(a, b) for e in scanned for a, b in e["pairs"]}
    own_names = {store.name_of(p) for p in own}
    manifest = scanned if cfg.worker is None else [e for e in scanned if e["file"] in own_names]
    _write_manifest(cfg, manifest)
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
    if expected := _expected_kind(cfg):  # refuse before loading a model, where the options tell
        _check_kind(cfg, expected, scan.kinds_on_disk)
    backend = get_backend(cfg.backend, cfg.teacher, cfg.backend_options, dtype=cfg.dtype, device=cfg.device,
                          batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code)
    try:
        kind = backend.logprobs_kind if cfg.topk_logprobs else "none"
        _check_kind(cfg, kind, scan.kinds_on_disk)
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
            _write_manifest(cfg, scan.manifest)
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
    summary = _summarize([store.join(out, e["file"]) for e in scan.manifest], stats, scan.skipped, elapsed,
                         gen_seconds)
    summary["skipped_ids"] = {"prompt_too_long": scan.too_long} if scan.too_long else {}
    summary["logprobs_kind"] = (_stamp_record(out).get("logprobs_kind") or "/".join(sorted(scan.kinds_on_disk))
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


def disk_usage(paths: list[Location]) -> tuple[int, int, int]:
    """(file bytes, compressed bytes of the top-k columns, unmapped top-k tokens) of some shards, read from
    the Parquet footers."""
    total = topk = unmapped = 0
    for p in paths:
        total += store.file_size(p)
        pf = store.parquet_file(p)
        meta = pf.metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            topk += sum(group.column(c).total_compressed_size for c in range(group.num_columns)
                        if group.column(c).path_in_schema.startswith("topk_"))
        unmapped += int((pf.schema_arrow.metadata or {}).get(UNMAPPED_KEY.encode(), 0))
    return total, topk, unmapped


SESSION_KEYS = ("new_tokens", "seconds", "generate_seconds", "new_tokens_per_s")  # the session's, not the dir's


def _summarize(paths: list[Location], stats: Counter, skipped: Counter, elapsed: float, gen_seconds: float) -> dict:
    """Counts over the given shards (all of them, or a worker's own) and this session's speed."""
    cols = ("finish_reason", "num_tokens", "prompt_id")
    tables = [read_shard(p, columns=list(cols)) for p in paths]
    values = {c: [v for t in tables for v in t.column(c).to_pylist()] for c in cols}
    total_tokens = int(sum(values["num_tokens"]))
    file_bytes, topk_bytes, unmapped = disk_usage(paths)
    return {
        "rows": len(values["prompt_id"]),
        "problems": len(set(values["prompt_id"])),
        "skipped": {k: v for k, v in skipped.items() if v},
        "total_tokens": total_tokens,
        "finish_reasons": dict(Counter(values["finish_reason"])),
        "new_tokens": stats["tokens"],
        "seconds": round(elapsed, 2),  # the whole session, model load included
        "generate_seconds": round(gen_seconds, 2),
        "new_tokens_per_s": stats["tokens"] / gen_seconds if gen_seconds > 0 and stats["tokens"] else 0.0,
        "bytes_per_token": file_bytes / total_tokens if total_tokens else 0.0,
        "topk_bytes_per_token": topk_bytes / total_tokens if total_tokens else 0.0,
        "unmapped_tokens": unmapped,  # tokens whose top-k the backend could not map to ids (id -1 rows)
    }
