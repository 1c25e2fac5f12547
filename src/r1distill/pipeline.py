"""`r1distill run RECIPE`: the stages in order, skipping those already done for the same config.

Each finished stage gets `run`'s record in its output dir's stamp (`rerun.record_run`, the stage dir's one stamp
file): a hash of its config and of the stages before it, and a fingerprint of the content it read (`_inputs`: the
problems, the input shards, the evaluated weights), so an edited problem file or benchmark is not skipped as done.
A rerun skips a stage whose record matches, so after a crash `run` picks up at the first unfinished
stage (and `generate` and `eval` resume inside themselves). Every model name is checked before the
first stage starts.

`{run_dir}/run.json` records how the run was made, for the report and for reproducing it: the command,
argv, working dir, recipe path, overrides, the recipe as loaded, every stage's resolved config, package
versions, hardware, start/end times, and per stage its output dir, wall seconds and whether it was skipped.
"""

from __future__ import annotations

import difflib
import gc
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from r1distill import curate, evaluate, generate, ingest, layout, rerun, score, train
from r1distill.config import (
    LAYOUT,
    ConfigError,
    UserError,
    config_hash,
    dict_hash,
    load_recipe,
    stage_config,
    to_dict,
    variant_sections,
)
from r1distill.console import console
from r1distill.data.problems import fingerprint, load_problems
from r1distill.data.traces import shard_paths, write_text_atomic
from r1distill.models import ModelNotFoundError, check_model, is_tokenizer_dir
from r1distill.report import hardware, versions, write_report

STAGES = [
    ("import", ingest.ImportConfig, ingest.run),
    ("generate", generate.GenerateConfig, generate.run),
    ("curate", curate.CurateConfig, curate.run),
    ("score", score.ScoreConfig, score.run),
    ("train", train.TrainConfig, train.run),
    ("eval", evaluate.EvalConfig, evaluate.run),
]
# Stages `run` includes only when the recipe has their section: `import` (traces you have, instead of generate) and
# `score` (after curate; train then reads its output).
OPTIONAL = ("import", "score")


def build_configs(recipe: dict) -> dict:
    """Every stage's dataclass from a recipe dict (validates all sections before anything runs). With `variants`,
    `train` is replaced by one `train:<name>` per variant (each into `{run_dir}/students/<name>`) and `students` in
    eval.models by their `student:<name>` labels."""
    # a stage reads what the stage before it wrote, also where a recipe moved that output (generate.output_dir)
    recipe = dict(recipe)
    present = [name for name, _, _ in STAGES if name not in OPTIONAL or recipe.get(name) is not None]
    if "import" in present:  # both write {run_dir}/traces: the traces come from one or the other
        if recipe.get("generate"):
            raise ConfigError("The recipe has both `import` (traces you already have) and `generate` (the teacher "
                              "writes traces): keep one")
        present.remove("generate")
    if "score" in present:  # train reads the scored traces (score's own default output is {run_dir}/scored)
        section = recipe.get("train") or {}
        if isinstance(section, dict) and "input_dir" not in section:
            recipe["train"] = {**section, "input_dir": (recipe["score"] or {}).get("output_dir")
                               or str(Path(recipe.get("run_dir", "runs/default")) / LAYOUT["scored"])}
    chain = {"curate": "import" if "import" in present else "generate", "score": "curate",
             "train": "score" if "score" in present else "curate"}
    for name, before in chain.items():
        out = (recipe.get(before) or {}).get("output_dir")
        section = recipe.get(name) or {}
        if out and isinstance(section, dict) and "input_dir" not in section:
            recipe[name] = {**section, "input_dir": out}
    variants = variant_sections(recipe)
    if variants:
        section = dict(recipe.get("eval") or {})
        models = section.get("models", ["teacher"])
        if isinstance(models, list):
            section["models"] = [m for x in models
                                 for m in ([f"student:{v}" for v in variants] if x == "students" else [x])]
        recipe = {**recipe, "eval": section}
    elif "students" in ((recipe.get("eval") or {}).get("models") or []):
        raise ConfigError("eval.models names `students` (every variant's student), but the recipe has no variants")
    configs = {}
    for name, cls, _ in STAGES:
        if name not in present:
            continue
        if name == "train" and variants:
            for v, sec in variants.items():
                configs[f"train:{v}"] = stage_config({**recipe, "train": sec}, "train", cls)
        else:
            configs[name] = stage_config(recipe, name, cls)
    # A named student's `student_init` is the model it starts as (eval.student_inits set in the recipe wins). With
    # variants, plain `student_init` is the start of the base train section's student.
    starts = {name.replace("train", "student_init", 1): t for name, t in configs.items() if name.startswith("train")}
    if variants:
        starts["student_init"] = stage_config(recipe, "train", train.TrainConfig)
    if named := {alias: t.student.name for alias, t in starts.items() if t.student.name}:
        configs["eval"].student_inits = named | (configs["eval"].student_inits or {})
    unknown = [m for m in configs["eval"].models if m.startswith("student") and ":" in m
               and m.partition(":")[2] not in variants]
    if unknown:
        close = difflib.get_close_matches(unknown[0].partition(":")[2], variants, n=1)
        hint = f". Did you mean '{unknown[0].partition(':')[0]}:{close[0]}'?" if close else ""
        raise ConfigError(f"eval.models names {unknown[0]!r}, but the recipe's variants are "
                          f"{', '.join(variants) or '(none)'}{hint}")
    return configs


def train_configs(configs: dict) -> list:
    """The train stage's configs: one, or one per variant."""
    return [cfg for name, cfg in configs.items() if name.partition(":")[0] == "train"]


def _check_models(configs: dict) -> None:
    """Every model name a stage will load, checked before the first stage runs (a typo fails in seconds, not after
    generation). The run's own students (aliases) do not exist yet."""
    names: list[str | None] = []
    made = {str(t.out) for t in train_configs(configs)}  # a variant may start from another's student
    for t in train_configs(configs):
        names += [t.teacher, None if t.student.name in made else t.student.name, t.student.derive_from]
        if (tok := t.student.tokenizer) and not is_tokenizer_dir(tok):  # a tokenizer dir, or any model's
            try:
                check_model(tok)
            except ModelNotFoundError as e:
                raise ModelNotFoundError(f"student.tokenizer: {e}") from None
    if "generate" in configs and configs["generate"].backend != "openai":
        names.append(configs["generate"].teacher)
    if "import" in configs:
        names.append(configs["import"].teacher)
    if "score" in configs and configs["score"].backend != "openai":  # a server's model names are its own
        names.append(configs["score"].teacher)
    if configs["eval"].backend != "openai":
        names += [configs["eval"].resolve(m) for m in configs["eval"].models if not evaluate.is_alias(m)]
    for name in names:
        if name and name != "teacher":
            evaluate.check_model_name(name)  # check_model, with a hint for a built-in model's hub id
    _check_aliases(configs)


def _check_aliases(configs: dict) -> None:
    """eval.models' aliases of the run dir's students, checked before the first stage: each one is a student a train
    stage of this recipe writes (or its derived start), a named student's start, or a model already there."""
    ev, made = configs["eval"], set()
    for name, t in configs.items():
        if not name.startswith("train"):
            continue
        variant = name.partition(":")[2]
        if variant or t.out == Path(t.run_dir) / LAYOUT["student"]:
            made.add(f"student:{variant}" if variant else "student")
        if t.student.derive_from and variant:
            made.add(f"student_init:{variant}")
        if t.student.derive_from and t.init_out == Path(t.run_dir) / LAYOUT["student_init"]:
            made.add("student_init")
    for model in ev.models:
        if evaluate.is_alias(model) and model not in made:
            try:
                ev.resolve(model)
            except UserError:
                raise ConfigError(f"eval.models: {model!r} is no model this recipe's train stage makes (it makes "
                                  f"{', '.join(sorted(made))}), and the run dir has none yet") from None


def _inputs(name: str, cfg) -> str:
    """A fingerprint of the content a stage reads that its config names only by path."""
    if name == "generate":
        return fingerprint(load_problems(cfg.source))
    if name == "import":
        return ingest.source_fingerprint(cfg)
    if name in ("curate", "score") or name.startswith("train"):
        return rerun.fingerprint(shard_paths(cfg.inp))
    weights = [sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(m).glob("*.safetensors"))
               for m in map(cfg.resolve, cfg.models)]
    return config_hash(cfg, *(fingerprint(load_problems(b)) for b in cfg.benchmarks), json.dumps(weights))


def _release_memory() -> None:
    """Free what a finished stage left behind (its model, the CUDA cache) before the next loads its own."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, default=str))


def run(recipe_path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """Run every stage (skipping those done for this config), write run.json and the report; return the
    report's HTML path."""
    recipe = load_recipe(recipe_path, overrides)
    configs = build_configs(recipe)
    _check_models(configs)
    run_dir = Path(next(iter(configs.values())).run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    command = shlex.join(["r1distill", "run", *([str(recipe_path)] if recipe_path is not None else []), *overrides])
    meta = {"command": command, "argv": sys.argv, "cwd": os.getcwd(),
            "recipe_path": None if recipe_path is None else str(recipe_path), "overrides": list(overrides),
            "recipe": recipe, "resolved": {name: to_dict(cfg) for name, cfg in configs.items()},
            "versions": versions(), "hardware": hardware(), "started": _now(), "finished": None, "seconds": None,
            "status": "running", "stages": {}}
    meta_path = run_dir / layout.RUN
    _write_json(meta_path, meta)
    runners = {name: fn for name, _, fn in STAGES}
    upstream, trained, students = "", [], {}
    try:
        for name, cfg in configs.items():
            stage_run = runners[name.partition(":")[0]]
            if name == "eval" and trained:  # every student it scores, in the hash
                upstream = trained[0] if len(trained) == 1 else dict_hash({}, *trained)
            # a variant that starts from another's student: that one's hash too (it retrains when the start does)
            start = students.get(str(cfg.student.name)) if name.startswith("train") else None
            h = config_hash(cfg, upstream, *([start] if start else []))
            stage = {"out": os.path.relpath(cfg.out, run_dir), "hash": h}
            done, inputs = rerun.run_record(cfg.out), _inputs(name, cfg)
            if done.get("hash") == h and done.get("inputs") == inputs:
                console.print(f"[dim]{name}: done for this config, skipped ({cfg.out})[/]")
                stage["skipped"] = True
            else:
                t0 = time.time()
                out = stage_run(cfg)
                stage |= {"skipped": False, "seconds": round(time.time() - t0, 2)}
                rerun.record_run(out, {"hash": h, "inputs": inputs, "seconds": stage["seconds"]})
            meta["stages"][name] = stage
            _write_json(meta_path, meta)
            if name.startswith("train"):
                students[str(cfg.out)] = h
                trained.append(h)  # the variants all train on curate's output: upstream stays curate's hash
            else:
                upstream = h
            _release_memory()
        meta["status"] = "done"
    except BaseException:
        meta["status"] = "failed"
        raise
    finally:
        meta |= {"finished": _now(), "seconds": round(time.time() - t_start, 2), "hardware": hardware()}
        _write_json(meta_path, meta)
    report = write_report(run_dir)
    console.print(f"[bold green]done[/]: report at {report} (and {report.with_suffix('.md')})")
    return report
