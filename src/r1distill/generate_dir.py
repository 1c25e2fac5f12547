"""The state of the generate stage's output dir: its lock (one run, or one worker of N, writes a problem), its
preparation for a run (the rerun claim, stale temporary files, config.yaml and the stamp with the log-probs kind),
what the finished shards hold (their (prompt_id, sample_idx) pairs, log-probs kinds and gold answers), the
manifest, and the summary's counts over the shards.

Separate from r1distill.generate, which loads the teacher and writes the shards: all here reads or writes the dir
alone, never a model, so that a resume's checks can be read (and tested) apart from generation.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

from r1distill import layout, rerun
from r1distill.backends import check_options
from r1distill.config import UserError, resolved_yaml, to_dict
from r1distill.data import traces as store
from r1distill.data.traces import KIND_KEY, UNMAPPED_KEY, Location, read_shard, shard_paths
from r1distill.generate_config import UNHASHED, GenerateConfig

SHARD_NAME = re.compile(r"shard-(?:w(\d+)of(\d+)-)?(\d+)\.parquet")
LOCK_NAME = re.compile(r"\.generate(?:-w(\d+)of(\d+))?\.lock")

RESTART = "Use another output_dir, or pass generate.overwrite=true to start again."


def stamp_record(out: Location) -> dict:
    """What the traces in `out` were made with: its stamp (the config hash, the log-probs kind), or {}."""
    return rerun.read_stamp(out) or {}


def lock_path(cfg: GenerateConfig) -> Path | None:
    """This run's lock file, `.generate[-wIofN].lock` in a local output dir (object stores have no exclusive
    create: none there)."""
    return None if store.is_url(cfg.out) else Path(cfg.out) / f".generate{cfg.tag}.lock"


def lock(cfg: GenerateConfig) -> None:
    """Hold this run's lock, and refuse while a run that may write the same problems holds one: any other run,
    except the other workers of the same N (they never hold this worker's problems)."""
    if (path := lock_path(cfg)) is None:
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


def prepare_dir(cfg: GenerateConfig) -> None:
    out = cfg.out
    lock(cfg)  # before anything in the dir is read or removed
    old = {} if cfg.overwrite else stamp_record(out)
    rerun.claim(out, cfg.hash(), "generate", overwrite=cfg.overwrite, refuse=RESTART, old=old, config=to_dict(cfg),
                ignore=UNHASHED)
    if cfg.overwrite:  # the dir, and the lock in it, are gone
        lock(cfg)
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


def check_kind(cfg: GenerateConfig, kind: str, on_disk: set[str]) -> None:
    """Refuse to add `kind` log-probs to a dir holding another kind; record it in the stamp if new."""
    old = stamp_record(cfg.out)
    known = on_disk | ({old["logprobs_kind"]} if old.get("logprobs_kind") else set())
    if known - {kind}:
        raise UserError(
            f"{cfg.out} holds traces with {'/'.join(sorted(known))} top-k log-probs, but the {cfg.backend} backend "
            f"(with these backend_options) gives {kind} ones. Use another output_dir, or pass "
            "generate.overwrite=true to start again."
        )
    if old.get("logprobs_kind") != kind:
        rerun.write_stamp(cfg.out, cfg.hash(), complete=False, logprobs_kind=kind)


def expected_kind(cfg: GenerateConfig) -> str | None:
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


def find_shards(cfg: GenerateConfig) -> tuple[list[Location], list[Location]]:
    """(the shards that may hold this run's problems, this run's own shards)."""
    me = cfg.worker
    relevant = [p for p in shard_paths(cfg.out)
                if me is None or (w := _worker_of(p)) is None or w == me or w[1] != me[1]]
    own = [p for p in relevant if SHARD_NAME.fullmatch(store.name_of(p)) and _worker_of(p) == me]
    return relevant, own


def scan_shards(paths: list[Location]) -> tuple[list[dict], set[str], dict[str, str]]:
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


def check_answers(cfg: GenerateConfig, by_id: dict[str, dict], answers: dict[str, str]) -> None:
    """Refuse to resume when a problem that has traces now has another gold answer: they would keep the old one."""
    changed = [(p["id"], answers[pid], p["answer"]) for pid, p in by_id.items()
               if pid in answers and answers[pid] != p["answer"]]
    if changed:
        shown = "; ".join(f"{i}: {a!r} -> {b!r}" for i, a, b in changed[:5]) + ("; ..." if len(changed) > 5 else "")
        raise UserError(f"{cfg.out} holds traces of {len(changed)} problems whose gold answer has changed since "
                        f"they were generated ({shown}). {RESTART}")


def write_manifest(cfg: GenerateConfig, entries: list[dict]) -> None:
    store.write_text_atomic(store.join(cfg.out, layout.manifest(cfg.tag)), json.dumps({"shards": entries}))


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


def summarize_shards(paths: list[Location], stats: Counter, skipped: Counter, elapsed: float,
                     gen_seconds: float) -> dict:
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
