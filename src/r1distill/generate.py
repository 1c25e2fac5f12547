"""Stage `generate`: problems -> teacher trace shards (batching, resume, progress).

Output dir (default `{run_dir}/traces`): `shard-NNNNN.parquet` (the trace schema), `config.yaml`
(the resolved config and its hash), `manifest.json` (finished shards and their rows) and
`summary.json` (counts, tokens, time). Each shard holds all samples of whole problems and is
renamed into place when complete, so resuming only needs the (prompt_id, sample_idx) pairs of
the finished shards: a killed run loses at most the shard in flight and never writes a row twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from r1distill.backends import SamplingConfig, get_backend
from r1distill.config import LAYOUT, ConfigError, UserError, config_hash, to_dict
from r1distill.console import console, progress
from r1distill.data.problems import SourceConfig, load_problems
from r1distill.data.traces import read_table, rows_to_table, shard_paths, write_table_atomic
from r1distill.prompts import r1_messages, split_think


@dataclass
class GenerateConfig:
    run_dir: str = "runs/default"
    teacher: str = "smollm2-135m-instruct"  # built-in name, hub id or local model dir
    source: SourceConfig = field(default_factory=SourceConfig)  # the problems
    output_dir: str | None = None  # default: {run_dir}/traces
    backend: str = "hf"
    num_samples: int = 4  # completions per problem
    max_new_tokens: int = 256
    temperature: float = 0.6  # 0 = greedy
    top_p: float = 0.95
    topk_logprobs: int = 20  # top-k log-probs stored per token for offline KD (0 = none)
    system_prompt: str | None = None  # R1's protocol uses none
    batch_size: int = 32  # sequences per forward batch
    shard_size: int = 256  # rows per Parquet shard
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    seed: int = 0
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("num_samples", "max_new_tokens", "batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"generate.{name} must be >= 1, got {getattr(self, name)}")
        if self.topk_logprobs < 0:
            raise ConfigError("generate.topk_logprobs must be >= 0 (0 stores no log-probs)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"generate.top_p must be in (0, 1], got {self.top_p}")

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path(self.run_dir) / LAYOUT["traces"])

    def hash(self) -> str:
        # Settings that do not change what is generated are left out, so they may change on resume.
        return config_hash(self, exclude=("overwrite", "output_dir", "run_dir", "batch_size", "shard_size",
                                          "device"))


def prompt_id(source: str, problem: str) -> str:
    """A stable id for a problem: a hash of its source name and text."""
    return hashlib.sha256(f"{source}\n{problem}".encode()).hexdigest()[:16]


def _prepare_dir(cfg: GenerateConfig) -> None:
    out = cfg.out
    if cfg.overwrite and out.exists():
        shutil.rmtree(out)
    cfg_path = out / "config.yaml"
    if cfg_path.exists():
        old = (yaml.safe_load(cfg_path.read_text()) or {}).get("hash")
        if old != cfg.hash():
            raise UserError(
                f"{out} holds traces generated with a different config (hash {old} != {cfg.hash()}). "
                "Use another output_dir, or pass generate.overwrite=true to start again."
            )
    out.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump({"hash": cfg.hash(), **to_dict(cfg)}, sort_keys=False))


def _scan_shards(out: Path) -> list[dict]:
    """Manifest entries of the finished shards: file name and the (prompt_id, sample_idx) pairs it holds.

    Read from the shards themselves, so a kill between a shard's rename and the manifest's rewrite
    loses nothing."""
    entries = []
    for p in shard_paths(out):
        t = pq.read_table(p, columns=["prompt_id", "sample_idx"])
        pairs = [[a, b] for a, b in zip(t.column("prompt_id").to_pylist(), t.column("sample_idx").to_pylist())]
        entries.append({"file": p.name, "rows": len(pairs), "pairs": pairs})
    return entries


def _write_manifest(out: Path, entries: list[dict]) -> None:
    tmp = out / ".manifest.json.tmp"
    tmp.write_text(json.dumps({"shards": entries}))
    os.replace(tmp, out / "manifest.json")


def run(cfg: GenerateConfig) -> Path:
    """Generate `num_samples` traces per problem; resume what an earlier run left unfinished."""
    _prepare_dir(cfg)
    out = cfg.out
    problems = load_problems(cfg.source)
    by_id: dict[str, dict] = {}
    for p in problems:  # duplicate problem texts share an id and are generated once
        by_id.setdefault(prompt_id(cfg.source.name, p["problem"]), p)
    manifest = _scan_shards(out)
    _write_manifest(out, manifest)
    done = {(a, b) for e in manifest for a, b in e["pairs"]}
    todo = [(pid, p) for pid, p in by_id.items()
            if any((pid, s) not in done for s in range(cfg.num_samples))]
    console.print(f"[bold]generate[/] {len(by_id)} problems x {cfg.num_samples} samples with {cfg.teacher} "
                  f"({len(by_id) - len(todo)} already done) -> {out}")
    stats = Counter()
    t0 = time.time()
    if todo:
        backend = get_backend(cfg.backend, cfg.teacher, dtype=cfg.dtype, device=cfg.device,
                              batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code)
        sampling = SamplingConfig(n=cfg.num_samples, max_new_tokens=cfg.max_new_tokens,
                                  temperature=cfg.temperature, top_p=cfg.top_p, logprobs=cfg.topk_logprobs)
        per_shard = max(1, cfg.shard_size // cfg.num_samples)
        # Never reuse a shard number: a gap left by a lost shard must not lead to overwriting a later one.
        next_index = 1 + max((int(p.stem.rsplit("-", 1)[1]) for p in shard_paths(out)), default=-1)
        with progress() as bar:
            task = bar.add_task("generate", total=len(todo) * cfg.num_samples, info="")
            tokens = 0

            def tick(seqs: int, toks: int) -> None:
                nonlocal tokens
                tokens += toks
                bar.update(task, advance=seqs, info=f"{tokens / max(time.time() - t0, 1e-9):.0f} tok/s")

            for start in range(0, len(todo), per_shard):
                chunk = todo[start:start + per_shard]
                sampling.seed = cfg.seed + next_index * 1_000_003  # a different stream per shard
                outs = backend.generate([r1_messages(p["problem"], cfg.system_prompt) for _, p in chunk],
                                        sampling, progress=tick)
                rows = _rows(cfg, chunk, outs, stats)
                shard = write_table_atomic(rows_to_table(rows), out / f"shard-{next_index:05d}.parquet")
                manifest.append({"file": shard.name, "rows": len(rows),
                                 "pairs": [[r["prompt_id"], r["sample_idx"]] for r in rows]})
                _write_manifest(out, manifest)
                next_index += 1
    elapsed = time.time() - t0
    summary = _summarize(out, stats, elapsed)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    console.print(f"generate: {summary['rows']} rows, {summary['new_tokens']} new tokens in "
                  f"{elapsed:.0f}s ({summary['new_tokens_per_s']:.0f} tok/s); finish: {summary['finish_reasons']}")
    return out


def _rows(cfg: GenerateConfig, chunk, outs, stats: Counter) -> list[dict]:
    rows = []
    for (pid, p), completions in zip(chunk, outs):
        messages = r1_messages(p["problem"], cfg.system_prompt)
        for s, c in enumerate(completions):
            reasoning, _ = split_think(c.text)
            stats["tokens"] += len(c.token_ids)
            stats[f"finish_{c.finish_reason}"] += 1
            rows.append({
                "prompt_id": pid, "sample_idx": s, "problem": p["problem"], "answer": p["answer"],
                "prompt": messages, "completion": c.text, "reasoning": reasoning,
                "completion_ids": c.token_ids, "topk_ids": c.topk_ids, "topk_logprobs": c.topk_logprobs,
                "finish_reason": c.finish_reason, "num_tokens": len(c.token_ids), "teacher": cfg.teacher,
                "gen_config_hash": cfg.hash(),
            })
    return rows


def _summarize(out: Path, stats: Counter, elapsed: float) -> dict:
    t = read_table(out, columns=["finish_reason", "num_tokens", "prompt_id"])
    finish = Counter(t.column("finish_reason").to_pylist())
    return {
        "rows": t.num_rows,
        "problems": len(set(t.column("prompt_id").to_pylist())),
        "total_tokens": int(sum(t.column("num_tokens").to_pylist())),
        "finish_reasons": dict(finish),
        "new_tokens": stats["tokens"],
        "seconds": round(elapsed, 2),
        "new_tokens_per_s": stats["tokens"] / elapsed if elapsed > 0 and stats["tokens"] else 0.0,
    }
