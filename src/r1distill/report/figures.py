"""Report figures: matplotlib charts of a run's numbers, each returned as PNG bytes.

`figures(data)` picks the charts a run dir has data for; the chart functions take values collect.py (and
compare.py, for the variants) have already read or computed, and only draw them. Figures are built with
`matplotlib.figure.Figure` (the Agg canvas), not pyplot, so drawing a report never touches a user's
interactive backend or global figure state. matplotlib is imported on the first figure, not with the package.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from r1distill.report.collect import funnel as funnel_steps
from r1distill.tables import title

# One color per model label across every figure; the usual three first, others from a qualitative palette.
FIXED_COLORS = {"teacher": "#3b6ea5", "student_init": "#a9a9a9", "student": "#e07b39"}
INIT_COLOR = "#c8c8c8"  # untrained variants (student_init:<name>)
PALETTE = ("#4a9d5b", "#8e6bb5", "#c44e52", "#3fa7b5", "#b8860b", "#d16ba5", "#6b8e23", "#5f6b7a")
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.labelsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e6e6e6",
    "grid.linewidth": 0.8, "axes.axisbelow": True, "legend.frameon": False, "figure.dpi": 100,
    "savefig.dpi": 150, "axes.edgecolor": "#888888", "xtick.color": "#444444", "ytick.color": "#444444",
}


def _mpl():
    """(rc_context, Figure, MaxNLocator), imported on the first figure so that `import r1distill.report` (which the
    eval stage does, for its table) stays light."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    return rc_context, Figure, MaxNLocator


def accuracy_top(highs: Sequence[float]) -> float:
    """The top of an accuracy axis: 1, or the largest CI upper bound (or value) rounded up to the next tenth, so
    that the axis starts at 0 and 0.02 against 0.01 stays a sliver, not a gap; 0.1 when everything is 0."""
    hi = max(highs, default=0.0)
    return min(1.0, max(0.1, math.ceil(round(hi * 10, 6)) / 10))


def colors(labels: Sequence[str]) -> dict[str, str]:
    """A stable color per label: fixed for teacher/student_init/student, palette order for the rest."""
    out, i = {}, 0
    for label in labels:
        if label in FIXED_COLORS:
            out[label] = FIXED_COLORS[label]
        elif label.startswith("student_init:"):
            out[label] = INIT_COLOR
        else:
            out[label] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def accuracy_bars(results: dict[str, dict[str, dict]], titles: dict[str, str],
                  heading: str = "Accuracy per model and benchmark") -> bytes:
    """Grouped bars of pass@1 per benchmark (one bar per model) with the 95% CI as error bars, on an axis from 0
    to `accuracy_top` of the CI bounds.

    results: {model: {benchmark: {"pass@1": float, "pass@1_ci95": [lo, hi] (optional)}}}.
    """
    rc_context, Figure, _ = _mpl()
    models = list(results)
    benches = sorted({b for r in results.values() for b in r})
    col = colors(models)
    width = 0.8 / max(len(models), 1)
    with rc_context(STYLE):
        fig = Figure(figsize=(max(6.0, 1.6 + 1.9 * len(benches) * max(len(models), 2) / 3), 3.6))
        ax = fig.add_subplot()
        top = 0.0
        for i, m in enumerate(models):
            labelled = False
            for j, b in enumerate(benches):
                r = results[m].get(b)
                if r is None:
                    continue
                x = j + (i - (len(models) - 1) / 2) * width
                v = r["pass@1"]
                ci = r.get("pass@1_ci95")
                err = [[v - ci[0]], [ci[1] - v]] if ci else None
                ax.bar(x, v, width * 0.92, color=col[m], label=None if labelled else titles.get(m, m),
                       yerr=err, capsize=4, error_kw={"elinewidth": 1.2, "ecolor": "#333333"})
                labelled = True
                hi = ci[1] if ci else v
                top = max(top, hi)
                ax.annotate(f"{v:.3f}", (x, hi), xytext=(0, 3), textcoords="offset points", ha="center",
                            va="bottom", fontsize=8.5, color="#222222")
        ax.set_xticks(range(len(benches)), benches)
        ax.set_ylabel("pass@1 (bars: 95% CI)")
        ax.set_ylim(0, accuracy_top([top + 0.02]))  # (+ room for the value labels)
        ax.grid(axis="x", visible=False)
        ax.set_title(heading)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _png(fig)


def training_curves(logs: dict[str, list[dict]]) -> bytes:
    """Loss (total, CE, KD) and learning rate against step, one line style per series, one color per run.

    logs: {label: [{"step": int, "loss": float, "ce"?: float, "kd"?: float, "learning_rate"?: float}, ...]}.
    """
    rc_context, Figure, MaxNLocator = _mpl()
    col = colors(list(logs))
    styles = {"loss": ("-", "total"), "ce": ("--", "CE"), "kd": (":", "KD")}
    with rc_context(STYLE):
        fig = Figure(figsize=(10, 3.4))
        ax_loss, ax_lr = fig.subplots(1, 2, width_ratios=[1.7, 1])
        for label, recs in logs.items():
            prefix = f"{label} " if len(logs) > 1 else ""
            for key, (ls, name) in styles.items():
                pts = [(r["step"], r[key]) for r in recs if r.get(key) is not None]
                if pts:
                    ax_loss.plot(*zip(*pts), ls, color=col[label], lw=1.8 if key == "loss" else 1.4,
                                 marker="o" if len(pts) <= 30 else None, ms=3, label=f"{prefix}{name}")
            lr = [(r["step"], r["learning_rate"]) for r in recs if r.get("learning_rate") is not None]
            if lr:
                ax_lr.plot(*zip(*lr), color=col[label], lw=1.6, label=label if len(logs) > 1 else None)
        ax_loss.set(xlabel="step", ylabel="loss", title="Training loss")
        for ax in (ax_loss, ax_lr):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_loss.legend()
        ax_lr.set(xlabel="step", ylabel="learning rate", title="Learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if len(logs) > 1 and ax_lr.get_legend_handles_labels()[0]:
            ax_lr.legend()
        fig.tight_layout()
        return _png(fig)


def length_histograms(lengths: dict[str, dict[str, list[int]]], titles: dict[str, str],
                      limit: int | None = None) -> bytes:
    """Completion-length histograms per benchmark (one panel each), models overlaid as step outlines.

    lengths: {benchmark: {model: [num_tokens per sample]}}; limit: max_new_tokens, drawn as a line.
    """
    rc_context, Figure, MaxNLocator = _mpl()
    benches = sorted(lengths)
    models = list(dict.fromkeys(m for b in benches for m in lengths[b]))
    col = colors(models)
    with rc_context(STYLE):
        fig = Figure(figsize=(min(4.2 * len(benches), 15), 3.0))
        axes = fig.subplots(1, len(benches), squeeze=False)[0]
        for ax, b in zip(axes, benches):
            values = [v for m in lengths[b] for v in lengths[b][m]]
            hi = max(max(values, default=1), limit or 0, 1)
            step = max(1, math.ceil(hi / 30))  # whole-token bins, at most about 30 of them
            bins = [i * step for i in range(hi // step + 2)]
            for m, vals in lengths[b].items():
                if vals:
                    ax.hist(vals, bins=bins, histtype="stepfilled", alpha=0.18, color=col[m])
                    ax.hist(vals, bins=bins, histtype="step", lw=1.6, color=col[m], label=titles.get(m, m))
            if limit:
                ax.axvline(limit, color="#555555", ls="--", lw=1)
                ax.annotate("max_new_tokens", (limit, 1), xycoords=("data", "axes fraction"), xytext=(-4, -4),
                            textcoords="offset points", ha="right", va="top", fontsize=8, color="#555555")
            ax.set(xlabel="completion tokens", ylabel="samples", title=f"Completion lengths: {b}")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(loc="upper left")
        fig.tight_layout()
        return _png(fig)


def funnel(steps: Sequence[tuple[str, int, int | None]]) -> bytes:
    """Curation funnel as horizontal bars: traces left after each filter, with the number each one dropped; the
    last bar (drawn in the accent color) is what was kept.

    steps: [(name, left, rejected or None for the first and the last row)], in filter order, then ("kept", n, None).
    """
    rc_context, Figure, MaxNLocator = _mpl()
    with rc_context(STYLE):
        fig = Figure(figsize=(5.6, 0.9 + 0.36 * len(steps)))
        ax = fig.add_subplot()
        n = len(steps)
        top = max((left for _, left, _ in steps), default=1) or 1
        for i, (_, left, rej) in enumerate(steps):
            y = n - 1 - i
            last = i == n - 1
            ax.barh(y, left, 0.66, color="#e07b39" if last else "#3b6ea5", alpha=1.0 if last or i == 0 else 0.75)
            note = f"{left}  (−{rej})" if rej else f"{left}"
            ax.annotate(note, (left, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=9)
        ax.set_yticks(range(n), [s[0] for s in reversed(steps)])
        ax.set_xlim(0, top * 1.18)
        ax.set_xlabel("traces left")
        ax.grid(axis="y", visible=False)
        ax.set_title("Curation funnel")
        return _png(fig)


def stage_times(times: Sequence[tuple[str, float]], rates: Sequence[tuple[str, str, float]]) -> bytes:
    """Wall time per stage, and tokens/s where a stage states one, as horizontal bars.

    times: [(stage, seconds)] in pipeline order; rates: [(stage, what is counted, tokens per second)].
    """
    rc_context, Figure, MaxNLocator = _mpl()
    panels = [p for p in (times, rates) if p]
    with rc_context(STYLE):
        fig = Figure(figsize=(5.2 * len(panels), 0.9 + 0.42 * max(len(times), len(rates))))
        axes = list(fig.subplots(1, len(panels), squeeze=False)[0])
        if times:
            ax = axes.pop(0)
            _hbars(ax, [t[0] for t in times], [t[1] for t in times], [duration(t[1]) for t in times], "#5f6b7a")
            ax.set(xlabel="wall time (s)", title="Wall time per stage")
        if rates:
            ax = axes.pop(0)
            _hbars(ax, [r[0] for r in rates], [r[2] for r in rates], [f"{r[2]:,.0f}" for r in rates], "#4a9d5b")
            ax.set(xlabel="tokens / s", title="Throughput")
            ax.annotate("; ".join(f"{r[0]}: {r[1]}" for r in rates), (0, -0.32), xycoords="axes fraction",
                        fontsize=8, color="#555555", va="top")
        fig.tight_layout()
        return _png(fig)


def _hbars(ax, names: list[str], values: list[float], notes: list[str], color: str) -> None:
    n = len(names)
    for i, (v, note) in enumerate(zip(values, notes)):
        ax.barh(n - 1 - i, v, 0.62, color=color)
        ax.annotate(note, (v, n - 1 - i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=9)
    ax.set_yticks(range(n), list(reversed(names)))
    ax.set_xlim(0, (max(values, default=1) or 1) * 1.3)
    ax.grid(axis="y", visible=False)


def duration(seconds: float) -> str:
    """Seconds as a short human duration: 12.3 s, 4 min 05 s, 2 h 03 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def variant_bars(rows: Sequence[dict], benches: Sequence[str]) -> bytes:
    """pass@1 of each student variant per benchmark, with 95% CI whiskers, on an axis from 0.

    rows: [{"name": str, "results": {benchmark: {"pass@1": float, "pass@1_ci95": [lo, hi] (optional)}}}].
    """
    rc_context, Figure, _ = _mpl()
    col = colors([r["name"] for r in rows])
    width = 0.8 / max(len(benches), 1)
    with rc_context(STYLE):
        fig = Figure(figsize=(max(6.0, 1.2 + 0.75 * len(rows) * len(benches)), 3.6))
        ax = fig.add_subplot()
        top = 0.0
        for j, b in enumerate(benches):
            for i, r in enumerate(rows):
                m = r["results"].get(b)
                if not m:
                    continue
                x = i + (j - (len(benches) - 1) / 2) * width
                v, ci = m["pass@1"], m.get("pass@1_ci95")
                ax.bar(x, v, width * 0.9, color=col[r["name"]], alpha=1.0 if j == 0 else 0.65,
                       yerr=[[v - ci[0]], [ci[1] - v]] if ci else None, capsize=4,
                       error_kw={"elinewidth": 1.2, "ecolor": "#333333"})
                hi = ci[1] if ci else v
                top = max(top, hi)
                ax.annotate(f"{v:.3f}", (x, hi), xytext=(0, 3), textcoords="offset points", ha="center",
                            va="bottom", fontsize=8.5, color="#222222")
        ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=20 if len(rows) > 6 else 0)
        ax.set_ylim(0, accuracy_top([top + 0.02]))
        ax.set_ylabel("pass@1 (bars: 95% CI)")
        ax.grid(axis="x", visible=False)
        ax.set_title("Student variants" + (f" ({', '.join(benches)}: solid, faded)" if len(benches) > 1
                                           else f" on {benches[0]}" if benches else ""))
        return _png(fig)


def accuracy_vs_bytes(points: Sequence[tuple[str, float, float, list[float] | None]], bench: str) -> bytes:
    """Student pass@1 against the bytes per token of teacher distribution its training read, one labelled point
    per variant with its 95% CI as a vertical whisker.

    points: [(variant name, bytes per token, pass@1, [lo, hi] or None)].
    """
    rc_context, Figure, _ = _mpl()
    col = colors([p[0] for p in points])
    with rc_context(STYLE):
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot()
        top = 0.0
        for name, x, v, ci in points:
            ax.errorbar([x], [v], yerr=[[v - ci[0]], [ci[1] - v]] if ci else None, fmt="o", ms=7, capsize=4,
                        color=col[name], ecolor="#555555", elinewidth=1.1)
            ax.annotate(name, (x, v), xytext=(6, 4), textcoords="offset points", fontsize=8.5, color="#222222")
            top = max(top, ci[1] if ci else v)
        ax.set_xlim(left=-0.05 * max((p[1] for p in points), default=1) - 1,
                    right=max((p[1] for p in points), default=1) * 1.25 + 1)
        ax.set_ylim(0, accuracy_top([top + 0.02]))
        ax.set(xlabel="teacher distribution stored, bytes per token (0 = SFT)", ylabel=f"pass@1 on {bench}",
               title="Accuracy against stored bytes per token")
        return _png(fig)


def figures(data: dict) -> dict[str, bytes]:
    """PNG bytes per figure name, for the sections that have data."""
    from r1distill.report import compare

    figs = {}
    ev = data["eval"]
    if ev:
        results = {m: {b: r for b, r in res.items() if not b.startswith("_") and "pass@1" in r}
                   for m, res in ev.items()}
        figs["accuracy"] = accuracy_bars(results, {m: title(m) for m in results})
    rows = compare.rows(data)
    if rows:
        benches = compare.benchmarks(data)
        figs["variants"] = variant_bars([{"name": r["name"], "results": r["results"]} for r in rows], benches)
        points = [(r["name"], r["bytes_per_token"], r["results"][benches[0]]["pass@1"],
                   r["results"][benches[0]].get("pass@1_ci95")) for r in rows
                  if r["bytes_per_token"] is not None and benches and benches[0] in r["results"]]
        if points:
            figs["bytes"] = accuracy_vs_bytes(points, benches[0])
    logs = {label: t["steps"] for label, t in data["train"].items() if t["steps"]}
    if logs:
        figs["training"] = training_curves(logs)
    if data["lengths"]:
        limit = (data["eval_config"] or {}).get("max_new_tokens")
        figs["lengths"] = length_histograms(data["lengths"], {m: title(m) for b in data["lengths"]
                                                              for m in data["lengths"][b]}, limit)
    steps = funnel_steps(data["curate"])
    if steps:
        kept = [("kept", data["curate"]["kept"], None)] if "kept" in data["curate"] else []
        figs["funnel"] = funnel([(s["step"], s["left"], s.get("rejected")) for s in steps] + kept)
    times = [(name, m["seconds"]) for name, m in data["stages"].items() if m and "seconds" in m]
    rates = [(name, label, value) for name, label, value in rates_of(data) if value is not None]
    if times or rates:
        figs["stages"] = stage_times(times, rates)
    return figs


def rates_of(data: dict) -> list[tuple[str, str, float | None]]:
    """(stage, what, tokens/s) as the stages' summaries state them."""
    out = [("generate", "tokens/s generating", (data["generate"] or {}).get("new_tokens_per_s"))]
    for stage, d in data["dirs"].items():
        if stage.split(":")[0] == "train":
            t = next((t for t in data["train"].values() if t["dir"] == d), None)
            out.append((stage, "completion tokens/s", ((t or {}).get("summary") or {}).get("completion_tokens_per_s")))
    return out
