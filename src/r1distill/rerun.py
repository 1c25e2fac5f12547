"""The rerun rule, the same for every stage: nothing finished is lost to a rerun, and nothing is mixed.

1. A stage reads and checks its whole input before it touches its outputs, so a bad input (a broken line, a
   misspelt model name) leaves the last results as they were.
2. It then calls `claim(out, stamp)`. The stamp is a hash of the stage's config and of its input's content
   (`config_hash` with the `fingerprint` of the input shards' footers, or of the problems), recorded in the stage
   dir's one stamp file, `out/r1distill_stamp.json` (`layout.STAMP`), which also holds `run`'s record of the stage
   (`record_run`: `run`'s hash of the config and the stages before it, the inputs' fingerprint, wall seconds):
   - no results in `out`: the stage starts;
   - results of the same stamp: the stage resumes them (generate, score, eval), or has nothing to do when they
     are complete (curate, train: "done", unless `overwrite`);
   - results of another stamp (or without one, or of another stamp FORMAT: an earlier r1distill's) are never
     deleted and never mixed
     with new ones, and the one line that says so names the settings that differ from the config.yaml beside
     them (`changes`; "the input" when no setting does). Where they go depends on who may write in `out`:
     * a stage that writes its output dir alone (curate, train, eval per result file, import to a local dir)
       moves them aside to `<out>.old-<stamp>` and starts afresh;
     * a stage whose dir is shared by workers (generate, score: `--shard i/N` runs write into one dir and resume
       it problem by problem or shard by shard), or that is on an object store (no rename of a dir), refuses
       instead (`refuse`): moving the dir would pull it from under the other workers. The user picks another
       output_dir, or `overwrite`.
   - `overwrite`: the old results are deleted, as asked, but still only after step 1.
3. `finish(out, stamp)` marks the results complete, last.
eval applies the same rule per (model, benchmark) result file, each with its own fingerprint (`set_aside`).
Stages that share a dir between processes take a lock first (`lock`: generate), so a second run of the same
stage refuses while the first one works.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

from r1distill import layout
from r1distill.config import UserError
from r1distill.console import console

STAMP = layout.STAMP
# The stamp file's format. Bumped when a stage's outputs or its hashing change in a way this version cannot read:
# then an earlier version's results are "another stamp" (set aside or refused, in one line), never misread.
FORMAT = 2


def read_stamp(out) -> dict | None:
    """The stamp record in `out` (None when there is none, or it is unreadable)."""
    from r1distill.data import traces as store

    try:
        record = json.loads(store.read_text(store.join(out, STAMP)))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def matches(old: dict, stamp: str) -> bool:
    """Whether the stamp record `old` is this version's format and of `stamp`."""
    return old.get("format") == FORMAT and old.get("stamp") == stamp


def _describe(old: dict) -> str:
    if old.get("format") != FORMAT and (old.get("stamp") or old.get("run")):
        return f"stamp format {old.get('format', 1)}, an earlier r1distill's; this one writes format {FORMAT}"
    return f"stamp {old['stamp']}" if old.get("stamp") else "no stamp: an older version's or someone else's"


def claim(out, stamp: str, stage: str, overwrite: bool = False, refuse: str | None = None,
          old: dict | None = None, config: dict | None = None, ignore: tuple[str, ...] = (),
          config_name: str = layout.CONFIG) -> str:
    """Apply the rule to `out` (a path, or an fsspec URL with `refuse`), once the stage's input is checked: "new",
    "resume" (same stamp, not complete) or "done" (same stamp, complete). refuse: the error's advice, to refuse
    other results instead of moving them aside. old: the stamp record, when the stage keeps it elsewhere.
    config: this run's config (`to_dict`), compared with `out/config_name` to name the settings that differ,
    leaving out the top-level keys in `ignore` (those not in the stamp)."""
    from r1distill.data import traces as store

    if overwrite and store.exists(out):
        store.remove(out, recursive=True)
    names = store.list_names(out)
    if not store.is_url(out) and Path(out).is_dir():
        names += [p.name for p in Path(out).iterdir() if p.is_dir()]
    if not [n for n in names if not n.startswith(".")]:  # nothing, or only temporaries a killed run left
        return "new"
    old = old if old is not None else read_stamp(out) or {}
    if matches(old, stamp):
        return "done" if old.get("complete") else "resume"
    what = _describe(old)
    if config is not None:
        what += f"; {changes(out, stage, config, ignore, config_name)}"
    if refuse is not None:
        raise UserError(f"{out} holds {stage} results made with a different config or input ({what}; this run's "
                        f"is {stamp}). {refuse}")
    moved = set_aside(Path(out), old.get("stamp") or "unstamped")
    console.print(f"[yellow]{stage}[/]: {out} held results of another config or input ({what}); moved them to "
                  f"{moved}")
    return "new"


def is_done(out, stamp: str) -> bool:
    """Whether `out` holds complete results of this stamp (read only: every process of a distributed run may ask)."""
    old = read_stamp(out) or {}
    return matches(old, stamp) and bool(old.get("complete"))


def set_aside(path: Path, tag: str) -> Path:
    """Rename a file or dir of old results to `<stem>.old-<tag><suffix>` (a free name), never deleting anything."""
    path = Path(path)
    stem, suffix = (path.name, "") if path.is_dir() else (path.stem, path.suffix)
    for n in range(1000):
        target = path.with_name(f"{stem}.old-{tag}{f'-{n}' if n else ''}{suffix}")
        if not target.exists():
            path.rename(target)
            return target
    raise UserError(f"{path}: 1000 older results are already set aside beside it; delete some")


def write_stamp(out, stamp: str, complete: bool, **extra: object) -> None:
    """Record the stamp of the results in `out` (complete: they are finished). It replaces the whole record, `run`'s
    included: results that change are not the ones `run` recorded."""
    _write(out, {"format": FORMAT, "stamp": stamp, "complete": complete, **extra})


def record_run(out, record: dict) -> None:
    """Add `run`'s record of the stage (its hash, inputs, seconds) to the stamp in `out`, after the stage returned.
    A stage dir without a stage stamp (eval's: it stamps each result file) gets a record with `run`'s alone."""
    _write(out, {**(read_stamp(out) or {"format": FORMAT}), "run": record})


def run_record(out) -> dict:
    """`run`'s record of the stage in `out` ({} when there is none, or it is an earlier format's)."""
    old = read_stamp(out) or {}
    return old.get("run") or {} if old.get("format") == FORMAT else {}


def _write(out, record: dict) -> None:
    from r1distill.data import traces as store

    store.makedirs(out)
    store.write_text_atomic(store.join(out, STAMP), json.dumps(record))


def finish(out, stamp: str) -> None:
    write_stamp(out, stamp, complete=True)


def fingerprint(paths: list) -> str:
    """A cheap content hash of Parquet files: each one's name, size and footer (the schema, row counts, every column
    chunk's size and min/max statistics), so an edited or replaced shard changes it without reading the data."""
    import fsspec

    h = hashlib.sha256()
    for p in paths:
        with fsspec.open(str(p), "rb") as f:
            size = f.seek(0, 2)
            f.seek(size - 8)
            n = int.from_bytes(f.read(4), "little")
            f.seek(max(size - 8 - n, 0))
            h.update(f"{Path(str(p)).name}\n{size}\n".encode() + f.read(n))
    return h.hexdigest()[:16]


def changes(out, stage: str, config: dict, ignore: tuple[str, ...] = (), config_name: str = layout.CONFIG) -> str:
    """What differs between `config` and the one the results in `out` were made with (`out/config_name`, as
    `write_resolved` writes it), for `claim`'s message."""
    import yaml

    from r1distill.data import traces as store

    try:
        data = yaml.safe_load(store.read_text(store.join(out, config_name)))
    except (OSError, ValueError, yaml.YAMLError):
        data = None
    old = data.get(stage) if isinstance(data, dict) else None
    if not isinstance(old, dict):
        return f"no readable {config_name} there to say which settings differ"
    keys = changed_keys(old, config, ignore=(*ignore, "hash", "logprobs_kind"))
    if not keys:
        return f"no setting differs from its {config_name}: the input did (or the version that made it)"
    return f"changed: {'; '.join(keys[:8])}{'; ...' if len(keys) > 8 else ''}"


def changed_keys(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """The settings that differ between two configs (nested mappings), as "dotted.key: old -> new", top-level keys
    in `ignore` left out: for the one line that says why a rerun does not resume."""
    a, b = _flat({k: v for k, v in old.items() if k not in ignore}), _flat({k: v for k, v in new.items()
                                                                            if k not in ignore})
    return [f"{k}: {repr(a[k]) if k in a else '(unset)'} -> {repr(b[k]) if k in b else '(unset)'}"
            for k in dict.fromkeys([*a, *b]) if k not in a or k not in b or a[k] != b[k]]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---- One process at a time in a dir ----

def lock(path: Path, what: str) -> None:
    """Take the lock file `path` for this process (what: the stage and dir, for the error). It records this pid and
    host; a lock whose process is gone from this host is stale and taken over, and one this process holds already is
    kept. Held by another live process, or by one on another host (which cannot be checked from here): a UserError
    naming it."""
    me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")})
    for _ in range(3):  # a stale lock is removed and the create tried again
        if _create(path, me):
            return
        holder = lock_holder(path)
        if _mine(holder):
            return
        if holder is not None and holder.get("live", True):
            advice = "or stop it" if holder.get("live") else "or delete the lock file if that process is gone"
            raise UserError(f"{what} is in use by pid {holder.get('pid')} on {holder.get('host')} (since "
                            f"{holder.get('since')}; lock file {path}): wait for it to finish, {advice}")
        path.unlink(missing_ok=True)
    raise UserError(f"{path}: could not take this lock; delete it if no other process uses {what}")


def _create(path: Path, text: str) -> bool:
    """Create `path` holding `text` unless it exists (False then): a hard link from a temporary file is exclusive
    like O_EXCL, and the file is never seen half-written."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def lock_holder(path: Path) -> dict | None:
    """The lock's record with `live` (True: its process runs on this host; False: it is gone; absent: another
    host's, unknown), or None when there is no lock."""
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": "?", "host": "?", "since": "?"}  # unreadable: held, and the error names the file
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
            holder["live"] = True
        except ProcessLookupError:
            holder["live"] = False
        except (OSError, KeyError, TypeError, ValueError):  # PermissionError: another user's process, running
            holder["live"] = True
    return holder


def unlock(path: Path) -> None:
    """Remove the lock file if this process holds it."""
    if _mine(lock_holder(path)):
        path.unlink(missing_ok=True)


def _mine(holder: dict | None) -> bool:
    return bool(holder) and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()
