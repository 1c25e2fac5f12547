"""Report figures: matplotlib charts of a run's numbers, each returned as PNG bytes.

The functions take values that `report.py` has already read from the stage outputs and only draw them:
nothing here computes a metric. Figures are built with `matplotlib.figure.Figure` (the Agg canvas), not
pyplot, so drawing a report never touches a user's interactive backend or global figure state.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# One color per model label across every figure; the usual three first, others from a qualitative palette.
FIXED_COLORS = {"teacher": "#3b6ea5", "student_init": "#a9a9a9", "student": "#e07b39"}
PALETTE = ("#4a9d5b", "#8e6bb5", "#c44e52", "#3fa7b5", "#b8860b", "#d16ba5", "#6b8e23", "#5f6b7a")
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.labelsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e6e6e6",
    "grid.linewidth": 0.8, "axes.axisbelow": True, "legend.frameon": False, "figure.dpi": 100,
    "savefig.dpi": 150, "axes.edgecolor": "#888888", "xtick.color": "#444444", "ytick.color": "#444444",
}


def colors(labels: Sequence[str]) -> dict[str, str]:
    """A stable color per label: fixed for teacher/student_init/student, palette order for the rest."""
    out, i = {}, 0
    for label in labels:
        if label in FIXED_COLORS:
            out[label] = FIXED_COLORS[label]
        else:
            out[label] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def accuracy_bars(results: dict[str, dict[str, dict]], titles: dict[str, str]) -> bytes:
    """Grouped bars of pass@1 per benchmark (one bar per model) with the 95% CI as error bars.

    results: {model: {benchmark: {"pass@1": float, "pass@1_ci95": [lo, hi] (optional)}}}.
    """
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
        # Headroom for the value labels; small accuracies get a readable scale rather than a flat 0..1 axis.
        ax.set_ylim(0, min(1.0, top) * 1.18 if top > 0.05 else 0.06)
        ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= 1.0])
        ax.grid(axis="x", visible=False)
        ax.set_title("Accuracy per model and benchmark")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _png(fig)


def training_curves(logs: dict[str, list[dict]]) -> bytes:
    """Loss (total, CE, KD) and learning rate against step, one line style per series, one color per run.

    logs: {label: [{"step": int, "loss": float, "ce"?: float, "kd"?: float, "learning_rate"?: float}, ...]}.
    """
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
        if len(logs) > 1:
            ax_lr.legend()
        fig.tight_layout()
        return _png(fig)


def length_histograms(lengths: dict[str, dict[str, list[int]]], titles: dict[str, str],
                      limit: int | None = None) -> bytes:
    """Completion-length histograms per benchmark (one panel each), models overlaid as step outlines.

    lengths: {benchmark: {model: [num_tokens per sample]}}; limit: max_new_tokens, drawn as a line.
    """
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
    """Curation funnel as horizontal bars: traces left after each filter, with the number each one dropped.

    steps: [(name, left, rejected or None for the first row)], in filter order.
    """
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
