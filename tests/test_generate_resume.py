"""The generate stage survives SIGKILL at random points, and N workers can share one output dir."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from r1distill import generate
from r1distill.cli import main
from r1distill.config import ConfigError
from r1distill.data.problems import SourceConfig, load_problems
from r1distill.data.traces import read_table, shard_paths

NUM_PROBLEMS, NUM_SAMPLES = 10, 2


def _overrides(out: Path, **kw) -> list[str]:
    base = {"output_dir": out, "source.num_problems": NUM_PROBLEMS, "num_samples": NUM_SAMPLES,
            "max_new_tokens": 12, "temperature": 0.8, "topk_logprobs": 5, "batch_size": 4, "shard_size": 2,
            "device": "cpu"}
    base.update(kw)
    return [f"generate.{k}={v}" for k, v in base.items()]


def _expected_ids() -> set[str]:
    return {generate.prompt_id("synthetic", p["problem"])
            for p in load_problems(SourceConfig(num_problems=NUM_PROBLEMS))}


def _pairs(paths: list[Path]) -> list[tuple[str, int]]:
    pairs = []
    for p in paths:
        t = pq.read_table(p, columns=["prompt_id", "sample_idx"])
        pairs += zip(t.column("prompt_id").to_pylist(), t.column("sample_idx").to_pylist())
    return pairs


def test_sigkill_at_random_points_then_resume(tmp_path, teacher_dir):
    out = tmp_path / "traces"
    cmd = [sys.executable, "-m", "r1distill.cli", "generate", *_overrides(out)]
    log = (tmp_path / "log.txt").open("w")
    rng = random.Random(20261128)

    def start() -> subprocess.Popen:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def kill(proc: subprocess.Popen) -> bool:
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if shard_paths(out):  # whatever was in flight, the reader sees only whole shards
            assert read_table(out).num_rows % NUM_SAMPLES == 0
        return alive

    # One kill during start-up (imports, model load, config and manifest writes), then three once
    # the run has made progress: a random number of new shards, plus a random delay that lands
    # anywhere in the next batch or shard write.
    proc = start()
    time.sleep(rng.uniform(0.3, 2.0))
    assert kill(proc)
    kills = 0
    for _ in range(3):
        before = len(shard_paths(out))
        target = before + rng.randint(1, 2)
        proc = start()
        deadline = time.time() + 60
        while len(shard_paths(out)) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.2))
        kills += kill(proc)
    assert kills == 3, "the run finished before it could be killed three times: give it more work"
    assert len(shard_paths(out)) < NUM_PROBLEMS  # something was left for the resume

    assert subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode == 0
    log.close()
    t = read_table(out)
    pairs = list(zip(t.column("prompt_id").to_pylist(), t.column("sample_idx").to_pylist()))
    assert len(pairs) == len(set(pairs)) == NUM_PROBLEMS * NUM_SAMPLES
    assert {pid for pid, _ in pairs} == _expected_ids()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))  # stale temporaries were cleaned up
    manifest = json.loads((out / "manifest.json").read_text())["shards"]
    assert [e["file"] for e in manifest] == [p.name for p in shard_paths(out)]
    for e in manifest:
        assert [tuple(x) for x in e["pairs"]] == _pairs([out / e["file"]]) and e["rows"] == len(e["pairs"])
    assert json.loads((out / "summary.json").read_text())["rows"] == NUM_PROBLEMS * NUM_SAMPLES


def test_workers_split_the_problems_and_share_one_dir(tmp_path, teacher_dir):
    out = tmp_path / "traces"
    over = _overrides(out, max_new_tokens=4, shard_size=4)
    out.mkdir()
    mine, theirs = out / ".shard-w0of2-00009.parquet.tmp", out / ".shard-w1of2-00009.parquet.tmp"
    mine.touch()
    theirs.touch()
    assert main(["generate", "--shard", "0/2", *over]) == 0
    assert not mine.exists() and theirs.exists()  # a worker cleans up only its own temporaries
    w0 = shard_paths(out)
    assert w0 and all(p.name.startswith("shard-w0of2-") for p in w0)
    assert main(["generate", "--shard", "1/2", *over]) == 0  # same config but shard: not refused
    w1 = [p for p in shard_paths(out) if p not in w0]
    assert w1 and all(p.name.startswith("shard-w1of2-") for p in w1)

    p0, p1 = _pairs(w0), _pairs(w1)
    assert {pid for pid, _ in p0}.isdisjoint({pid for pid, _ in p1})
    assert all(int(pid, 16) % 2 == 0 for pid, _ in p0) and all(int(pid, 16) % 2 == 1 for pid, _ in p1)
    assert {pid for pid, _ in p0 + p1} == _expected_ids() and len(p0 + p1) == NUM_PROBLEMS * NUM_SAMPLES
    for i, files in ((0, w0), (1, w1)):
        manifest = json.loads((out / f"manifest-w{i}of2.json").read_text())["shards"]
        assert [e["file"] for e in manifest] == [p.name for p in files]
        assert json.loads((out / f"summary-w{i}of2.json").read_text())["rows"] == len(_pairs(files))

    assert main(["generate", *over]) == 0  # a run without --shard finds everything done
    assert shard_paths(out) == sorted(w0 + w1)
    assert json.loads((out / "summary.json").read_text())["rows"] == NUM_PROBLEMS * NUM_SAMPLES
    assert len(json.loads((out / "manifest.json").read_text())["shards"]) == len(w0 + w1)


def test_workers_resume_a_dir_begun_without_shard(tmp_path, teacher_dir):
    out = tmp_path / "traces"
    over = _overrides(out, max_new_tokens=4, shard_size=4)
    assert main(["generate", *over]) == 0
    first = shard_paths(out)
    for p in first[1::2]:
        p.unlink()  # problems of the plain run left to the workers
    kept = _pairs(first[::2])
    for shard in ("0/2", "1/2"):
        assert main(["generate", "--shard", shard, *over]) == 0
    new = [p for p in shard_paths(out) if p not in first]
    assert new and all(p.name.startswith("shard-w") for p in new)
    pairs = _pairs(shard_paths(out))
    assert len(pairs) == len(set(pairs)) == NUM_PROBLEMS * NUM_SAMPLES
    assert set(_pairs(new)).isdisjoint(kept)


@pytest.mark.parametrize("shard", ["2/2", "0/0", "-1/2", "1", "a/b", "0/2/4"])
def test_a_bad_shard_is_a_config_error(shard):
    with pytest.raises(ConfigError, match="generate.shard"):
        generate.GenerateConfig(shard=shard)


def test_shard_is_left_out_of_the_hash_and_refuses_overwrite():
    assert generate.GenerateConfig(shard="0/2").hash() == generate.GenerateConfig().hash()
    with pytest.raises(ConfigError, match="overwrite"):
        generate.GenerateConfig(shard="0/2", overwrite=True)
