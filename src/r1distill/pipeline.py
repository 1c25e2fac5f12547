"""`r1distill run RECIPE`: the stages in order, skipping those already done for the same config.

Each finished stage leaves `.r1distill_done.json` in its output dir with a hash of its config
and of the stages before it. A rerun skips a stage whose marker matches, so after a crash `run`
picks up at the first unfinished stage (and `generate` and `eval` resume inside themselves).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from r1distill import curate, evaluate, generate, train
from r1distill.config import config_hash, load_recipe, stage_config
from r1distill.console import console
from r1distill.report import write_report

STAGES = [
    ("generate", generate.GenerateConfig, generate.run),
    ("curate", curate.CurateConfig, curate.run),
    ("train", train.TrainConfig, train.run),
    ("eval", evaluate.EvalConfig, evaluate.run),
]
MARKER = ".r1distill_done.json"


def build_configs(recipe: dict) -> dict:
    """Every stage's dataclass from a recipe dict (validates all sections before anything runs)."""
    return {name: stage_config(recipe, name, cls) for name, cls, _ in STAGES}


def run(recipe_path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    recipe = load_recipe(recipe_path, overrides)
    configs = build_configs(recipe)
    run_dir = Path(configs["generate"].run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    upstream = ""
    timings = {}
    for name, _, stage_run in STAGES:
        cfg = configs[name]
        h = config_hash(cfg, upstream)
        marker = cfg.out / MARKER
        if marker.exists() and json.loads(marker.read_text()).get("hash") == h:
            console.print(f"[dim]{name}: done for this config, skipped ({cfg.out})[/]")
        else:
            t0 = time.time()
            out = stage_run(cfg)
            timings[name] = round(time.time() - t0, 2)
            (Path(out) / MARKER).write_text(json.dumps({"hash": h, "seconds": timings[name]}))
        upstream = h
    report = write_report(run_dir)
    console.print(f"[bold green]done[/]: report at {report}")
    return report
