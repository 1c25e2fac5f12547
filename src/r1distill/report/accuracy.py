"""The accuracy section (the takeaway, headline numbers, chart, table and the eval settings beside them) and the
examples section (a few problems with the teacher's output and the student's before and after training).

The takeaway's recovery ratio is the student's pass@1 over the teacher's, with a paired bootstrap 95% CI over
problems from the per-sample files (resample problem ids, per-problem mean correctness of each model, ratio of
the means). With several student variants it names the best one.
"""

from __future__ import annotations

import os

from r1distill import layout
from r1distill.report import blocks as B
from r1distill.report import compare
from r1distill.report.collect import per_problem
from r1distill.report.stats import paired, paired_bootstrap_ratio
from r1distill.tables import results_table, title

EXAMPLES = 3  # problems shown in the examples section
STUDENT_CHARS = 400  # of each student output shown there (the teacher's: collect.EXAMPLE_CHARS)


def _benches(ev: dict) -> list[str]:
    return sorted({b for res in ev.values() for b in res if not b.startswith("_")})


def best_student(ev: dict, bench: str) -> str | None:
    """The trained student with the highest pass@1 on `bench` (`student` or a `student:<name>`; first on a tie)."""
    students = [m for m in ev if (m == "student" or m.startswith("student:")) and "pass@1" in ev[m].get(bench, {})]
    return max(students, key=lambda m: ev[m][bench]["pass@1"], default=None)


def init_of(ev: dict, student: str) -> str | None:
    """The untrained model a student started from: `student_init:<name>` when eval has it, else `student_init`."""
    own = student.replace("student", "student_init", 1)
    return own if own in ev else "student_init" if "student_init" in ev else None


def _best(data: dict, student: str) -> str:
    name = student.split(":", 1)[1]
    v = next((v for v in data["variants"] if v["model"] == student), None)
    what = compare.summary_line(data, v) if v else ""
    return f"The best student, {name}{f' ({what})' if what else ''},"


def takeaway(data: dict) -> list:
    """The parts of the one-line result, per benchmark: how much of the teacher's pass@1 the (best) student
    recovers, with its CI, and where it started; [] without a teacher and a trained student."""
    ev = data["eval"]
    parts: list = []
    for b in _benches(ev):
        student = best_student(ev, b)
        if "pass@1" not in ev.get("teacher", {}).get(b, {}) or student is None:
            continue
        t, s = ev["teacher"][b]["pass@1"], ev[student][b]["pass@1"]
        t_num, s_num = B.f(t, "{:.3f}", "eval", "teacher", b, "pass@1"), B.f(s, "{:.3f}", "eval", student, b, "pass@1")
        who = "The student" if student == "student" else _best(data, student)
        init = init_of(ev, student)
        start = ev.get(init, {}).get(b, {}).get("pass@1") if init else None
        since = [", from ", B.f(start, "{:.3f}", "eval", init, b, "pass@1"), " before training"] \
            if start is not None else []
        if parts:
            parts.append(" ")
        if t == 0:
            parts += [f"The teacher solves nothing on {b} (pass@1 ", t_num, "), so there is no recovery ratio; ",
                      "t" + who[1:].rstrip(","), " scores ", s_num, *since, "."]
            continue
        mine = per_problem(data["samples"].get(student, {}).get(b))
        theirs = per_problem(data["samples"].get("teacher", {}).get(b))
        a, c = paired(mine, theirs)
        ratio, lo, hi = paired_bootstrap_ratio(a, c) if a else (None, None, None)
        if ratio is None:  # no per-sample files to pair: the ratio of the summaries, without a CI
            ratio = s / t
            ci = " (no per-sample files for a CI)"
        else:
            ci = f" (95% CI {100 * lo:.0f}–{100 * hi:.0f}%)"
        parts += [f"{who} recovers {100 * ratio:.0f}% of the teacher's pass@1 on {b}{ci}: ", s_num, " against ",
                  t_num, *since, "."]
    return parts


def _settings(data: dict) -> list[dict]:
    """Per model: the prompt it had, the decoding (greedy, or k samples at temperature T) and max new tokens."""
    ev, cfg = data["eval"], data["eval_config"] or {}
    temp, top_p = cfg.get("temperature"), cfg.get("top_p")
    rows = []
    for model, res in ev.items():
        prompt = res.get("_prompt") or "—"
        system = ((cfg.get("model_prompts") or {}).get(model) or cfg.get("prompt") or {}).get("system")
        if system and len(system) <= 120:
            prompt += f' ("{system}")'
        ks = {r.get("k") for b, r in res.items() if not b.startswith("_") and isinstance(r, dict)}
        k = ks.pop() if len(ks) == 1 else None
        if temp is None:
            decoding = f"{k} sample{'s' if k != 1 else ''} per problem" if k else "—"
        elif temp == 0:
            decoding = "greedy" + (f" ({k} samples)" if k and k > 1 else "")
        else:
            decoding = (f"{k or 'k'} sample{'s' if k != 1 else ''} at temperature {temp:g}"
                        + (f", top-p {top_p:g}" if top_p is not None and top_p < 1 else ""))
        rows.append([[title(model)], [prompt], [decoding], [str(cfg.get("max_new_tokens", "—"))]])
    src = "summary.json's _prompt and eval/config.yaml" if cfg else "summary.json (no eval/config.yaml)"
    # Words, not numbers: the cells wrap, so that the table fits beside the chart at 1280 px.
    return [B.table(["model", "prompt", "decoding", "max new tokens"], rows, wrap=True),
            B.para(f"Eval settings per model (from {src}).")]


def section(data: dict, figs: dict) -> list[dict]:
    ev = data["eval"]
    if not ev:
        return [B.note(f"No eval results ({data['dirs']['eval'] / layout.SUMMARY} not found): "
                       "run `r1distill eval` on this run dir.")]
    head, rows = results_table(ev, {m: title(m) for m in ev}, answered=True)
    benches = _benches(ev)
    per = (len(head) - 1) // max(len(benches), 1)  # columns per benchmark, in results_table's order
    cells = []
    for model, row in zip(ev, rows):
        out = [[title(model)]]
        for j, cell in enumerate(row[1:]):
            out.append([B.Num(t, ("eval", model, benches[j // per], *k), v) if k else t for t, k, v in cell])
        cells.append(out)
    lead = takeaway(data)
    blocks = ([B.lead(*lead)] if lead else []) + [{"kind": "cards"}]
    fig = [B.figure("accuracy", "pass@1 per model and benchmark with 95% confidence intervals")] \
        if "accuracy" in figs else []
    blocks += B.row(fig, _settings(data))
    blocks.append(B.table(head, cells, [("", 1)] + [(b, per) for b in benches]))
    per_bench = {b: r for res in ev.values() for b, r in res.items() if not b.startswith("_")}
    sizes = []
    for model, res in ev.items():
        for b, r in res.items():
            if not b.startswith("_") and per_bench.get(b) is r:
                sizes += [f"{b}: ", B.f(r.get("problems"), "{}", "eval", model, b, "problems"), " problems × k = ",
                          B.f(r.get("k"), "{}", "eval", model, b, "k"), "; "]
    blocks.append(B.para("pass@1 is the mean correctness over the k samples of each problem, with a bootstrap 95% "
                         "confidence interval over problems; maj@k is a majority vote over the extracted answers; "
                         "answered is the share of outputs that state a final answer. ", *sizes[:-1]))
    return blocks


# ---- examples -------------------------------------------------------------------------------------
def pick_examples(student: dict[str, float], init: dict[str, float], teacher: dict[str, float],
                  n: int = EXAMPLES) -> list[str]:
    """Problem ids to show, deterministically: first those the trained student got right that it got wrong before
    training, then those the teacher got right, then the rest, each group in the student's file order."""
    def group(i: str) -> int:
        if student.get(i, 0) > 0.5 >= init.get(i, 0):
            return 0
        return 1 if teacher.get(i, 0) > 0.5 else 2

    return sorted(student, key=group)[:n]  # sorted is stable: file order within a group


def examples(data: dict) -> list[dict]:
    ev = data["eval"] or {}
    bench = next((b for b in _benches(ev) if (s := best_student(ev, b)) and b in data["samples"].get(s, {})), None)
    if bench is None:
        return [B.note("No per-sample eval files of a trained student, so no examples.")]
    student = best_student(ev, bench)
    init = init_of(ev, student)
    models = [m for m in ("teacher", init, student) if m and bench in data["samples"].get(m, {})]
    ids = pick_examples(*(per_problem(data["samples"].get(m, {}).get(bench)) for m in (student, init, "teacher")))
    blocks = [B.para(f"{len(ids)} problems of {bench}: first those {title(student)} got right that it got wrong "
                     "before training, then those the teacher got right; each model's first sample, linked to its "
                     "per-sample file.")]
    for i in ids:
        first = data["samples"][student][bench]["first"][i]
        blocks.append(B.para(f"Problem {i} (gold answer {first.get('answer', '—')})"
                             + (f": {first['problem']}" if first.get("problem") else "")))
        for m in models:
            row = data["samples"][m][bench]["first"].get(i)
            if row is None:
                continue
            href = os.path.relpath(data["samples"][m][bench]["path"], data["run"])
            verdict = "correct" if row.get("correct") else "wrong"
            said = f"answer {row['pred_answer']}" if row.get("pred_answer") is not None else "no answer stated"
            blocks.append(B.para(f"{title(m)}: {said} ({verdict}); ",
                                 B.Link(f"{os.path.basename(os.path.dirname(href))}/{bench}.jsonl",
                                        href.replace(os.sep, "/"))))
            text = row["output"] if m == "teacher" else row["output"][:STUDENT_CHARS]
            cut = row.get("cut") or len(row["output"]) > len(text)
            blocks.append(B.code(text + (" …" if cut else "")))
    return blocks
