"""Run dir -> `report.html` (one self-contained file) and `report.md` (+ `report_files/*.png`).

Every number is read from the stages' own outputs and shown as written there; nothing is recomputed:
`run.json` (written by `run`: command, recipe, versions, times), `eval/summary.json` and the per-sample
`eval/<model>/<bench>.jsonl` (lengths), `traces/summary.json`, `curated/stats.json`, each trained
student's `summary.json` and `train_log.jsonl`, and the `.r1distill_done.json` markers (wall time per stage).
Any of them may be missing (a run still going, stages run one by one, an older run): its section then says
what is missing instead. In the HTML each number carries `data-metric` (its JSON path: source, then keys)
and `data-value` (the value as read), so a test can check the page against the files.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import struct
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from r1distill.config import LAYOUT, read_resolved

MODEL_TITLES = {"teacher": "teacher", "student_init": "student before training", "student": "student after training"}
VERSION_PACKAGES = ("r1distill", "torch", "transformers", "trl", "datasets", "peft", "accelerate", "vllm",
                    "math-verify")
MARKER = ".r1distill_done.json"
# pipeline stage -> its default dir in the run dir (run.json may name others)
STAGE_DIRS = {"generate": LAYOUT["traces"], "curate": LAYOUT["curated"], "train": LAYOUT["student"],
              "eval": LAYOUT["eval"]}
LOG_ROWS = 12  # training-log steps shown in the table (first, last and evenly spaced between)


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
    import os

    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


# ---- reading -------------------------------------------------------------------------------------
def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_train_log(path: Path) -> tuple[list[dict], dict | None]:
    """(logging-step records, final summary record) of a train_log.jsonl.

    Two formats: one record per logging step (`step, epoch, loss, ce, kd, learning_rate, tokens_per_s`) with an
    optional last `"summary": true` record, or raw `trainer.state.log_history` lines, whose last line holds
    `train_runtime`/`train_loss` instead of `loss`.
    """
    steps, final = [], None
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return [], None
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            break  # a line cut by a kill
        if rec.get("summary") or "train_runtime" in rec:
            final = rec
        elif "loss" in rec and "step" in rec:
            steps.append(rec)
    return steps, final


def _jsonl_tokens(path: Path) -> list[int]:
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line)["num_tokens"])
        except (ValueError, KeyError):
            break
    return out


def collect(run_dir: str | Path) -> dict:
    """Everything the report shows, read from the run dir (missing files give None / empty entries)."""
    run = Path(run_dir)
    meta = _json(run / "run.json")
    dirs = dict(STAGE_DIRS)
    for name, st in ((meta or {}).get("stages") or {}).items():
        if isinstance(st, dict) and st.get("out"):
            dirs[name] = st["out"]
    path = {name: (run / d) for name, d in dirs.items()}  # absolute `out`s stay absolute under `/`
    data: dict[str, Any] = {"run": run, "meta": meta, "dirs": path}
    data["eval"] = _json(path["eval"] / "summary.json")
    data["eval_config"] = read_resolved(path["eval"] / "config.yaml", "eval")
    data["lengths"] = {}
    for model, res in (data["eval"] or {}).items():
        for bench in res:
            if not bench.startswith("_"):
                toks = _jsonl_tokens(path["eval"] / model.replace("/", "_") / f"{bench}.jsonl")
                if toks:
                    data["lengths"].setdefault(bench, {})[model] = toks
    data["generate"] = _json(path["generate"] / "summary.json")
    data["curate"] = _json(path["curate"] / "stats.json")
    # Every trained student in the run dir: the train stage's own dir first, then others (e.g. an SFT-only one).
    # (students a rerun moved aside, `student.old-<stamp>`, are old results, not other students)
    train_dirs = [path["train"]] + sorted(p.parent for p in run.glob("*/train_log.jsonl")
                                          if p.parent != path["train"] and ".old-" not in p.parent.name)
    data["train"] = {}
    for d in train_dirs:
        summary = _json(d / "summary.json")
        steps, final = read_train_log(d / "train_log.jsonl")
        if summary or steps:
            data["train"][d.name] = {"dir": d, "summary": summary, "steps": steps, "final": final}
    data["stages"] = {name: _json(p / MARKER) for name, p in path.items()}
    data["configs"] = {name: read_resolved(p / ("r1distill_train_config.yaml" if name == "train" else "config.yaml"),
                                           name) for name, p in path.items()}
    return data


# ---- figures -------------------------------------------------------------------------------------
def figures(data: dict) -> dict[str, bytes]:
    """PNG bytes per figure name, for the sections that have data."""
    from r1distill import plots

    figs = {}
    ev = data["eval"]
    if ev:
        results = {m: {b: r for b, r in res.items() if not b.startswith("_") and "pass@1" in r}
                   for m, res in ev.items()}
        figs["accuracy"] = plots.accuracy_bars(results, MODEL_TITLES)
    logs = {label: t["steps"] for label, t in data["train"].items() if t["steps"]}
    if logs:
        figs["training"] = plots.training_curves(logs)
    if data["lengths"]:
        limit = (data["eval_config"] or {}).get("max_new_tokens")
        figs["lengths"] = plots.length_histograms(data["lengths"], MODEL_TITLES, limit)
    steps = _funnel(data["curate"])
    if steps:
        figs["funnel"] = plots.funnel([(s["step"], s["left"], s.get("rejected")) for s in steps])
    times = [(name, m["seconds"]) for name, m in data["stages"].items() if m and "seconds" in m]
    rates = [(name, label, value) for name, label, value in _rates(data) if value is not None]
    if times or rates:
        figs["stages"] = plots.stage_times(times, rates)
    return figs


def _rates(data: dict) -> list[tuple[str, str, float | None]]:
    """(stage, what, tokens/s) as the stages' summaries state them."""
    train = (data["train"].get(data["dirs"]["train"].name) or {}).get("summary") or {}
    return [("generate", "tokens/s generating", (data["generate"] or {}).get("new_tokens_per_s")),
            ("train", "completion tokens/s", train.get("completion_tokens_per_s"))]


def _funnel(stats: dict | None) -> list[dict]:
    """The funnel as stats.json wrote it; older stats (no `funnel`) give one row per nonzero reject count."""
    if not stats:
        return []
    if stats.get("funnel"):
        return stats["funnel"]
    steps, left = [{"step": "generated", "left": stats["total"]}], stats["total"]
    for reason, n in (stats.get("rejected") or {}).items():
        if n:
            left -= n
            steps.append({"step": reason, "rejected": n, "left": left})
    return steps


# ---- rendering: one list of blocks, written as Markdown and as HTML --------------------------------
class Num:
    """A number in the report: its text, and where it was read from (source, keys) with the value read."""

    def __init__(self, text: str, path: tuple = (), value: Any = None):
        self.text, self.path, self.value = text, path, value

    def md(self) -> str:
        return self.text

    def html(self) -> str:
        if not self.path:
            return html.escape(self.text)
        return (f'<span data-metric="{html.escape(json.dumps(list(self.path)))}" '
                f'data-value="{html.escape(json.dumps(self.value))}">{html.escape(self.text)}</span>')


Cell = list  # of str | Num


def _cell_md(cell: Cell) -> str:
    return "".join(p.md() if isinstance(p, Num) else str(p) for p in cell)


def _cell_html(cell: Cell) -> str:
    return "".join(p.html() if isinstance(p, Num) else html.escape(str(p)) for p in cell)


def _f(value: Any, fmt: str, *path) -> Num:
    if value is None:
        return Num("—")  # missing from the source: nothing to tag
    return Num(fmt.format(value) if isinstance(value, (int, float)) else str(value), tuple(path), value)


def _table(head: list[str], rows: list[list[Cell]], groups: list[tuple[str, int]] = ()) -> dict:
    """groups: (label, columns spanned) for a header row above `head` in the HTML (e.g. one per benchmark)."""
    return {"kind": "table", "head": head, "rows": rows, "groups": list(groups)}


def _para(*parts) -> dict:
    return {"kind": "p", "parts": list(parts)}


def _note(text: str) -> dict:
    return {"kind": "note", "text": text}


def _figure(name: str, alt: str) -> dict:
    return {"kind": "figure", "name": name, "alt": alt}


def _row(*cols: list[dict]) -> list[dict]:
    """Blocks shown side by side in the HTML (one after another in Markdown); empty columns are dropped."""
    cols = tuple(c for c in cols if c)
    return [{"kind": "row", "cols": cols}] if len(cols) > 1 else [b for c in cols for b in c]


def _sections(data: dict, figs: dict[str, bytes]) -> list[tuple[str, str, list[dict]]]:
    """(id, title, blocks) per section, accuracy first."""
    return [
        ("accuracy", "Accuracy", _accuracy(data, figs)),
        ("lengths", "Completion lengths", _lengths(data, figs)),
        ("training", "Training", _training(data, figs)),
        ("generation", "Generation", _generation(data)),
        ("curation", "Curation", _curation(data, figs)),
        ("stages", "Time per stage", _stages(data, figs)),
    ]


def _accuracy(data: dict, figs: dict) -> list[dict]:
    from r1distill.evaluate import results_table

    ev = data["eval"]
    if not ev:
        return [_note(f"No eval results ({data['dirs']['eval'] / 'summary.json'} not found): "
                      "run `r1distill eval` on this run dir.")]
    head, rows = results_table(ev, answered=True)
    benches = sorted({b for res in ev.values() for b in res if not b.startswith("_")})
    per = (len(head) - 1) // max(len(benches), 1)  # columns per benchmark, in results_table's order
    cells = []
    for model, row in zip(ev, rows):
        out = [[MODEL_TITLES.get(model, model)]]
        for j, cell in enumerate(row[1:]):
            out.append([Num(t, ("eval", model, benches[j // per], *k), v) if k else t for t, k, v in cell])
        cells.append(out)
    alt = "pass@1 per model and benchmark with 95% confidence intervals"
    blocks = [_figure("accuracy", alt)] if "accuracy" in figs else []
    blocks.append(_table(head, cells, [("", 1)] + [(b, per) for b in benches]))
    per_bench = {b: r for res in ev.values() for b, r in res.items() if not b.startswith("_")}
    sizes = []
    for model, res in ev.items():
        for b, r in res.items():
            if not b.startswith("_") and per_bench.get(b) is r:
                sizes += [f"{b}: ", _f(r.get("problems"), "{}", "eval", model, b, "problems"), " problems × k = ",
                          _f(r.get("k"), "{}", "eval", model, b, "k"), "; "]
    blocks.append(_para("pass@1 is the mean correctness over the k samples of each problem, with a bootstrap 95% "
                        "confidence interval over problems; maj@k is a majority vote over the extracted answers; "
                        "answered is the share of outputs that state a final answer. ", *sizes[:-1]))
    return blocks


def _training(data: dict, figs: dict) -> list[dict]:
    if not data["train"]:
        return [_note(f"No training outputs ({data['dirs']['train']} has no summary.json or train_log.jsonl).")]
    blocks = []
    rows = []
    for label, t in data["train"].items():
        s = t["summary"] or {}
        rate = s.get("completion_tokens_per_s", (t["final"] or {}).get("tokens_per_s"))
        rate_path = ("train", label, "completion_tokens_per_s") if "completion_tokens_per_s" in s else ()
        rows.append([[label], [_f(s.get("objective"), "{}", "train", label, "objective")],
                     [_f(s.get("rows"), "{}", "train", label, "rows")],
                     [_f(s.get("steps"), "{}", "train", label, "steps")],
                     [_f(s.get("train_loss"), "{:.4f}", "train", label, "train_loss")],
                     [_f(s.get("seconds"), "{:.1f}", "train", label, "seconds")],
                     [Num(f"{rate:.0f}" if rate is not None else "—", rate_path, rate)]])
    blocks.append(_table(["student", "objective", "traces", "steps", "mean loss", "seconds",
                          "completion tokens/s"], rows))
    if "training" in figs:
        blocks.append(_figure("training", "training loss (total, CE, KD) and learning rate against step"))
    for label, t in data["train"].items():
        steps = t["steps"]
        if not steps:
            continue
        keys = [k for k in ("epoch", "loss", "ce", "kd", "learning_rate", "grad_norm", "tokens_per_s")
                if any(k in r for r in steps)]
        fmt = {"epoch": "{:.2f}", "learning_rate": "{:.2e}", "tokens_per_s": "{:.0f}"}
        pick = sorted({round(i * (len(steps) - 1) / (LOG_ROWS - 1)) for i in range(LOG_ROWS)}) \
            if len(steps) > LOG_ROWS else range(len(steps))
        rows = [[[_f(steps[i]["step"], "{}", "train_log", label, steps[i]["step"], "step")]]
                + [[_f(steps[i].get(k), fmt.get(k, "{:.4f}"), "train_log", label, steps[i]["step"], k)] for k in keys]
                for i in pick]
        shown = f"{len(rows)} of {len(steps)} logged steps" if len(steps) > len(rows) else f"all {len(steps)} steps"
        blocks.append(_para(f"Training log of `{label}` ({shown}, from {label}/train_log.jsonl):"))
        blocks.append(_table(["step", *keys], rows))
    return blocks


def _lengths(data: dict, figs: dict) -> list[dict]:
    ev = data["eval"]
    if not ev:
        return [_note("No eval results, so no completion lengths.")]
    blocks = [_figure("lengths", "completion-length histograms per benchmark, models overlaid")] \
        if "lengths" in figs else [_note("No per-sample eval files (eval/<model>/<benchmark>.jsonl) found.")]
    rows = []
    for model, res in ev.items():
        for b, r in res.items():
            if b.startswith("_"):
                continue
            rows.append([[MODEL_TITLES.get(model, model)], [b]] + [
                [_f(r.get(k), f, "eval", model, b, k)] for k, f in
                (("mean_tokens", "{:.1f}"), ("tokens_p50", "{}"), ("tokens_p90", "{}"), ("truncated", "{:.3f}"))])
    return blocks + [_table(["model", "benchmark", "mean tokens", "p50", "p90", "truncated"], rows)]


def _curation(data: dict, figs: dict) -> list[dict]:
    st = data["curate"]
    if not st:
        return [_note(f"No curation stats ({data['dirs']['curate'] / 'stats.json'} not found).")]
    fig = [_figure("funnel", "curation funnel: traces left after each filter")] if "funnel" in figs else []
    blocks = []
    if st.get("funnel"):
        rows = [[[s["step"]], [_f(s.get("rejected"), "{}", "curate", "funnel", i, "rejected") if "rejected" in s
                               else ""], [_f(s["left"], "{}", "curate", "funnel", i, "left")]]
                for i, s in enumerate(st["funnel"])]
    else:  # stats written before the funnel existed
        rows = [[["generated"], [""], [_f(st["total"], "{}", "curate", "total")]]] + [
            [[k], [_f(v, "{}", "curate", "rejected", k)], [""]] for k, v in (st.get("rejected") or {}).items() if v]
        if fig:
            fig.append(_para("This stats.json predates the funnel: the chart's counts left are the total minus the "
                             "rejections so far."))
    rows.append([["kept"], [""], [_f(st["kept"], "{}", "curate", "kept")]])
    blocks.append(_table(["filter", "rejected", "left"], rows))
    parts = ["Teacher pass rate ", _f(st.get("teacher_pass_rate"), "{:.3f}", "curate", "teacher_pass_rate"),
             " (mean over ", _f(st.get("problems"), "{}", "curate", "problems"), " problems); problems with a kept "
             "trace: ", _f(st.get("problems_kept"), "{}", "curate", "problems_kept"), "."]
    blocks.append(_para(*parts))
    if "tokens_all" in st:
        rows = [[[which]] + [[_f(st[f"tokens_{which}"].get(k), "{:.1f}" if k == "mean" else "{}", "curate",
                                 f"tokens_{which}", k)] for k in ("mean", "p50", "p90", "max")]
                for which in ("all", "kept")]
        blocks.append(_table(["trace tokens", "mean", "p50", "p90", "max"], rows))
    return _row(fig, blocks)


def _generation(data: dict) -> list[dict]:
    g = data["generate"]
    if not g:
        return [_note(f"No generation summary ({data['dirs']['generate'] / 'summary.json'} not found).")]
    items = [("traces", "rows", "{}"), ("problems", "problems", "{}"), ("completion tokens", "total_tokens", "{}"),
             ("tokens generated this session", "new_tokens", "{}"), ("session seconds", "seconds", "{:.1f}"),
             ("generation tokens/s", "new_tokens_per_s", "{:.1f}"), ("bytes per token on disk", "bytes_per_token",
                                                                     "{:.1f}"),
             ("of which top-k", "topk_bytes_per_token", "{:.1f}")]
    rows = [[[name], [_f(g[key], fmt, "generate", key)]] for name, key, fmt in items if key in g]
    for reason, n in (g.get("finish_reasons") or {}).items():
        rows.append([[f"finish reason: {reason}"], [_f(n, "{}", "generate", "finish_reasons", reason)]])
    for reason, n in (g.get("skipped") or {}).items():
        rows.append([[f"skipped: {reason}"], [_f(n, "{}", "generate", "skipped", reason)]])
    gc = data["configs"].get("generate") or {}
    who = [_para(f"Teacher {gc['teacher']} on the {gc.get('backend', 'hf')} backend, {gc.get('num_samples')} samples "
                 f"per problem, up to {gc.get('max_new_tokens')} new tokens, top-{gc.get('topk_logprobs')} "
                 "log-probs stored (from traces/config.yaml).")] if gc.get("teacher") else []
    return who + [_table(["", "value"], rows)]


def _stages(data: dict, figs: dict) -> list[dict]:
    rows = []
    own = {"generate": (data["generate"], "seconds", "new_tokens_per_s", "tokens/s generating"),
           "curate": (data["curate"], "seconds", None, ""),
           "train": ((data["train"].get(data["dirs"]["train"].name) or {}).get("summary"), "seconds",
                     "completion_tokens_per_s", "completion tokens/s")}
    for name, marker in data["stages"].items():
        src, secs_key, rate_key, rate_name = own.get(name, (None, None, None, ""))
        src_name = "train" if name == "train" else name
        pre = (src_name, data["dirs"]["train"].name) if name == "train" else (src_name,)
        wall = [_f(marker["seconds"], "{:.1f}", "stage", name, "seconds")] if marker and "seconds" in marker \
            else ["not run by `run`" if not marker else "—"]
        inner = [_f(src[secs_key], "{:.1f}", *pre, secs_key)] if src and secs_key in src else ["—"]
        rate = [_f(src[rate_key], "{:.0f}", *pre, rate_key), f" {rate_name}"] if src and rate_key in src else ["—"]
        if name == "eval" and data["eval"]:
            inner = [p for m, res in data["eval"].items() if "_seconds" in res
                     for p in (f"{m} ", _f(res["_seconds"], "{:.1f}", "eval", m, "_seconds"), "; ")][:-1] or ["—"]
        rows.append([[name], wall, inner, rate])
    fig = [_figure("stages", "wall time per stage")] if "stages" in figs else []
    blocks = [_table(["stage", "wall seconds (run)", "seconds (stage summary)", "throughput"], rows), *fig]
    blocks.append(_para("Wall seconds come from each stage's .r1distill_done.json, written by the `run` that "
                        "made the stage's outputs; stage seconds from the stage's own summary (for eval: per model, "
                        "model load included)."))
    return blocks


# ---- header --------------------------------------------------------------------------------------
def _header(data: dict) -> dict:
    meta = data["meta"] or {}
    h: dict[str, Any] = {"run": str(data["run"]), "command": meta.get("command"), "cwd": meta.get("cwd"),
                         "started": meta.get("started"), "finished": meta.get("finished"),
                         "status": meta.get("status"), "seconds": meta.get("seconds")}
    h["versions"] = meta.get("versions") or versions()
    h["versions_note"] = "" if meta.get("versions") else " (at report time: this run dir has no run.json)"
    h["hardware"] = meta.get("hardware")
    h["what"] = _what(meta.get("resolved") or data["configs"])
    skipped = [n for n, st in (meta.get("stages") or {}).items() if isinstance(st, dict) and st.get("skipped")]
    h["skipped"] = f" (skipped {', '.join(skipped)}: done by an earlier run)" if skipped else ""
    h["recipe"] = meta.get("recipe")
    h["resolved"] = meta.get("resolved") or {k: v for k, v in data["configs"].items() if v}
    return h


def _what(configs: dict) -> str:
    """One line on who taught whom, from the resolved configs: teacher -> student, objective."""
    train, gen = configs.get("train") or {}, configs.get("generate") or {}
    teacher = gen.get("teacher") or train.get("teacher")
    st = train.get("student") or {}
    if st.get("name"):
        student = st["name"]
    elif st.get("derive_from"):
        n = len(st.get("layers") or []) or st.get("num_layers")
        student = f"{n} layers derived from {'the teacher' if st['derive_from'] == 'teacher' else st['derive_from']}"
    else:
        student = None
    parts = [f"teacher {teacher}" if teacher else "", f"student {student}" if student else "",
             f"objective {train['objective']}" if train.get("objective") else ""]
    return " · ".join(p for p in parts if p)


# ---- Markdown ------------------------------------------------------------------------------------
def render_markdown(data: dict, figs: dict[str, bytes], files_dir: str = "report_files") -> str:
    h = _header(data)
    out = [f"# r1distill report: `{h['run']}`", ""] + ([h["what"], ""] if h["what"] else [])
    if h["command"]:
        out += ["Reproduce (from `" + str(h["cwd"]) + "`):", "", "```sh", h["command"], "```", ""]
    when = ", ".join(f"{k} {h[k]}" for k in ("started", "finished", "status") if h[k])
    if when:
        out += [when + (f"; {h['seconds']:.0f} s{h['skipped']}" if h["seconds"] is not None else "") + ".", ""]
    out += ["Versions" + h["versions_note"] + ": " + ", ".join(f"{k} {v}" for k, v in h["versions"].items()), ""]
    if h["hardware"]:
        out += ["Hardware: " + ", ".join(f"{k} {v}" for k, v in h["hardware"].items()), ""]
    for _, title, blocks in _sections(data, figs):
        out += [f"## {title}", ""]
        for b in blocks:
            out += _block_md(b, files_dir)
    if h["recipe"] is not None or h["resolved"]:
        out += ["## Recipe", ""]
        if h["recipe"] is not None:
            out += ["As loaded (recipe file plus overrides):", "", "```yaml",
                    yaml.safe_dump(h["recipe"], sort_keys=False).rstrip(), "```", ""]
        if h["resolved"]:
            out += ["Resolved per stage (every setting, defaults included):", "", "```yaml",
                    yaml.safe_dump(h["resolved"], sort_keys=False).rstrip(), "```", ""]
    return "\n".join(out)


def _block_md(b: dict, files_dir: str) -> list[str]:
    if b["kind"] == "row":
        return [line for col in b["cols"] for c in col for line in _block_md(c, files_dir)]
    if b["kind"] == "figure":
        return [f"![{b['alt']}]({files_dir}/{b['name']}.png)", ""]
    if b["kind"] == "table":
        return (["| " + " | ".join(b["head"]) + " |", "|---|" + "---:|" * (len(b["head"]) - 1)]
                + ["| " + " | ".join(_cell_md(c) for c in row) + " |" for row in b["rows"]] + [""])
    if b["kind"] == "p":
        return [_cell_md(b["parts"]), ""]
    return [f"_{b['text']}_", ""]


# ---- HTML ----------------------------------------------------------------------------------------
CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d8dee4; --soft:#f6f8fa; --accent:#e07b39; --blue:#3b6ea5; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color:var(--ink);
       background:#eef1f4; }
main { max-width:1120px; margin:0 auto; padding:28px 28px 60px; }
header.top { background:#1f2a37; color:#fff; padding:22px 28px; border-radius:10px; margin-bottom:22px; }
header.top h1 { margin:0 0 4px; font-size:22px; font-weight:650; letter-spacing:.2px; }
header.top .sub { color:#c7d0da; font-size:13.5px; }
header.top pre { background:#111922; color:#e8edf2; border:0; margin:12px 0 10px; }
header.top .chips span { display:inline-block; background:#2d3b4b; color:#dbe3ea; border-radius:12px;
       padding:1px 10px; margin:3px 6px 0 0; font-size:12.5px; }
header.top details summary { color:#c7d0da; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 24px 14px;
          margin-bottom:18px; }
h2 { font-size:18px; margin:0 0 12px; padding-bottom:6px; border-bottom:2px solid var(--soft); }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:4px 0 16px; }
.card { flex:1 1 200px; border:1px solid var(--line); border-radius:8px; padding:10px 14px 8px;
        border-top:4px solid var(--c); }
.card .who { font-size:13px; color:var(--muted); font-weight:600; }
.card .big { font-size:28px; font-weight:700; font-variant-numeric:tabular-nums; }
.card .ci { font-size:12.5px; color:var(--muted); font-variant-numeric:tabular-nums; margin-bottom:6px; }
.card .bench { font-size:12px; color:var(--muted); }
table { border-collapse:collapse; margin:8px 0 14px; font-size:13.5px; font-variant-numeric:tabular-nums; }
th, td { padding:5px 11px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { background:var(--soft); text-align:right; font-weight:600; color:#333; white-space:nowrap; }
td { text-align:right; }
th:first-child, td.text { text-align:left; }
th.group { text-align:center; background:#fff; border-bottom:2px solid var(--line); font-size:13px; }
tbody tr:nth-child(even) td { background:#fafbfc; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:7px; }
img { max-width:100%; display:block; margin:6px 0 12px; }
pre { background:var(--soft); border:1px solid var(--line); border-radius:6px; padding:10px 12px;
      overflow-x:auto; font-size:12.5px; line-height:1.45; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size:12.5px; }
p { margin:6px 0 10px; color:#333; }
.note { color:var(--muted); font-style:italic; }
.wide { overflow-x:auto; }
.row { display:flex; flex-wrap:wrap; gap:8px 32px; align-items:flex-start; }
.row > div:first-child { flex:0 0 auto; max-width:100%; }
.row > div + div { flex:1 1 320px; min-width:320px; }
img { height:auto; }
"""


def _colors(labels) -> dict[str, str]:
    from r1distill.plots import colors

    return colors(list(labels))


def render_html(data: dict, figs: dict[str, bytes]) -> str:
    h = _header(data)
    esc = html.escape
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>r1distill report: {esc(h['run'])}</title>", f"<style>{CSS}</style></head><body><main>"]
    # header: what ran, how to rerun it, with what
    out.append('<header class="top">')
    out.append(f"<h1>r1distill report</h1><div class=\"sub\">run dir <code>{esc(h['run'])}</code>")
    times = [f"{k} {esc(str(h[k]).replace('T', ' '))}" for k in ("started", "finished") if h[k]]
    if h["seconds"] is not None:
        times.append(f"{h['seconds']:.0f} s{esc(h['skipped'])}")
    if h["status"] and h["status"] != "done":
        times.append(f"status: {esc(h['status'])}")
    if times:
        out.append(" · " + " · ".join(times))
    out.append("</div>")
    if h["what"]:
        out.append(f'<div class="sub">{esc(h["what"])}</div>')
    if h["command"]:
        out.append(f"<pre><code>cd {esc(str(h['cwd']))}\n{esc(h['command'])}</code></pre>")
    else:
        out.append('<div class="sub">No run.json: this run dir was not made by <code>r1distill run</code>, '
                   "so the command is unknown.</div>")
    out.append('<div class="chips">' + "".join(f"<span>{esc(k)} {esc(str(v))}</span>" for k, v in h["versions"].items())
               + (f"<span>{esc(h['versions_note'].strip(' ()'))}</span>" if h["versions_note"] else ""))
    for k, v in (h["hardware"] or {}).items():
        out.append(f"<span>{esc(k)}: {esc(', '.join(v) if isinstance(v, list) else str(v))}</span>")
    out.append("</div>")
    if h["recipe"] is not None or h["resolved"]:
        out.append("<details><summary>Recipe (as loaded, and resolved per stage)</summary>")
        if h["recipe"] is not None:
            out.append(f"<pre><code>{esc(yaml.safe_dump(h['recipe'], sort_keys=False))}</code></pre>")
        if h["resolved"]:
            out.append(f"<pre><code>{esc(yaml.safe_dump(h['resolved'], sort_keys=False))}</code></pre>")
        out.append("</details>")
    out.append("</header>")
    col = _colors(data["eval"] or {})
    swatches = {MODEL_TITLES.get(m, m): c for m, c in col.items()}
    for sid, title, blocks in _sections(data, figs):
        out.append(f'<section id="{sid}"><h2>{esc(title)}</h2>')
        if sid == "accuracy" and data["eval"]:
            out.append(_cards(data["eval"], col))
        out += [_block_html(b, figs, swatches) for b in blocks]
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out)


def _png_size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])  # width, height from the IHDR chunk


def _is_text(cell: Cell) -> bool:
    """A cell of words (left-aligned), not a number or a missing one."""
    numeric = lambda p: isinstance(p.value, (int, float)) or p.value is None if isinstance(p, Num) else p == "—"
    return bool(cell) and not any(numeric(p) for p in cell)


def _block_html(b: dict, figs: dict[str, bytes], swatches: dict[str, str]) -> str:
    esc = html.escape
    if b["kind"] == "row":
        return ('<div class="row">' + "".join(
            "<div>" + "".join(_block_html(c, figs, swatches) for c in col) + "</div>" for col in b["cols"]) + "</div>")
    if b["kind"] == "figure":
        png = figs[b["name"]]
        w, h = _png_size(png)
        # Shown at 100 px per inch of figure: the PNG is drawn at savefig.dpi (150) so that it stays sharp.
        scale = 100 / 150
        return (f'<img data-figure="{b["name"]}" alt="{esc(b["alt"])}" width="{round(w * scale)}" '
                f'height="{round(h * scale)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    if b["kind"] == "table":
        head = b["head"]
        groups = ""
        if b["groups"]:  # a header row per group; the columns below keep only what follows the group's label
            groups = "".join(f'<th colspan="{n}" class="group">{esc(g)}</th>' for g, n in b["groups"])
            groups = f"<tr>{groups}</tr>"
            labels = [g for g, n in b["groups"] for _ in range(n)]
            head = [h.removeprefix(f"{g} ") if g else h for g, h in zip(labels, head)]
        out = ['<div class="wide"><table><thead>' + groups + "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in head)
               + "</tr></thead><tbody>"]
        for row in b["rows"]:
            tds = []
            for i, cell in enumerate(row):
                inner = _cell_html(cell)
                if i == 0 and b["head"][0] == "model" and _cell_md(cell) in swatches:
                    inner = f'<span class="swatch" style="background:{swatches[_cell_md(cell)]}"></span>{inner}'
                cls = ' class="text"' if _is_text(cell) else ""
                tds.append(f"<td{cls}>{inner}</td>")
            out.append("<tr>" + "".join(tds) + "</tr>")
        return "\n".join(out) + "</tbody></table></div>"
    if b["kind"] == "p":
        return f"<p>{_cell_html(b['parts'])}</p>"
    return f'<p class="note">{esc(b["text"])}</p>'


def _cards(ev: dict, col: dict[str, str]) -> str:
    """The headline: pass@1 per model (and benchmark) as big numbers, before any table."""
    cards = []
    for model, res in ev.items():
        lines = []
        for b, r in res.items():
            if b.startswith("_") or "pass@1" not in r:
                continue
            p1 = Num(f"{r['pass@1']:.3f}", ("eval", model, b, "pass@1"), r["pass@1"]).html()
            ci = r.get("pass@1_ci95")
            ci_html = ""
            if ci:
                lo, hi = (Num(f"{v:.3f}", ("eval", model, b, "pass@1_ci95", i), v).html() for i, v in enumerate(ci))
                ci_html = f'<div class="ci">95% CI [{lo}, {hi}]</div>'
            lines.append(f'<div class="bench">{html.escape(b)} pass@1</div><div class="big">{p1}</div>{ci_html}')
        cards.append(f'<div class="card" style="--c:{col.get(model, "#888")}"><div class="who">'
                     f"{html.escape(MODEL_TITLES.get(model, model))}</div>{''.join(lines)}</div>")
    return f'<div class="cards">{"".join(cards)}</div>'


# ---- entry point ---------------------------------------------------------------------------------
def accuracy_table(summary: dict) -> str:
    """The eval summary as a Markdown table with readable model names (the eval stage's own table builder)."""
    from r1distill.evaluate import results_markdown

    return results_markdown(summary, MODEL_TITLES, answered=True)


def write_report(run_dir: str | Path) -> Path:
    """Write report.md (+ report_files/*.png) and the self-contained report.html; return the HTML's path."""
    run = Path(run_dir)
    data = collect(run)
    figs = figures(data)
    files = run / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    for name, png in figs.items():
        (files / f"{name}.png").write_bytes(png)
    (run / "report.md").write_text(render_markdown(data, figs))
    out = run / "report.html"
    out.write_text(render_html(data, figs))
    return out
