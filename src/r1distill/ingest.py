"""Stage `import`: a trace set from elsewhere (OpenR1, OpenThoughts, s1K, chat or ShareGPT rows, your own file or a
hub dataset, read by r1distill.data.sources) -> trace shards, the same schema generate writes.

Why: most people distilling a reasoning model start from published traces rather than generating their own; once
imported they are curated, scored (a teacher's top-k added by a forward pass) and trained on like generated ones.
The module is `ingest` because `import` is a keyword.

Output dir (default `{run_dir}/traces`): `shard-NNNNN.parquet` (SPAN_SCHEMA: top-k and token log-prob columns null,
`KIND_KEY: none`, the tokenizer's fingerprint in each shard's metadata), `config.yaml`, `summary.json` and the rerun
stamp. `completion_ids` are the `teacher` tokenizer's tokens of the completion, plus its eos when the completion
finished ("stop"; nothing on "length"), which is how generate stores a finished completion; name the teacher that
will score the traces (scoring then reuses the ids) or the student.

Rerun rule (r1distill.rerun): the stamp hashes the config and the source's content (a file's bytes; a hub dataset's
id, subset, split and revision) and the tokenizer's fingerprint. The whole source is read once and checked
(`sources.scan`) before the output dir is touched; a second pass writes. Shard i always holds source samples
[i * shard_size, (i + 1) * shard_size), so a killed import resumes at its first missing shard (the finished ones are
skipped, not re-tokenized) and never writes a row twice; a rerun of a finished import does nothing. Memory is flat
in the number of rows but for one dict, prompt_id -> samples so far (`sample_idx` counts samples per prompt_id
across the whole import, as a problem may appear on several rows).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import yaml

from r1distill import layout, rerun, tokenbytes
from r1distill.config import LAYOUT, ConfigError, UserError, config_hash, resolved_yaml, to_dict
from r1distill.console import console, progress
from r1distill.data import sources
from r1distill.data import traces as store
from r1distill.data.problems import prompt_id
from r1distill.data.sources import Sample, TraceSourceConfig
from r1distill.data.traces import KIND_KEY, SPAN_SCHEMA, TOKENIZER_KEY, Location, rows_to_table, write_table_atomic
from r1distill.prompts import PromptConfig, split_think

SHARD_NAME = re.compile(r"shard-(\d+)\.parquet")
TOKENIZE_BATCH = 256  # completions per batch call of the fast tokenizer
UNSTAMPED = ("overwrite", "output_dir", "run_dir")  # settings that change no output


@dataclass
class ImportConfig:
    run_dir: str = "runs/default"  # the run's directory: each stage's default input and output dirs are under it
    source: TraceSourceConfig = field(default_factory=TraceSourceConfig)  # the trace set (path, format, columns)
    sources: list[TraceSourceConfig] = field(default_factory=list)  # or several, imported one after another
    output_dir: str | None = None  # default {run_dir}/traces
    # (score reuses completion_ids in its teacher's tokens; the recipe's shared `teacher` fills this field)
    teacher: str = "smollm2-135m-instruct"  # whose tokens completion_ids are: the scoring teacher's, or the student's
    prompt: PromptConfig = field(default_factory=PromptConfig)  # built from the problem where a row has no prompt turns
    written_by: str | None = None  # the traces' `teacher` column (who wrote them); default: each source's name
    shard_size: int = 2048  # rows per shard (it sets the shard boundaries, so it is part of the stamp)
    # delete this stage's earlier outputs (after the input is checked) instead of resuming or moving aside
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ConfigError(f"import.shard_size must be >= 1, got {self.shard_size}")
        if self.sources and self.source.path:
            raise ConfigError("import: set `source` (one trace set) or `sources` (several), not both")

    @property
    def all_sources(self) -> list[TraceSourceConfig]:
        return self.sources or [self.source]

    @property
    def out(self) -> Location:
        return store.as_location(self.output_dir or Path(self.run_dir) / LAYOUT["traces"])

    def stamp(self, source_fp: str, tokenizer_fp: str) -> str:
        return config_hash(self, source_fp, tokenizer_fp, exclude=UNSTAMPED)


def load(name: str):
    from r1distill.models import load_tokenizer

    try:
        return load_tokenizer(name)
    except OSError as e:
        raise UserError(f"Could not load the tokenizer {name!r}: {' '.join(str(e).split())[:300]}") from None


def run(cfg: ImportConfig) -> Location:
    """Import the source into trace shards; resume an unfinished import; do nothing when it is complete."""
    t0 = time.time()
    srcs = cfg.all_sources
    for src in srcs:
        src.require_path()
    origin = ", ".join(src.origin for src in srcs)
    tok = load(cfg.teacher)
    tok_fp = tokenbytes.fingerprint(tok)
    out, stamp = cfg.out, cfg.stamp(source_fingerprint(cfg), tok_fp)
    if not cfg.overwrite and rerun.is_done(out, stamp):  # same bytes as the checked source: nothing to check again
        console.print(f"import: {out} already holds this import of {origin} (stamp {stamp}); nothing to do "
                      "(import.overwrite=true redoes it)")
        return out
    t_scan = time.time()
    scans = [sources.scan(src) for src in srcs]  # every source, checked before the output dir is touched
    found = sources.Scan(sum(f.samples for f in scans), sum(f.rows for f in scans),
                         sum((f.skipped for f in scans), Counter()))
    scan_seconds = time.time() - t_scan
    writer = _Writer(cfg, tok, tok_fp, stamp)  # (its checks, too, before the dir is touched)
    refuse = "Use another output_dir, or pass import.overwrite=true." if store.is_url(out) else None
    if not cfg.overwrite and _generated(out):  # the default dir is generate's too: never move its traces aside
        raise UserError(f"{out} holds traces generate wrote; import into another dir (import.output_dir=...), or "
                        "pass import.overwrite=true to replace them")
    rerun.claim(out, stamp, "import", overwrite=cfg.overwrite, refuse=refuse, config=to_dict(cfg), ignore=UNSTAMPED)
    store.makedirs(out)
    for name in store.list_names(out):  # temporaries a killed run left
        if name.startswith(".") and name.endswith(".tmp"):
            store.remove(store.join(out, name))
    store.write_text_atomic(store.join(out, layout.CONFIG), resolved_yaml(cfg, "import"))
    rerun.write_stamp(out, stamp, complete=False)

    done = {int(m[1]): p for p in store.shard_paths(out) if (m := SHARD_NAME.fullmatch(store.name_of(p)))}
    per_prompt: dict[int, int] = {}  # prompt_id (as an int) -> samples so far
    finish: Counter = Counter()
    resumed = sum(min(cfg.shard_size, found.samples - i * cfg.shard_size) for i in done)
    formats = "/".join(dict.fromkeys(src.format for src in srcs))
    console.print(f"[bold]import[/] {found.samples} traces ({formats}) from {origin} in {cfg.teacher}'s "
                  f"tokens{f' ({resumed} already written)' if resumed else ''} -> {out}")
    with progress() as bar:
        task = bar.add_task("traces", total=found.samples, info="")
        shard, pending, n = 0, [], -1
        for n, (label, s) in enumerate(_samples(srcs)):
            pid = prompt_id(label, s.problem)
            key = int(pid, 16)
            idx = per_prompt.get(key, 0)
            per_prompt[key] = idx + 1
            finish[s.finish_reason] += 1
            if shard not in done:
                pending.append((s, pid, idx, cfg.written_by or label))
            if (n + 1) % cfg.shard_size == 0:
                _flush(writer, shard, pending, bar, task, cfg.shard_size)
                shard, pending = shard + 1, []
        if n + 1 != found.samples:  # shard boundaries would move: never write a row twice
            raise UserError(f"{origin} changed while it was imported ({found.samples} traces when checked, "
                            f"{n + 1} now); run the import again")
        if found.samples % cfg.shard_size:
            _flush(writer, shard, pending, bar, task, found.samples % cfg.shard_size)
    elapsed = time.time() - t0
    old_tokens = sum(pc.sum(store.read_shard(p, ["num_tokens"]).column(0)).as_py() or 0 for p in done.values())
    summary = {
        "rows": found.samples, "problems": len(per_prompt), "source_rows": found.rows,
        "skipped": dict(found.skipped), "finish_reasons": dict(finish),
        "total_tokens": old_tokens + writer.tokens, "new_rows": writer.rows, "new_tokens": writer.tokens,
        "token_bytes_mismatch": writer.mismatch,  # rows whose tokens' bytes are not the completion's (xtok skips them)
        "shards": shard + (1 if found.samples % cfg.shard_size else 0), "tokenizer": cfg.teacher,
        "seconds": round(elapsed, 2), "scan_seconds": round(scan_seconds, 2),
        "rows_per_s": round(writer.rows / elapsed, 1) if elapsed > 0 else 0.0,
    }
    store.write_text_atomic(store.join(out, layout.SUMMARY), json.dumps(summary, indent=1))
    rerun.finish(out, stamp)
    skipped = f", {sum(found.skipped.values())} bad rows skipped {dict(found.skipped)}" if found.skipped else ""
    console.print(f"import: {summary['rows']} traces of {summary['problems']} problems from {found.rows} source rows"
                  f"{skipped}; {summary['total_tokens']} tokens; finish: {summary['finish_reasons']}; "
                  f"{writer.rows} written in {elapsed:.0f}s ({summary['rows_per_s']:.0f} rows/s) -> {out}")
    return out


def _generated(out: Location) -> bool:
    """Whether `out` holds generate's traces (its config.yaml)."""
    path = store.join(out, layout.CONFIG)
    try:
        data = yaml.safe_load(store.read_text(path)) if store.exists(path) else None
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "generate" in data


def source_fingerprint(cfg: ImportConfig) -> str:
    """The content of every source, in order (`run` skips a finished import by it)."""
    fps = [sources.fingerprint(src) for src in cfg.all_sources]
    return fps[0] if len(fps) == 1 else hashlib.sha256("\n".join(fps).encode()).hexdigest()[:16]


def _samples(srcs: list[TraceSourceConfig]) -> Iterator[tuple[str, Sample]]:
    """The second pass: (source label, sample) for the samples scan counted (bad rows were refused or skipped)."""
    for src in srcs:
        label = src.label
        for item in sources.iter_samples(src):
            if isinstance(item, Sample):
                yield label, item


def _flush(writer: _Writer, shard: int, pending: list, bar, task, size: int) -> None:
    if pending:
        writer.write(shard, pending)
    bar.update(task, advance=size, info=f"shard {shard}")


class _Writer:
    """Tokenizes one shard's samples and writes the shard."""

    def __init__(self, cfg: ImportConfig, tok, tok_fp: str, stamp: str):
        self.cfg, self.tok, self.stamp = cfg, tok, stamp
        self.meta = {KIND_KEY: "none", TOKENIZER_KEY: tok_fp}
        self.table = tokenbytes.token_bytes(tok)  # specials are 0 bytes: the appended eos covers no text
        self.eos = tok.eos_token_id
        if self.eos is None:
            raise UserError(f"The tokenizer of {cfg.teacher!r} has no eos token to end a finished completion with")
        fast = getattr(tok, "backend_tokenizer", None)
        if fast is not None and (fast.truncation or fast.padding):  # the call below would not undo them
            fast = None
        if fast is not None:  # the Rust tokenizer's batch call, without the offsets we do not use (when it can)
            batch = getattr(fast, "encode_batch_fast", fast.encode_batch)
            self.encode = lambda texts: [e.ids for e in batch(texts, add_special_tokens=False)]
        else:
            self.encode = lambda texts: tok(texts, add_special_tokens=False)["input_ids"]
        self.rows = self.tokens = self.mismatch = 0

    def write(self, shard: int, pending: list[tuple[Sample, str, int, str]]) -> None:
        rows = []
        for start in range(0, len(pending), TOKENIZE_BATCH):
            chunk = pending[start:start + TOKENIZE_BATCH]
            for (s, pid, idx, who), ids in zip(chunk, self.encode([s.completion for s, _, _, _ in chunk])):
                if s.finish_reason == "stop":
                    ids.append(self.eos)
                widths, ok = tokenbytes.spans(ids, self.table, s.completion)
                self.tokens += len(ids)
                self.mismatch += not ok
                rows.append({
                    "prompt_id": pid, "sample_idx": idx, "problem": s.problem, "answer": s.answer,
                    "prompt": s.prompt if s.prompt is not None else self.cfg.prompt.student_messages(s.problem),
                    "teacher_prompt": None, "completion": s.completion, "reasoning": split_think(s.completion)[0],
                    "completion_ids": ids, "topk_ids": None, "topk_logprobs": None,
                    "finish_reason": s.finish_reason, "num_tokens": len(ids), "teacher": who,
                    "gen_config_hash": self.stamp, "token_nbytes": widths, "token_logprobs": None,
                    "token_bytes_ok": ok,
                })
        write_table_atomic(rows_to_table(rows, SPAN_SCHEMA), store.join(self.cfg.out, f"shard-{shard:05d}.parquet"),
                           metadata=self.meta)
        self.rows += len(rows)
