"""Every recipe under recipes/ loads and validates (stage configs and backend options) without downloading
anything, and its header comment holds the command that runs it. A recursive glob, so none is missed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from r1distill.backends import check_options
from r1distill.config import ConfigError, load_recipe
from r1distill.pipeline import build_configs

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ACCELERATE = RECIPES / "accelerate"
ALL = sorted(RECIPES.rglob("*.yaml"))
PIPELINE_RECIPES = [p for p in ALL if ACCELERATE not in p.parents]
COMMAND = re.compile(r"^#\s+(r1distill|accelerate launch|make)\s.*")


def _id(p: Path) -> str:
    return str(p.relative_to(RECIPES))


def test_the_glob_finds_the_recipes():
    names = {_id(p) for p in PIPELINE_RECIPES}
    assert {"quickstart.yaml", "r1-distill-qwen-1.5b/generate.yaml", "r1-distill-qwen-1.5b/sft.yaml",
            "r1-distill-qwen-1.5b/kd.yaml", "api-teacher/recipe.yaml", "lora-kd/recipe.yaml",
            "openr1-math-kd/recipe.yaml", "cpu-import.yaml"} <= names
    assert {_id(p) for p in ALL} - names == {"accelerate/ddp.yaml", "accelerate/fsdp.yaml", "accelerate/zero3.yaml"}


@pytest.mark.parametrize("path", PIPELINE_RECIPES, ids=_id)
def test_recipe_validates(path: Path):
    try:
        configs = build_configs(load_recipe(path))
        for stage in ("generate", "score", "eval"):
            if stage in configs:
                check_options(configs[stage].backend, configs[stage].backend_options)
    except ConfigError as e:  # say which recipe, and what to fix, without a traceback into the config code
        pytest.fail(f"recipes/{_id(path)} does not validate: {e}", pytrace=False)
    assert all(Path(c.run_dir).parts[0] == "runs" for c in configs.values())  # outputs stay under runs/ (ignored)


@pytest.mark.parametrize("path", PIPELINE_RECIPES, ids=_id)
def test_header_holds_the_command_that_runs_this_recipe(path: Path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    commands = [line for line in header if COMMAND.match(line)]
    assert commands, f"recipes/{_id(path)}: the header comment has no command line"
    rel = f"recipes/{_id(path)}"
    assert any(rel in c for c in commands), f"{rel}: no header command names this recipe"


@pytest.mark.parametrize("path", sorted(ACCELERATE.glob("*.yaml")), ids=_id)
def test_accelerate_configs_parse(path: Path):
    cfg = yaml.safe_load(path.read_text())
    assert isinstance(cfg, dict) and cfg["num_processes"] >= 1 and "distributed_type" in cfg


def test_the_trace_set_recipe_chains_import_curate_score_train():
    configs = build_configs(load_recipe(RECIPES / "openr1-math-kd" / "recipe.yaml"))
    assert list(configs) == ["import", "curate", "score", "train", "eval"]
    run = Path("runs/openr1-math-kd")
    assert configs["curate"].inp == run / "traces" and configs["score"].inp == run / "curated"
    assert configs["train"].inp == configs["score"].out == run / "scored"
    assert configs["import"].teacher == configs["score"].teacher == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert configs["import"].source.format == "openr1" and configs["score"].backend == "vllm"


def test_recipes_that_reuse_the_quickstart_traces_ask_for_the_same_ones():
    # generate resumes by content: a recipe pointing at the quickstart's traces dir with another generate config
    # would be refused there, so the reuse its header promises holds only while the two configs hash the same.
    quick = build_configs(load_recipe(RECIPES / "quickstart.yaml"))["generate"]
    for name in ("cpu-xtok.yaml", "cpu-onpolicy.yaml"):
        gen = build_configs(load_recipe(RECIPES / name))["generate"]
        assert gen.out == quick.out and gen.hash() == quick.hash(), name
