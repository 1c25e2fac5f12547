"""The console: user errors are one line and exit 2 (a traceback only with --debug), every --help lists the
stage's keys with their defaults and an example, and `r1distill models` lists the built-in model and the
Hugging Face cache."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from r1distill.cli import STAGE_CONFIGS, _fmt, main
from r1distill.config import ConfigError

TINY = Path(__file__).with_name("tiny.yaml")


def _one_error_line(capsys, rc: int) -> str:
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("r1distill: error: "), err
    return lines[0]


def _problems(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text(json.dumps({"q": "What is 1 + 1?", "a": "2"}) + "\n")
    return path


@pytest.mark.parametrize("case", ["bad_key", "bad_value", "missing_recipe", "bad_yaml", "missing_traces",
                                  "missing_problem_file", "wrong_column", "missing_run_dir"])
def test_user_error_is_one_line_and_exit_2(case, tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("generate:\n  num_samples: [1,\n")  # YAML's own message spans several lines
    wrong = f"generate.source={{name: file, path: {_problems(tmp_path)}, columns: {{problem: question}}}}"
    args, expected = {
        "bad_key": (["run", str(TINY), "generate.num_sample=2"], "Unknown key 'num_sample' in generate. Did you mean "
                                                                  "'num_samples'?"),
        "bad_value": (["generate", "generate.num_samples=many"], "generate.num_samples: expected an integer"),
        "missing_recipe": (["run", str(tmp_path / "nope.yaml")], f"Recipe file not found: {tmp_path / 'nope.yaml'}"),
        "bad_yaml": (["generate", str(bad_yaml)], f"{bad_yaml}: not valid YAML"),
        "missing_traces": (["curate", f"run_dir={tmp_path}"], f"No Parquet shards in {tmp_path / 'traces'}"),
        "missing_problem_file": (["generate", f"run_dir={tmp_path}",
                                  f"generate.source={{name: file, path: {tmp_path / 'gone.jsonl'}}}"],
                                 f"Problem file not found: {tmp_path / 'gone.jsonl'}"),
        "wrong_column": (["generate", f"run_dir={tmp_path}", wrong],
                         "column 'question' (mapped to 'problem') is in no row. The columns: q, a"),
        "missing_run_dir": (["report", str(tmp_path / "no_run")], f"Run dir not found: {tmp_path / 'no_run'}"),
    }[case]
    line = _one_error_line(capsys, main(args))
    assert expected in line


def test_unreachable_server_is_one_error_line(tmp_path, capsys, teacher_dir):
    pytest.importorskip("r1distill.backends.openai")
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["generate", f"run_dir={tmp_path}", "generate.backend=openai", "generate.topk_logprobs=0",
               f"generate.backend_options={{base_urls: ['http://127.0.0.1:{port}/v1'], max_retries: 0}}",
               "generate.source.num_problems=1", "generate.num_samples=1", "generate.max_new_tokens=8"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("r1distill: error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "is the server running?" in errors[0], err
    assert err.rstrip().endswith(errors[0])  # the last thing printed, on one line


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match="Recipe file not found"):
        main(["--debug", "run", str(tmp_path / "nope.yaml")])
    with pytest.raises(ConfigError, match="Unknown key"):
        main(["eval", "--debug", "eval.modles=[x]"])
    # the installed entry point, as a user runs it
    cmd = [sys.executable, "-m", "r1distill.cli", "run", str(tmp_path / "nope.yaml")]
    plain = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"})
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    debug = subprocess.run(cmd[:3] + ["--debug"] + cmd[3:], capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "ConfigError: Recipe file not found" in debug.stderr


@pytest.mark.parametrize("stage", list(STAGE_CONFIGS))
def test_stage_help_lists_every_key_with_its_default(stage, capsys):
    with pytest.raises(SystemExit) as e:
        main([stage, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"example:\n  r1distill {stage} " in out and "(default: False)" in out  # --overwrite's default
    module, name = STAGE_CONFIGS[stage]
    cls = getattr(__import__(module, fromlist=[name]), name)
    lines = [line.split() for line in out.splitlines()]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):  # listed as its sub-keys, e.g. student.num_layers
            sub = dataclasses.fields(default)[0]
            assert any(w and w[0] == f"{f.name}.{sub.name}" for w in lines), (stage, f.name)
            continue
        shown = _fmt(default)
        assert any(w[:1] == [f.name] and " ".join(w[1:]).startswith(shown) for w in lines), (stage, f.name, shown)
    # spot checks against values written out by hand
    expected = {"generate": "num_samples 4 completions per problem", "curate": "require_correct true",
                "import": "shard_size 2048 rows per shard", "score": "topk_logprobs 20 top-k log-probs stored",
                "train": "objective kd", "eval": "temperature 0.6"}[stage]
    assert any(" ".join(w).startswith(expected) for w in lines), expected


def test_top_level_and_run_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("run", "generate", "curate", "train", "eval", "report", "models"):
        assert f"    {cmd} " in out
    assert "r1distill run recipes/quickstart.yaml" in out and "--debug" in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "The student is train.student" in out and "example:\n  r1distill run recipes/quickstart.yaml" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "student.num_layers" in capsys.readouterr().out  # the student's keys, in their one place


def test_models_lists_built_in_and_hub_cache(teacher_dir, tmp_path, monkeypatch, capsys):
    # A Hugging Face cache holding one model snapshot (the layout huggingface_hub writes: blobs + snapshot links).
    repo = tmp_path / "hub" / "models--org--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "blobs" / "b1").write_bytes(b"x" * 2500)
    (repo / "snapshots" / commit / "config.json").symlink_to("../../blobs/b1")
    (repo / "refs" / "main").write_text(commit)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    size = sum(p.stat().st_size for p in teacher_dir.rglob("*") if p.is_file())
    assert "smollm2-135m-instruct  (Apache-2.0)" in out and f"cached, {size / 1e6:.1f} MB at {teacher_dir}" in out
    assert f"Hugging Face cache ({tmp_path / 'hub'}): 1 repos:" in out and "model    org/tiny  2.5 KB" in out
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "none"))
    assert main(["models"]) == 0
    assert f"Hugging Face cache ({tmp_path / 'none'}): 0 repos" in capsys.readouterr().out


def test_a_successful_command_destroys_the_process_group_and_an_error_leaves_it(tmp_path, capsys):
    """Under accelerate launch the group must not be left to interpreter teardown (gloo can abort there), but a
    rank that failed must not destroy it while the others may still wait in a collective."""
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        assert main(["report", str(tmp_path / "no_run")]) == 2 and dist.is_initialized()
        assert main(["models"]) == 0 and not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    capsys.readouterr()
