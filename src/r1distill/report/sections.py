"""The report's sections as blocks (see blocks.py), accuracy first, and the header's facts.

Every number is read from the stages' own outputs (collect.py) and shown as written there; the only numbers
computed here are the comparison's paired differences and the takeaway's recovery ratio (stats.py). In the HTML
each read number carries `data-metric` (its JSON path: source, then keys) and `data-value` (the value as read), so
a test can check the page against the files.
"""

from __future__ import annotations

from typing import Any

from r1distill import layout
from r1distill.report import accuracy, compare
from r1distill.report import blocks as B
from r1distill.report.collect import versions
from r1distill.tables import title

LOG_ROWS = 12  # training-log steps shown per student (first, last and evenly spaced between)
LOG_ROWS_MANY = 6  # the same with more than two students


def sections(data: dict, figs: dict[str, bytes]) -> list[tuple[str, str, list[dict]]]:
    """(id, title, blocks) per section, accuracy first; the comparison only when the run has student variants."""
    out = [("accuracy", "Accuracy", accuracy.section(data, figs))]
    comparison = compare.section(data, figs)
    if comparison:
        out.append(("comparison", "Student variants compared", comparison))
    if data["eval"]:
        out.append(("examples", "Examples", accuracy.examples(data)))
    return out + [
        ("lengths", "Completion lengths", _lengths(data, figs)),
        ("training", "Training", _training(data, figs)),
        ("generation", "Imported traces" if data.get("import") else "Generation", _generation(data)),
        ("curation", "Curation", _curation(data, figs)),
        ("stages", "Time per stage", _stages(data, figs)),
    ]


def _training(data: dict, figs: dict) -> list[dict]:
    if not data["train"]:
        where = data["dirs"].get("train", data["run"] / "students")
        return [B.note(f"No training outputs ({where} has no summary.json or train_log.jsonl).")]
    rows = []
    for label, t in data["train"].items():
        s = t["summary"] or {}
        rate = s.get("completion_tokens_per_s", (t["final"] or {}).get("tokens_per_s"))
        rate_path = ("train", label, "completion_tokens_per_s") if "completion_tokens_per_s" in s else ()
        rows.append([[label], [B.f(s.get("objective"), "{}", "train", label, "objective")],
                     [B.f(s.get("rows"), "{}", "train", label, "rows")],
                     [B.f(s.get("steps"), "{}", "train", label, "steps")],
                     [B.f(s.get("train_loss"), "{:.4f}", "train", label, "train_loss")],
                     [B.f(s.get("seconds"), "{:.1f}", "train", label, "seconds")],
                     [B.Num(f"{rate:.0f}" if rate is not None else "—", rate_path, rate)]])
    blocks = [B.table(["student", "objective", "traces", "steps", "mean loss", "seconds", "completion tokens/s"],
                      rows)]
    if "training" in figs:
        blocks.append(B.figure("training", "training loss (total, CE, KD) and learning rate against step"))
    most = LOG_ROWS if len(data["train"]) <= 2 else LOG_ROWS_MANY
    for label, t in data["train"].items():
        steps = t["steps"]
        if not steps:
            continue
        keys = [k for k in ("epoch", "loss", "ce", "kd", "learning_rate", "grad_norm", "tokens_per_s")
                if any(k in r for r in steps)]
        fmt = {"epoch": "{:.2f}", "learning_rate": "{:.2e}", "tokens_per_s": "{:.0f}"}
        pick = sorted({round(i * (len(steps) - 1) / (most - 1)) for i in range(most)}) \
            if len(steps) > most else range(len(steps))
        rows = [[[B.f(steps[i]["step"], "{}", "train_log", label, steps[i]["step"], "step")]]
                + [[B.f(steps[i].get(k), fmt.get(k, "{:.4f}"), "train_log", label, steps[i]["step"], k)] for k in keys]
                for i in pick]
        shown = f"{len(rows)} of {len(steps)} logged steps" if len(steps) > len(rows) else f"all {len(steps)} steps"
        blocks.append(B.para(f"Training log of `{label}` ({shown}, from {label}/train_log.jsonl):"))
        blocks.append(B.table(["step", *keys], rows))
    return blocks


def _lengths(data: dict, figs: dict) -> list[dict]:
    ev = data["eval"]
    if not ev:
        return [B.note("No eval results, so no completion lengths.")]
    blocks = [B.figure("lengths", "completion-length histograms per benchmark, models overlaid")] \
        if "lengths" in figs else [B.note("No per-sample eval files (eval/<model>/<benchmark>.jsonl) found.")]
    rows = []
    for model, res in ev.items():
        for b, r in res.items():
            if b.startswith("_"):
                continue
            rows.append([[title(model)], [b]] + [
                [B.f(r.get(k), f, "eval", model, b, k)] for k, f in
                (("mean_tokens", "{:.1f}"), ("tokens_p50", "{}"), ("tokens_p90", "{}"), ("truncated", "{:.3f}"))])
    return blocks + [B.table(["model", "benchmark", "mean tokens", "p50", "p90", "truncated"], rows)]


def _curation(data: dict, figs: dict) -> list[dict]:
    st = data["curate"]
    if not st:
        return [B.note(f"No curation stats ({data['dirs']['curate'] / layout.CURATE_STATS} not found).")]
    fig = [B.figure("funnel", "curation funnel: traces left after each filter, then kept")] if "funnel" in figs \
        else []
    rows = [[[s["step"]], [B.f(s.get("rejected"), "{}", "curate", "funnel", i, "rejected") if "rejected" in s
                           else ""], [B.f(s["left"], "{}", "curate", "funnel", i, "left")]]
            for i, s in enumerate(st["funnel"])]
    rows.append([["kept"], [""], [B.f(st["kept"], "{}", "curate", "kept")]])
    blocks = [B.table(["filter", "rejected", "left"], rows)]
    rate = B.f(st.get("teacher_pass_rate"), "{:.3f}", "curate", "teacher_pass_rate")
    problems = B.f(st.get("problems"), "{}", "curate", "problems")
    blocks.append(B.para("Teacher pass rate ", rate, " (mean over ", problems, " problems); problems with a kept "
                         "trace: ", B.f(st.get("problems_kept"), "{}", "curate", "problems_kept"), "."))
    if "tokens_all" in st:
        rows = [[[which]] + [[B.f(st[f"tokens_{which}"].get(k), "{:.1f}" if k == "mean" else "{}", "curate",
                                  f"tokens_{which}", k)] for k in ("mean", "p50", "p90", "max")]
                for which in ("all", "kept")]
        blocks.append(B.table(["trace tokens", "mean", "p50", "p90", "max"], rows))
    return B.row(fig, blocks)


def _imported(data: dict) -> list[dict]:
    """The traces' section of a run that imported them (and scored them with a teacher)."""
    i, sc = data.get("import") or {}, data.get("score") or {}
    items = [("import", "traces", "rows", "{}"), ("import", "problems", "problems", "{}"),
             ("import", "source rows", "source_rows", "{}"), ("import", "completion tokens", "total_tokens", "{}"),
             ("score", "traces scored", "rows", "{}"), ("score", "tokens scored", "tokens", "{}"),
             ("score", "scoring tokens/s", "tokens_per_s", "{:.1f}")]
    rows = [[[name], [B.f(src[key], fmt, stage, key)]] for stage, name, key, fmt in items
            if key in (src := i if stage == "import" else sc)]
    for reason, n in (i.get("finish_reasons") or {}).items():
        rows.append([[f"finish reason: {reason}"], [B.f(n, "{}", "import", "finish_reasons", reason)]])
    for kind, n in (i.get("skipped") or {}).items():
        rows.append([[f"bad rows skipped: {kind}"], [B.f(n, "{}", "import", "skipped", kind)]])
    ic = data["configs"].get("import") or {}
    srcs = ic.get("sources") or [ic.get("source") or {}]
    who = [B.para("Imported from " + ", ".join(f"{s.get('path')} ({s.get('format', 'columns')})" for s in srcs)
                  + (f"; scored by {sc['teacher']} on the {sc.get('backend')} backend, top-{sc.get('topk_logprobs')}"
                     if sc.get("teacher") else "") + ".")]
    return who + [B.table(["", "value"], rows)]


def _generation(data: dict) -> list[dict]:
    if data.get("import"):
        return _imported(data)
    g = data["generate"]
    if not g:
        return [B.note(f"No generation summary ({data['dirs']['generate'] / layout.SUMMARY} not found).")]
    items = [("traces", "rows", "{}"), ("problems", "problems", "{}"), ("completion tokens", "total_tokens", "{}"),
             ("tokens generated this session", "new_tokens", "{}"), ("session seconds", "seconds", "{:.1f}"),
             ("generation tokens/s", "new_tokens_per_s", "{:.1f}"),
             ("bytes per token on disk", "bytes_per_token", "{:.1f}"),
             ("of which top-k", "topk_bytes_per_token", "{:.1f}")]
    rows = [[[name], [B.f(g[key], fmt, "generate", key)]] for name, key, fmt in items if key in g]
    for reason, n in (g.get("finish_reasons") or {}).items():
        rows.append([[f"finish reason: {reason}"], [B.f(n, "{}", "generate", "finish_reasons", reason)]])
    for reason, n in (g.get("skipped") or {}).items():
        rows.append([[f"skipped: {reason}"], [B.f(n, "{}", "generate", "skipped", reason)]])
    gc = data["configs"].get("generate") or {}
    who = [B.para(f"Teacher {gc['teacher']} on the {gc.get('backend', 'hf')} backend, {gc.get('num_samples')} "
                  f"samples per problem, up to {gc.get('max_new_tokens')} new tokens, top-{gc.get('topk_logprobs')} "
                  "log-probs stored (from traces/config.yaml).")] if gc.get("teacher") else []
    return who + [B.table(["", "value"], rows)]


def _stages(data: dict, figs: dict) -> list[dict]:
    rows = []
    for name, marker in data["stages"].items():
        kind = name.split(":")[0]
        if kind == "train":
            label = next((lb for lb, t in data["train"].items() if t["dir"] == data["dirs"][name]), None)
            src, pre = ((data["train"].get(label) or {}).get("summary"), ("train", label))
            rate_key, rate_name = "completion_tokens_per_s", "completion tokens/s"
        else:
            src, pre = {"generate": data["generate"], "curate": data["curate"], "import": data.get("import"),
                         "score": data.get("score")}.get(kind), (kind,)
            rate_key, rate_name = ("new_tokens_per_s", "tokens/s generating") if kind == "generate" else (None, "")
        wall = [B.f(marker["seconds"], "{:.1f}", "stage", name, "seconds")] if marker and "seconds" in marker \
            else ["not run by `run`" if not marker else "—"]
        inner = [B.f(src["seconds"], "{:.1f}", *pre, "seconds")] if src and "seconds" in src else ["—"]
        rate = [B.f(src[rate_key], "{:.0f}", *pre, rate_key), f" {rate_name}"] if src and rate_key in src else ["—"]
        if name == "eval" and data["eval"]:
            inner = [p for m, res in data["eval"].items() if "_seconds" in res
                     for p in (f"{m} ", B.f(res["_seconds"], "{:.1f}", "eval", m, "_seconds"), "; ")][:-1] or ["—"]
        rows.append([[name], wall, inner, rate])
    fig = [B.figure("stages", "wall time per stage")] if "stages" in figs else []
    return [B.table(["stage", "wall seconds (run)", "seconds (stage summary)", "throughput"], rows), *fig,
            B.para("Wall seconds come from `run`'s record in each stage's stamp, written by the `run` that made the "
                   "stage's outputs; stage seconds from the stage's own summary (for eval: per model, model load "
                   "included).")]


# ---- header --------------------------------------------------------------------------------------
def header(data: dict) -> dict:
    meta = data["meta"] or {}
    h: dict[str, Any] = {"run": str(data["run"]), "command": meta.get("command"), "cwd": meta.get("cwd"),
                         "started": meta.get("started"), "finished": meta.get("finished"),
                         "status": meta.get("status"), "seconds": meta.get("seconds")}
    h["versions"] = meta.get("versions") or versions()
    h["versions_note"] = "" if meta.get("versions") else " (at report time: this run dir has no run.json)"
    h["hardware"] = meta.get("hardware")
    h["what"] = what(meta.get("resolved") or data["configs"])
    skipped = [n for n, st in (meta.get("stages") or {}).items() if isinstance(st, dict) and st.get("skipped")]
    h["skipped"] = f" (skipped {', '.join(skipped)}: done by an earlier run)" if skipped else ""
    h["recipe"] = meta.get("recipe")
    h["resolved"] = meta.get("resolved") or {k: v for k, v in data["configs"].items() if v}
    return h


def what(configs: dict) -> str:
    """One line on who taught whom, from the resolved configs: teacher -> student, objective (or the variants)."""
    variants = [n.split(":", 1)[1] for n in configs if n.startswith("train:")]
    train = configs.get("train") or (configs.get(f"train:{variants[0]}") if variants else None) or {}
    gen = configs.get("generate") or {}
    teacher = gen.get("teacher") or train.get("teacher")
    st = train.get("student") or {}
    if st.get("name"):
        student = st["name"]
    elif st.get("derive_from"):
        n = len(st.get("layers") or []) or st.get("num_layers")
        student = f"{n} layers derived from {'the teacher' if st['derive_from'] == 'teacher' else st['derive_from']}"
    else:
        student = None
    parts = [f"teacher {teacher}" if teacher else "", f"student {student}" if student and not variants else "",
             f"objective {train['objective']}" if train.get("objective") and not variants else "",
             f"{len(variants)} student variants: {', '.join(variants)}" if variants else ""]
    return " · ".join(p for p in parts if p)
