"""Multi-process training with Accelerate: a real 2-process DDP run on CPU (gloo) against a 1-process
run with the same global batch, and the recipes/accelerate configs as accelerate itself reads them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from r1distill.cli import main

pytestmark = pytest.mark.slow  # 2-process accelerate launches

REPO = Path(__file__).resolve().parents[2]
TINY = Path(__file__).parents[1] / "tiny.yaml"
CONFIGS = REPO / "recipes" / "accelerate"
ACCELERATE = Path(sys.executable).with_name("accelerate")
# Same student, data, seed and global batch (4) in both runs; 12 traces -> 3 optimizer steps.
COMMON = ["train.student={derive_from: teacher, num_layers: 1}", "train.epochs=1", "train.learning_rate=1e-3",
          "train.warmup_ratio=0", "train.logging_steps=1"]
RTOL = 1e-4  # the step losses agree to float32 reduction-order noise (seen: about 1e-6 relative)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, teacher_dir) -> Path:
    """12 curated traces (6 problems x 2 samples, 24 tokens, top-8 log-probs) from the built-in teacher."""
    d = tmp_path_factory.mktemp("ddp") / "tiny"
    assert main(["generate", str(TINY), f"run_dir={d}", "generate.max_new_tokens=24"]) == 0
    assert main(["curate", str(TINY), f"run_dir={d}", "generate.max_new_tokens=24"]) == 0
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _step_losses(out: Path) -> list[tuple[int, float]]:
    recs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r]


def _extra(objective: str) -> list[str]:
    # on_policy: 8-token rollouts of the 1-layer student, scored by the built-in teacher
    return ["train.on_policy.max_new_tokens=8"] if objective == "on_policy" else []


def _train_1proc(run_dir: Path, objective: str) -> Path:
    out = run_dir / f"{objective}-1proc"
    args = [f"run_dir={run_dir}", f"train.output_dir={out}", f"train.objective={objective}", "train.batch_size=4"]
    assert main(["train", str(TINY), *args, *COMMON, *_extra(objective)]) == 0
    return out


def _train_2proc(run_dir: Path, objective: str) -> Path:
    """The README's command with the repo's ddp.yaml, on 2 CPU processes (gloo) instead of 8 GPUs."""
    out = run_dir / f"{objective}-2proc"
    cmd = [str(ACCELERATE), "launch", "--config_file", str(CONFIGS / "ddp.yaml"), "--num_processes", "2",
           "--mixed_precision", "no", "--main_process_port", str(_free_port()), "-m", "r1distill.cli",
           "train", str(TINY), f"run_dir={run_dir}", f"train.output_dir={out}", f"train.objective={objective}",
           "train.batch_size=2", *COMMON, *_extra(objective)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.parametrize("objective", ["sft", "kd", "on_policy"])
def test_two_processes_match_one_with_the_same_global_batch(run_dir, objective):
    """on_policy too: each process samples its own rows' rollouts (seeded by row, so the same samples as one
    process draws) and the loss is normalised over both processes' sampled tokens."""
    # The 1-process run goes first: it derives {run_dir}/student_init, which both launches reuse.
    one = _step_losses(_train_1proc(run_dir, objective))
    out2 = _train_2proc(run_dir, objective)
    two = _step_losses(out2)
    assert [s for s, _ in one] == [s for s, _ in two] == [1, 2, 3]
    for (_, a), (_, b) in zip(one, two):
        assert b == pytest.approx(a, rel=RTOL)
    assert one[0][1] != one[2][1]  # the model did change between steps (a lr of 1e-3)
    summary = json.loads((out2 / "summary.json").read_text())
    # 3 steps at batch_size 2 over 12 rows: two processes each took half of every global batch of 4.
    assert (summary["objective"], summary["rows"], summary["steps"]) == (objective, 12, 3)
    assert (out2 / "model.safetensors").exists()
    print(f"{objective}: 1-process {[round(x, 6) for _, x in one]} 2-process {[round(x, 6) for _, x in two]} "
          f"max rel diff {max(abs(a - b) / abs(a) for (_, a), (_, b) in zip(one, two)):.2e}")


def _launch_env(name: str) -> tuple[object, dict[str, str]]:
    """The arguments and process environment `accelerate launch --config_file NAME.yaml` would use."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(
        ["--config_file", str(CONFIGS / f"{name}.yaml"), "-m", "r1distill.cli", "train", "RECIPE.yaml"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:  # what launch_command does before the deepspeed launcher
        args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, "mixed_precision"])
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


@pytest.mark.parametrize("name", ["ddp", "fsdp", "zero3"])
def test_accelerate_configs_load_with_accelerate(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    text = (CONFIGS / f"{name}.yaml").read_text()
    command = f"accelerate launch --config_file recipes/accelerate/{name}.yaml -m r1distill.cli train RECIPE.yaml"
    assert command in text
    cfg = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert isinstance(cfg, ClusterConfig)
    assert (cfg.num_processes, cfg.num_machines, cfg.mixed_precision) == (8, 1, "bf16")
    args, env = _launch_env(name)
    assert (args.num_processes, args.module, args.training_script) == (8, True, "r1distill.cli")
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    expected = {
        "ddp": {},
        "fsdp": {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
                 "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT", "FSDP_SYNC_MODULE_STATES": "true"},
        "zero3": {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                  "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true", "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true"},
    }[name]
    assert {k: env.get(k) for k in expected} == expected
    assert args.multi_gpu == (name == "ddp") and args.use_fsdp == (name == "fsdp")
    assert args.use_deepspeed == (name == "zero3")
