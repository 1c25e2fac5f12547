"""The rerun rule, the same for every stage: nothing finished is lost to a rerun.

1. A stage reads and checks its whole input before it touches its outputs, so a bad input (a broken line, a
   misspelt model name) leaves the last results as they were.
2. It then calls `claim(out, stamp)`. The stamp is a hash of the stage's config and of its input's content
   (`fingerprint` of the input shards' footers, or of the problems), recorded in `out/r1distill_stamp.json`:
   - no results in `out`: the stage starts;
   - results of the same stamp: the stage resumes them (generate, eval), or has nothing to do when they are
     complete (curate, train: "done", unless `overwrite`);
   - results of another stamp (or results without one, from an older version): they are moved aside to
     `<out>.old-<stamp>` and the stage starts afresh. generate refuses instead (its dir is shared by workers and
     resumed problem by problem; its traces cost the most), as it always has;
   - `overwrite`: the old results are deleted, as asked, but still only after step 1.
3. `finish(out, stamp)` marks the results complete, last.
eval applies the same rule per (model, benchmark) result file, each with its own fingerprint (`set_aside`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from r1distill.config import UserError
from r1distill.console import console

STAMP = "r1distill_stamp.json"


def read_stamp(out) -> dict | None:
    from r1distill.data import traces as store

    try:
        return json.loads(store.read_text(store.join(out, STAMP)))
    except (OSError, ValueError):
        return None


def claim(out, stamp: str, stage: str, overwrite: bool = False, refuse: str | None = None,
          old: dict | None = None) -> str:
    """Apply the rule to `out` (a path, or an fsspec URL with `refuse`), once the stage's input is checked: "new",
    "resume" (same stamp, not complete) or "done" (same stamp, complete). refuse: the error's advice, to refuse
    other results instead of moving them aside. old: the stamp record, when the stage keeps it elsewhere."""
    from r1distill.data import traces as store

    if overwrite and store.exists(out):
        store.remove(out, recursive=True)
    names = store.list_names(out)
    if not store.is_url(out) and Path(out).is_dir():
        names += [p.name for p in Path(out).iterdir() if p.is_dir()]
    if not [n for n in names if not n.startswith(".")]:  # nothing, or only temporaries a killed run left
        return "new"
    old = old if old is not None else read_stamp(out) or {}
    if old.get("stamp") == stamp:
        return "done" if old.get("complete") else "resume"
    what = f"stamp {old['stamp']}" if old.get("stamp") else "no stamp: an older version's or someone else's"
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
    return old.get("stamp") == stamp and bool(old.get("complete"))


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
    """Record the stamp of the results in `out` (complete: they are finished)."""
    from r1distill.data import traces as store

    store.makedirs(out)
    store.write_text_atomic(store.join(out, STAMP), json.dumps({"stamp": stamp, "complete": complete, **extra}))


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
