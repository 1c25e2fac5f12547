"""Run dir -> report.md: what each stage produced, with the accuracy table first.

The numbers are read from the stages' own summary files; nothing is recomputed here.
"""

from __future__ import annotations

import json
from pathlib import Path

from r1distill.config import LAYOUT

MODEL_TITLES = {"teacher": "teacher", "student_init": "student before training", "student": "student after training"}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


_HEADS = {"pass@1": "pass@1 [95% CI]", "mean_tokens": "mean tokens"}


def _cell(r: dict, col: str) -> str:
    if col == "mean_tokens":
        return f"{r[col]:.0f}"
    if col == "pass@1" and "pass@1_ci95" in r:  # summaries written before the CI existed have none
        lo, hi = r["pass@1_ci95"]
        return f"{r[col]:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{r[col]:.3f}"


def accuracy_table(summary: dict) -> str:
    benches = sorted({b for m in summary.values() for b in m if not b.startswith("_")})
    cols = ("pass@1", "maj@k", "answered", "mean_tokens")
    lines = ["| model | " + " | ".join(f"{b} {_HEADS.get(c, c)}" for b in benches for c in cols) + " |",
             "|---|" + "---:|" * (len(cols) * len(benches))]
    for model, res in summary.items():
        cells = []
        for b in benches:
            r = res.get(b)
            cells += [_cell(r, c) for c in cols] if r else [""] * 4
        lines.append(f"| {MODEL_TITLES.get(model, model)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    parts = [f"# r1distill report: `{run}`", ""]
    ev = _load(run / LAYOUT["eval"] / "summary.json")
    if ev:
        n = {b: r["problems"] for m in ev.values() for b, r in m.items() if not b.startswith("_")}
        k = {b: r["k"] for m in ev.values() for b, r in m.items() if not b.startswith("_")}
        parts += ["## Accuracy", "", accuracy_table(ev), "",
                  "pass@1: mean correctness over the k samples per problem; maj@k: majority vote over the "
                  "extracted answers; answered: share of outputs that state a final answer.", "",
                  "Problems per benchmark: " + ", ".join(f"{b} {n[b]} (k={k[b]})" for b in sorted(n)), ""]
    gen = _load(run / LAYOUT["traces"] / "summary.json")
    if gen:
        parts += ["## Generate", "",
                  f"{gen['rows']} traces for {gen['problems']} problems, {gen['total_tokens']} completion tokens; "
                  f"finish reasons {gen['finish_reasons']}; last session {gen['seconds']:.0f}s at "
                  f"{gen['new_tokens_per_s']:.0f} tok/s.", ""]
    stats_md = run / LAYOUT["curated"] / "stats.md"
    if stats_md.exists():
        parts += ["## Curate", "", stats_md.read_text(), ""]
    tr = _load(run / LAYOUT["student"] / "summary.json")
    if tr:
        parts += ["## Train", "",
                  f"Objective `{tr['objective']}` on {tr['rows']} traces: {tr['steps']} steps, mean loss "
                  f"{tr['train_loss']:.3f}, {tr['seconds']:.0f}s "
                  f"({tr.get('completion_tokens_per_s', 0):.0f} completion tokens/s).", ""]
    out = run / "report.md"
    out.write_text("\n".join(parts))
    return out
