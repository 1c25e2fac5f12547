"""Where run files live, a local path or an fsspec URL, and how they are written so that no reader sees half a file.

Separate from r1distill.data.traces (the trace schema and its Parquet shards) because every stage reads and writes
its run dir through these helpers (`read_text`, `write_text_atomic`, `join`, `exists`, ...), for JSON and YAML as
much as for shards; traces re-exports them, so `from r1distill.data import traces as store` keeps working.

Locations: a plain path is a local dir; a URL (`file://`, `memory://`, `s3://`, ... anything fsspec
knows) goes through fsspec. Files are written under a temporary name and renamed into place where
the filesystem renames atomically (local disks, fsspec's file:// and memory://), so a reader
never sees half a file. Object stores (s3, gs, az, ...) have no rename (fsspec copies, then
deletes), so there files are written to their final name directly: an object becomes visible
only once its upload completes, which gives readers the same guarantee.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

Location = str | Path  # a local path (Path or str), or an fsspec URL (str)
ATOMIC_RENAME = {"file", "local", "memory"}  # fsspec protocols whose rename never shows a half-written file


def is_url(location: Location) -> bool:
    return "://" in str(location)


def as_location(location: Location) -> Location:
    """A Path for a local path, the string itself for a URL (Path("s3://b/x") would drop a slash)."""
    return str(location) if is_url(location) else Path(location)


def filesystem(location: Location):
    """(fsspec filesystem, path on it)."""
    if is_url(location):
        from fsspec.core import url_to_fs

        return url_to_fs(str(location))
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem(), str(Path(location).absolute())


def join(directory: Location, name: str) -> Location:
    if is_url(directory):
        return str(directory).rstrip("/") + "/" + name
    return Path(directory) / name


def name_of(location: Location) -> str:
    return posixpath.basename(str(location).rstrip("/"))


def exists(location: Location) -> bool:
    fs, path = filesystem(location)
    return fs.exists(path)


def makedirs(directory: Location) -> None:
    fs, path = filesystem(directory)
    fs.makedirs(path, exist_ok=True)


def remove(location: Location, recursive: bool = False) -> None:
    fs, path = filesystem(location)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def list_names(directory: Location) -> list[str]:
    """Names of the files directly in `directory` ([] if it does not exist)."""
    fs, path = filesystem(directory)
    if not fs.exists(path):
        return []
    return sorted(name_of(p) for p in fs.ls(path, detail=False) if fs.isfile(p))


def file_size(location: Location) -> int:
    fs, path = filesystem(location)
    return int(fs.size(path))


def read_text(location: Location) -> str:
    fs, path = filesystem(location)
    with fs.open(path, "r", encoding="utf-8") as f:
        return f.read()


def atomic_rename(location: Location) -> bool:
    fs, _ = filesystem(location)
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool(ATOMIC_RENAME & set(protocols))


def write_atomic(location: Location, write, tmp_name: str) -> None:
    """write(file) into `location`: under `tmp_name` in the same dir, then renamed, where renames are atomic."""
    fs, path = filesystem(location)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    if not atomic_rename(location):  # an object store: the object appears only once its upload completes
        with fs.open(path, "wb") as f:
            write(f)
        return
    tmp = posixpath.join(posixpath.dirname(path), tmp_name)
    with fs.open(tmp, "wb") as f:
        write(f)
    if fs.protocol == "memory":
        fs.mv(tmp, path)  # copy + delete of an in-process dict entry: no other process can see it
    else:
        os.replace(tmp, path)  # a local disk (plain path or file://)


def write_text_atomic(location: Location, text: str) -> None:
    # A per-process temporary name: workers sharing the dir may write config.yaml at the same time.
    write_atomic(location, lambda f: f.write(text.encode()), f".{name_of(location)}.{os.getpid()}.tmp")
