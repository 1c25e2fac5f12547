"""The Markdown the stages write beside their outputs, kept out of the stages: the accuracy table's cells (shared
by the eval stage's results.md and the report), readable model names, and curate's funnel (stats.md).

The eval stage writes its results.md with `results_markdown` and `skipped_notes`; the report builds its tables
from `results_table`, whose cells carry each number's key path so the HTML can tag it. Outside the report
package and importing nothing of r1distill, so a stage writes its Markdown without loading the report.
"""

from __future__ import annotations

MODEL_TITLES = {"teacher": "teacher", "student_init": "student before training", "student": "student after training"}


def title(label: str) -> str:
    """A readable name for an eval label: `student:kd` is "student kd", `student_init:deep` is "student deep before
    training"; any other label (a model name or path) is shown as it is."""
    if label in MODEL_TITLES:
        return MODEL_TITLES[label]
    kind, _, name = label.partition(":")
    if name and kind == "student":
        return f"student {name}"
    if name and kind == "student_init":
        return f"student {name} before training"
    return label


def accuracy_table(summary: dict) -> str:
    """The eval summary as a Markdown table with readable model names (the eval stage's own table builder)."""
    return results_markdown(summary, {m: title(m) for m in summary}, answered=True)


def skipped_notes(summary: dict) -> str:
    """Lines under the results table naming what each benchmark left out of its scores."""
    lines = []
    for model, res in summary.items():
        for bench, m in res.items():
            if bench.startswith("_") or not m.get("skipped"):
                continue
            ids = m.get("skipped_ids", {}).get("prompt_too_long", [])
            named = f" (too long: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''})" if ids else ""
            counts = ", ".join(f"{n} {why}" for why, n in m["skipped"].items())
            lines.append(f"- {model} on {bench}: not scored: {counts}{named}")
    return ("\nSkipped problems (not in the scores):\n" + "\n".join(lines) + "\n") if lines else ""


Cell = list[tuple[str, tuple, object]]  # parts of one table cell: (text, key path in the benchmark's metrics, value)


def results_table(summary: dict, titles: dict[str, str] | None = None,
                  answered: bool = False) -> tuple[list[str], list[list[Cell]]]:
    """The accuracy table as data, one row per model; per benchmark: pass@1 with its 95% CI, maj@k, the share
    of outputs that state an answer (with ``answered``) and mean tokens. Shared by ``results_markdown`` and the
    report's HTML, which tags every number with its key path so a test can check it against summary.json.

    The maj@k header names k when every model drew the same number of samples on that benchmark. Summaries
    written before a metric existed (no CI, no k) get the cells they can fill.
    """
    benches = sorted({b for m in summary.values() for b in m if not b.startswith("_")})
    cols = ["pass@1", "maj@k", *(["answered"] if answered else []), "mean_tokens"]
    head = ["model"]
    for b in benches:
        ks = {res[b].get("k") for res in summary.values() if b in res}
        k = ks.pop() if len(ks) == 1 else None
        names = {"pass@1": "pass@1 [95% CI]", "maj@k": f"maj@{k or 'k'}", "answered": "answered",
                 "mean_tokens": "mean tokens"}
        head += [f"{b} {names[c]}" for c in cols]
    rows = []
    for model, res in summary.items():
        row: list[Cell] = [[((titles or {}).get(model, model), (), None)]]
        for b in benches:
            r = res.get(b) or {}
            for c in cols:
                if c not in r:
                    row.append([])
                elif c == "mean_tokens":
                    row.append([(f"{r[c]:.0f}", (c,), r[c])])
                elif c == "pass@1" and "pass@1_ci95" in r:
                    lo, hi = r["pass@1_ci95"]
                    row.append([(f"{r[c]:.3f}", (c,), r[c]), (" [", (), None), (f"{lo:.3f}", ("pass@1_ci95", 0), lo),
                                (", ", (), None), (f"{hi:.3f}", ("pass@1_ci95", 1), hi), ("]", (), None)])
                else:
                    row.append([(f"{r[c]:.3f}", (c,), r[c])])
        rows.append(row)
    return head, rows


def results_markdown(summary: dict, titles: dict[str, str] | None = None, answered: bool = False) -> str:
    """``results_table`` as a Markdown table."""
    head, rows = results_table(summary, titles, answered)
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines += ["| " + " | ".join("".join(text for text, _, _ in cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def funnel_markdown(stats: dict) -> str:
    """curate's stats.md: the funnel, the teacher's pass rates, token counts, decontamination (curate's stats.json)."""
    lines = ["| step | rejected | left |", "|---|---:|---:|"]
    unchecked = "decontamination_checked" in stats and not stats["decontamination_checked"]
    for step in stats["funnel"]:
        name = step["step"]
        rejected = "" if name == "generated" else step["rejected"]
        if name == "contaminated" and unchecked:
            rejected = "skipped"  # no benchmark could be loaded: 0 would claim a check that did not happen
        lines.append(f"| {name} | {rejected} | {step['left']} |")
    lines.append(f"| **kept** | | **{stats['kept']}** |")
    lines += ["", f"Teacher pass rate (mean over {stats['problems']} problems): {stats['teacher_pass_rate']:.3f}; "
              f"problems with a kept trace: {stats['problems_kept']}.", "",
              "| pass rate | " + " | ".join(f"{i / 10:.1f}" for i in range(10)) + " |",
              "|---|" + "---:|" * 10, "| problems | " + " | ".join(map(str, stats["pass_rate_histogram"])) + " |",
              "", "| tokens | mean | p50 | p90 | max |", "|---|---:|---:|---:|---:|"]
    for which in ("all", "kept"):
        d = stats[f"tokens_{which}"]
        lines.append(f"| {which} | {d['mean']:.1f} | {d['p50']} | {d['p90']} | {d['max']} |")
    if stats.get("contamination"):
        shown = lambda ids: ", ".join(ids[:10]) + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")
        lines += ["", "Contaminated problems matched benchmark items: " + "; ".join(
            f"{b}: {shown(ids)}" for b, ids in stats["contamination"].items()) + "."]
    if stats.get("decontamination_skipped"):
        lines += ["", "Decontamination skipped (could not be loaded): " + ", ".join(stats["decontamination_skipped"])
                  + "; checked: " + (", ".join(stats.get("decontamination_checked") or []) or "none") + "."]
    if stats.get("verify_timeouts"):
        lines += ["", f"Verifier timeouts (counted incorrect): {stats['verify_timeouts']}."]
    return "\n".join(lines) + "\n"
