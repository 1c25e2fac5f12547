"""The generate stage survives SIGKILL at random points, and N workers can share one output dir."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from r1distill import generate, rerun
from r1distill.cli import main
from r1distill.config import ConfigError
from r1distill.data.problems import SourceConfig, load_problems
from r1distill.data.traces import read_table, shard_paths

pytestmark = pytest.mark.slow  # generate processes killed and resumed

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


def _completions(out: Path) -> dict[tuple[str, int], list[int]]:
    """(prompt_id, sample_idx) -> completion ids, asserting each pair is there once."""
    t = read_table(out)
    pairs = list(zip(t.column("prompt_id").to_pylist(), t.column("sample_idx").to_pylist()))
    assert len(pairs) == len(set(pairs))
    return dict(zip(pairs, t.column("completion_ids").to_pylist()))


def test_ctrl_c_keeps_the_finished_problems_and_the_resume_equals_an_uninterrupted_run(tmp_path, teacher_dir,
                                                                                       monkeypatch, capsys):
    from r1distill.backends.hf import HFBackend

    # The default shard_size: one shard would hold every problem, so before, Ctrl-C kept nothing. batch_size 3 cuts
    # a problem's two samples apart, and only whole problems are kept.
    over = _overrides(tmp_path / "traces", shard_size=256, batch_size=3)
    assert main(["generate", *_overrides(tmp_path / "whole", shard_size=256, batch_size=3)]) == 0
    whole = _completions(tmp_path / "whole")
    assert len(whole) == NUM_PROBLEMS * NUM_SAMPLES

    batch, calls = HFBackend._generate_batch, []

    def ctrl_c_on_fourth(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # 3 batches of 3 sequences done: 4 whole problems and half of one
            raise KeyboardInterrupt
        return batch(self, *args, **kwargs)

    monkeypatch.setattr(HFBackend, "_generate_batch", ctrl_c_on_fourth)
    assert main(["generate", *over]) == 130
    monkeypatch.setattr(HFBackend, "_generate_batch", batch)
    kept = _completions(tmp_path / "traces")
    assert len(kept) == 4 * NUM_SAMPLES
    capsys.readouterr()
    assert main(["generate", *over]) == 0
    assert f"({len(kept) // NUM_SAMPLES} already done)" in capsys.readouterr().err
    assert _completions(tmp_path / "traces") == whole  # each problem drew the samples it draws uninterrupted


def test_a_second_generate_on_a_busy_dir_is_refused_and_another_shard_size_is_another_config(tmp_path, teacher_dir,
                                                                                              capsys):
    out = tmp_path / "traces"
    lock = out / ".generate.lock"
    with (tmp_path / "log.txt").open("w") as log:
        first = subprocess.Popen([sys.executable, "-m", "r1distill.cli", "generate", *_overrides(out, shard_size=2)],
                                 stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while not lock.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        # The lock is taken before the model loads: this refusal comes while the first run still works.
        assert main(["generate", *_overrides(out, shard_size=4)]) == 2
        err = capsys.readouterr().err
        assert first.poll() is None
        assert f"pid {first.pid}" in err and ".generate.lock" in err
        assert first.wait() == 0
    assert not lock.exists()
    # Once it is done, another shard_size is another config (it groups the problems, and so seeds them otherwise):
    # refused, by name, not mixed in (before, a second run with another size doubled rows under the same names).
    capsys.readouterr()
    assert main(["generate", *_overrides(out, shard_size=4)]) == 2
    assert "changed: shard_size: 2 -> 4" in " ".join(capsys.readouterr().err.split())
    assert len(_completions(out)) == NUM_PROBLEMS * NUM_SAMPLES
    assert json.loads((out / "manifest.json").read_text())["shards"] and \
        json.loads((out / "summary.json").read_text())["rows"] == NUM_PROBLEMS * NUM_SAMPLES


@pytest.fixture(scope="module")
def finished(tmp_path_factory, teacher_dir) -> Path:
    """A finished generate dir (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "traces"
    assert main(["generate", *_overrides(out, max_new_tokens=4, shard_size=4)]) == 0
    return out


def test_a_changed_config_is_refused_naming_the_keys_that_changed(tmp_path, finished, capsys):
    out = tmp_path / "traces"
    shutil.copytree(finished, out)
    capsys.readouterr()
    changed = _overrides(out, max_new_tokens=4, shard_size=4, temperature=0.5, batch_size=2,
                         **{"source.num_problems": 12})
    assert main(["generate", *changed]) == 2
    err = capsys.readouterr().err
    err = " ".join(err.split())  # rich wraps long lines
    assert "changed: source.num_problems: 10 -> 12; temperature: 0.8 -> 0.5;" in err
    assert "batch_size" not in err  # changed too, but it does not change what is generated


def test_a_rerun_with_nothing_to_do_keeps_the_summary(tmp_path, finished):
    out = tmp_path / "traces"
    shutil.copytree(finished, out)
    before = json.loads((out / "summary.json").read_text())
    assert before["new_tokens"] > 0 and before["new_tokens_per_s"] > 0
    assert main(["generate", *_overrides(out, max_new_tokens=4, shard_size=4)]) == 0
    assert json.loads((out / "summary.json").read_text()) == before


def test_shard_size_is_in_the_hash_and_an_earlier_versions_dir_is_refused_in_one_line(tmp_path, finished, capsys):
    assert generate.GenerateConfig(shard_size=2).hash() != generate.GenerateConfig(shard_size=4).hash()
    # A dir of an earlier stamp format (format 1 wrote no `format`): refused, saying so, and left as it was.
    out = tmp_path / "traces"
    shutil.copytree(finished, out)
    stamp = json.loads((out / "r1distill_stamp.json").read_text())
    assert stamp["format"] == rerun.FORMAT == 2
    (out / "r1distill_stamp.json").write_text(json.dumps({k: v for k, v in stamp.items() if k != "format"}))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert main(["generate", *_overrides(out, max_new_tokens=4, shard_size=4)]) == 2
    said = " ".join(" ".join(capsys.readouterr()).split())
    assert "(stamp format 1, an earlier r1distill's; this one writes format 2; no setting differs" in said
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_two_processes_never_share_a_temporary_file(tmp_path):
    import pyarrow as pa

    from r1distill.data.traces import write_table_atomic

    # Another process half way through writing the same shard name (as two runs on one dir did): its temporary
    # file is its own, and this write neither reads, replaces nor renames it.
    theirs = tmp_path / ".shard-00000.parquet.tmp"
    theirs.write_bytes(b"another process's half-written shard")
    write_table_atomic(pa.table({"a": [1, 2]}), tmp_path / "shard-00000.parquet")
    assert theirs.read_bytes() == b"another process's half-written shard"
    assert pq.read_table(tmp_path / "shard-00000.parquet").num_rows == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == [theirs.name]
