"""generate writes to, resumes in and reads back from fsspec URLs (memory:// and file://; no network)."""

from __future__ import annotations

import json

import fsspec
import pytest

from r1distill import generate
from r1distill.data import locations, traces
from r1distill.data.problems import SourceConfig
from r1distill.data.traces import read_table, shard_paths


def _cfg(url: str, **kw) -> generate.GenerateConfig:
    base = dict(output_dir=url, source=SourceConfig(name="synthetic", num_problems=3), num_samples=2,
                max_new_tokens=6, temperature=0.8, topk_logprobs=4, batch_size=6, shard_size=2, device="cpu")
    return generate.GenerateConfig(**{**base, **kw})


def _pairs(url: str) -> list[tuple[str, int]]:
    t = read_table(url, columns=["prompt_id", "sample_idx"])
    return list(zip(t.column("prompt_id").to_pylist(), t.column("sample_idx").to_pylist()))


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_generate_to_a_url_resumes_and_reads_back(scheme, tmp_path, teacher_dir):
    url = f"memory://r1distill-test-{tmp_path.name}/traces" if scheme == "memory" else f"file://{tmp_path}/traces"
    cfg = _cfg(url, topk_format="q8" if scheme == "memory" else "exact")
    assert cfg.out == url  # kept a string: Path() would turn "memory://x" into "memory:/x"
    generate.run(cfg)
    fs, root = fsspec.core.url_to_fs(url)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    assert names == ["config.yaml", "manifest.json", "r1distill_stamp.json", "shard-00000.parquet",
                     "shard-00001.parquet", "shard-00002.parquet", "summary.json"]  # no temporaries left behind
    shards = shard_paths(url)
    assert shards == [f"{url}/shard-0000{i}.parquet" for i in range(3)]
    first = _pairs(url)
    assert len(first) == len(set(first)) == 6
    t = read_table(url)
    assert t.schema.field("topk_logprobs").type == traces.TRACE_SCHEMA.field("topk_logprobs").type
    assert all(len(row) == 4 for rows in t.column("topk_logprobs").to_pylist() for row in rows)

    fs.rm(fsspec.core.url_to_fs(shards[1])[1])  # as if the run died before this shard was renamed into place
    fs.pipe(f"{root}/.shard-00009.parquet.tmp", b"half a shard")  # and left a temporary file
    generate.run(cfg)
    assert sorted(_pairs(url)) == sorted(first)
    assert [traces.name_of(p) for p in shard_paths(url)] == ["shard-00000.parquet", "shard-00002.parquet",
                                                             "shard-00003.parquet"]
    assert not fs.exists(f"{root}/.shard-00009.parquet.tmp")
    summary = json.loads(traces.read_text(f"{url}/summary.json"))
    assert summary["rows"] == 6 and summary["logprobs_kind"] == "raw" and summary["bytes_per_token"] > 0
    manifest = json.loads(traces.read_text(f"{url}/manifest.json"))["shards"]
    assert [e["file"] for e in manifest] == [traces.name_of(p) for p in shard_paths(url)]

    with pytest.raises(Exception, match="different config"):
        generate.run(_cfg(url, temperature=0.3))
    if scheme == "memory":
        fs.rm(root, recursive=True)


def test_file_url_and_plain_path_are_the_same_dir(tmp_path):
    table = traces.rows_to_table([{"prompt_id": "a", "sample_idx": 0}])
    traces.write_table_atomic(table, f"file://{tmp_path}/d/shard-00000.parquet")
    assert shard_paths(tmp_path / "d") == [tmp_path / "d" / "shard-00000.parquet"]
    assert read_table(str(tmp_path / "d")).column("prompt_id").to_pylist() == ["a"]


def test_filesystems_without_rename_get_the_final_name_directly(monkeypatch):
    """Object stores have no rename (fsspec's mv copies, then deletes), so files go straight to their name: an
    object appears only once its upload completes. Shown on memory://, treated once as a rename-less store."""
    from fsspec.implementations.memory import MemoryFileSystem

    def no_mv(self, *a, **k):
        raise AssertionError("mv called")

    monkeypatch.setattr(MemoryFileSystem, "mv", no_mv)
    table = traces.rows_to_table([{"prompt_id": "a", "sample_idx": 0}])
    url = "memory://r1distill-test-norename/d"
    with pytest.raises(AssertionError, match="mv called"):  # memory:// renames by default
        traces.write_table_atomic(table, f"{url}/shard-00000.parquet")
    monkeypatch.setattr(locations, "ATOMIC_RENAME", {"file", "local"})
    assert not traces.atomic_rename(url) and traces.atomic_rename("file:///x") and traces.atomic_rename("/x")
    traces.remove(url, recursive=True)
    traces.write_table_atomic(table, f"{url}/shard-00000.parquet")
    traces.write_text_atomic(f"{url}/summary.json", "{}")
    assert traces.list_names(url) == ["shard-00000.parquet", "summary.json"]
    assert read_table(url).column("prompt_id").to_pylist() == ["a"]
    traces.remove(url, recursive=True)
