"""Run dir -> `report.html` (one self-contained file) and `report.md` (+ `report_files/*.png`).

    collect.py   read the run dir (every stage's outputs; `model_dirname` names the eval's per-sample dirs)
    stats.py     paired bootstrap over problems (differences and ratios between two models)
    tables.py    the accuracy table's cells (also the eval stage's results.md) and readable model names
    accuracy.py  the accuracy section (takeaway, settings) and the examples
    compare.py   student variants side by side (differences to the SFT baseline, bytes per token)
    sections.py  the other sections and the header
    figures.py   the PNG figures (matplotlib, imported on first use)
    blocks.py    the blocks sections are made of; markdown.py and html.py write them out

Any stage output may be missing (a run still going, stages run one by one, an older run): its section then says
what is missing instead.
"""

from __future__ import annotations

from pathlib import Path

from r1distill import layout
from r1distill.report.collect import collect, hardware, model_dirname, read_train_log, versions
from r1distill.report.stats import paired_bootstrap_diff, paired_bootstrap_ratio
from r1distill.tables import MODEL_TITLES, accuracy_table, results_markdown, results_table, skipped_notes

__all__ = ["MODEL_TITLES", "accuracy_table", "collect", "hardware", "model_dirname", "paired_bootstrap_diff",
           "paired_bootstrap_ratio", "read_train_log", "results_markdown", "results_table", "skipped_notes",
           "versions", "write_report"]


def write_report(run_dir: str | Path) -> Path:
    """Write report.md (+ report_files/*.png) and the self-contained report.html; return the HTML's path."""
    from r1distill.report.figures import figures
    from r1distill.report.html import render_html
    from r1distill.report.markdown import render_markdown

    run = Path(run_dir)
    data = collect(run)
    figs = figures(data)
    files = run / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    for name, png in figs.items():
        (files / f"{name}.png").write_bytes(png)
    (run / layout.REPORT_MD).write_text(render_markdown(data, figs))
    out = run / layout.REPORT_HTML
    out.write_text(render_html(data, figs))
    return out
