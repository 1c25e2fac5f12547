"""The report: every number in report.html equals the stage outputs it was read from, every image decodes.

One real run (the tiny recipe, shared with test_pipeline through conftest) and hand-written run dirs with
old formats and missing pieces.
"""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from r1distill.report import read_train_log, write_report

TINY = Path(__file__).parents[1] / "tiny.yaml"
DIRS = {"generate": "traces", "curate": "curated", "train": "student", "eval": "eval"}


class _Page(HTMLParser):
    """Collects tagged numbers (path, value, shown text) and embedded figures (name, src)."""

    def __init__(self):
        super().__init__()
        self.metrics: list[tuple[list, object, str]] = []
        self.figures: dict[str, str] = {}
        self.tags: set[str] = set()
        self._open: tuple[list, object] | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if "data-metric" in a:
            self._open, self._text = (json.loads(a["data-metric"]), json.loads(a["data-value"])), ""
        if tag == "img":
            self.figures[a["data-figure"]] = a["src"]

    def handle_data(self, data):
        if self._open:
            self._text += data

    def handle_endtag(self, tag):
        if self._open and tag == "span":
            self.metrics.append((*self._open, self._text))
            self._open = None


def _page(run: Path) -> _Page:
    page = _Page()
    page.feed((run / "report.html").read_text())
    return page


def _read(path: Path):
    return json.loads(path.read_text())


def _source(run: Path, path: list):
    """The value at `path` read straight from the run dir's files (independently of report.py)."""
    src, *keys = path
    if src == "train_log":
        label, step, key = keys
        recs = [json.loads(x) for x in (run / label / "train_log.jsonl").read_text().splitlines()]
        return next(r for r in recs if r.get("step") == step and "loss" in r and not r.get("summary"))[key]
    if src == "stage":
        name, *keys = keys
        out = (_read(run / "run.json")["stages"].get(name) or {}).get("out") if (run / "run.json").exists() else None
        doc = _read(run / (out or DIRS[name]) / "r1distill_stamp.json")["run"]
    elif src == "train":
        label, *keys = keys
        doc = _read(run / label / "summary.json")
    else:
        doc = _read(run / {"eval": "eval/summary.json", "generate": "traces/summary.json",
                           "curate": "curated/stats.json", "run": "run.json"}[src])
    for k in keys:
        doc = doc[k]
    return doc


def _check_numbers(run: Path, page: _Page) -> set[tuple]:
    """Every tagged number equals its source and its text shows that value (rounded); returns the paths."""
    assert page.metrics
    for path, value, text in page.metrics:
        assert _source(run, path) == value, path
        if isinstance(value, (int, float)) and not isinstance(value, bool) and text != "—":
            decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
            shown = float(text.replace(",", ""))
            assert abs(shown - value) <= 0.5 * 10 ** -decimals + 1e-9 * abs(value), (path, text, value)
    return {tuple(p) for p, _, _ in page.metrics}


def _check_images(page: _Page, run: Path) -> None:
    for name, src in page.figures.items():
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        img = Image.open(io.BytesIO(png))
        img.load()
        assert img.width >= 400 and img.height >= 150, (name, img.size)
        assert sum(n > 0 for n in img.convert("L").histogram()) > 10, name  # drawn on, not a blank canvas
        assert (run / "report_files" / f"{name}.png").read_bytes() == png  # report.md shows the same picture


def test_tiny_run_report_equals_stage_outputs(tiny_run):
    run = tiny_run
    page = _page(run)
    shown = _check_numbers(run, page)
    ev = _read(run / "eval" / "summary.json")
    for model, res in ev.items():
        for bench in (b for b in res if not b.startswith("_")):
            for key in (("pass@1",), ("pass@1_ci95", 0), ("pass@1_ci95", 1), ("maj@k",), ("answered",),
                        ("mean_tokens",), ("tokens_p90",)):
                assert ("eval", model, bench, *key) in shown, (model, bench, key)
            assert any(("eval", m, bench, "problems") in shown for m in ev)  # stated once per benchmark
    stats = _read(run / "curated" / "stats.json")
    assert stats["funnel"] and all(("curate", "funnel", i, "left") in shown for i in range(len(stats["funnel"])))
    assert ("curate", "kept") in shown and ("generate", "rows") in shown and ("train", "student", "steps") in shown
    steps, _ = read_train_log(run / "student" / "train_log.jsonl")
    assert len(steps) == 3  # 12 traces, batch 4, 1 epoch; all three shown
    assert all(("train_log", "student", s["step"], "loss") in shown for s in steps)
    assert all(("stage", name, "seconds") in shown for name in DIRS)

    assert set(page.figures) == {"accuracy", "training", "lengths", "funnel", "stages"}
    _check_images(page, run)
    html = (run / "report.html").read_text()
    assert not page.tags & {"script", "link", "iframe"} and not re.search(r"(src|href)=\"https?:", html)
    md = (run / "report.md").read_text()
    assert all(f"](report_files/{name}.png)" in md for name in page.figures)
    assert html.index('id="accuracy"') < html.index('id="training"')  # the result comes first

    meta = _read(run / "run.json")
    assert meta["command"] == f"r1distill run {TINY} run_dir={run}"
    assert meta["status"] == "done" and meta["overrides"] == [f"run_dir={run}"]
    assert {"r1distill", "torch", "transformers", "trl", "datasets"} <= set(meta["versions"])
    assert meta["resolved"]["train"]["objective"] == "kd" and set(meta["stages"]) == set(DIRS)
    assert meta["command"] in html and meta["versions"]["transformers"] in html


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_hand_written_run_dir_with_old_formats_and_two_students(tmp_path):
    run = tmp_path / "r"
    m = lambda p1, ci, n: {"problems": n, "samples": n, "k": 1, "pass@1": p1, "maj@k": p1, "answered": 0.5,
                           "mean_tokens": 10.0, "tokens_p50": 9, "tokens_p90": 12, "truncated": 0.0,
                           **({"pass@1_ci95": ci} if ci else {})}
    _write(run / "eval" / "summary.json", {
        "teacher": {"gsm8k": m(0.75, [0.5, 1.0], 4), "aime24": m(0.1, None, 30), "_seconds": 3.0},
        "student_sft": {"gsm8k": m(0.25, [0.0, 0.5], 4)},
        "student": {"gsm8k": m(0.5, [0.25, 0.75], 4), "aime24": m(0.0, None, 30)},
    })
    _write(run / "eval" / "teacher" / "gsm8k.jsonl", "".join(json.dumps({"num_tokens": n}) + "\n" for n in (5, 9, 12)))
    _write(run / "eval" / "student" / "gsm8k.jsonl", json.dumps({"num_tokens": 7}) + "\n{cut by a ki")
    funnel = [{"step": "generated", "left": 10}, {"step": "truncated", "rejected": 4, "left": 6},
              {"step": "incorrect", "rejected": 3, "left": 3}]
    _write(run / "curated" / "stats.json", {"total": 10, "kept": 3, "rejected": {"truncated": 4, "no_answer": 0,
                                                                                  "incorrect": 3}, "funnel": funnel,
                                            "correct": 5, "problems": 5, "problems_kept": 2, "teacher_pass_rate": 0.5})
    # the SFT student logs trainer.state.log_history lines; the KD student the one-record-per-step format
    _write(run / "student_sft" / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in [
        {"loss": 3.0, "learning_rate": 1e-4, "ce": 3.0, "epoch": 0.5, "step": 1},
        {"loss": 2.0, "learning_rate": 5e-5, "ce": 2.0, "epoch": 1.0, "step": 2},
        {"train_runtime": 1.0, "train_loss": 2.5, "epoch": 1.0, "step": 2}]))
    log = [{"step": s, "epoch": s / 30, "loss": 5 - s / 10, "ce": 4 - s / 10, "kd": 6 - s / 10,
            "learning_rate": 1e-4, "tokens_per_s": 100.0 + s} for s in range(1, 31)]
    _write(run / "student" / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in
                                                        [*log, {"summary": True, "step": 30, "tokens_per_s": 111.0}]))
    _write(run / "student" / "summary.json", {"objective": "kd", "rows": 3, "steps": 30, "train_loss": 3.45,
                                              "seconds": 12.5})
    _write(run / "student" / "r1distill_stamp.json", {"format": 2, "run": {"hash": "x", "seconds": 13.25}})

    write_report(run)
    page = _page(run)
    shown = _check_numbers(run, page)
    assert {p for p in shown if p[:2] == ("curate", "funnel")} == {("curate", "funnel", i, k) for i in range(3)
                                                                  for k in ("left", "rejected") if k in funnel[i]}
    assert ("eval", "student_sft", "gsm8k", "pass@1") in shown and ("eval", "teacher", "aime24", "pass@1") in shown
    assert ("eval", "teacher", "aime24", "pass@1_ci95", 0) not in shown  # no CI in that summary: none shown
    # 30 logged steps: 12 shown, the first and the last among them; the summary record is not a step
    kd_steps = sorted(p[2] for p in shown if p[:2] == ("train_log", "student") and p[3] == "loss")
    assert len(kd_steps) == 12 and kd_steps[0] == 1 and kd_steps[-1] == 30
    assert ("train_log", "student", 30, "tokens_per_s") in shown
    assert {p[2] for p in shown if p[:2] == ("train_log", "student_sft")} == {1, 2}
    assert ("stage", "train", "seconds") in shown
    assert set(page.figures) == {"accuracy", "training", "lengths", "funnel", "stages"}
    _check_images(page, run)
    html = (run / "report.html").read_text()
    assert "No generation summary" in html and "No run.json" in html and "at report time" in html
    assert read_train_log(run / "student" / "train_log.jsonl")[1] == {"summary": True, "step": 30,
                                                                      "tokens_per_s": 111.0}


def test_empty_run_dir_gives_a_report_of_notes(tmp_path):
    out = write_report(tmp_path)
    assert out == tmp_path / "report.html"
    page = _page(tmp_path)
    assert page.metrics == [] and page.figures == {}
    html = out.read_text()
    for note in ("No eval results", "No training outputs", "No curation stats", "No generation summary"):
        assert note in html
    assert "## Accuracy" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("bad", ["", "{not json"])
def test_unreadable_summary_is_treated_as_missing(tmp_path, bad):
    _write(tmp_path / "eval" / "summary.json", bad)
    write_report(tmp_path)
    assert "No eval results" in (tmp_path / "report.html").read_text()


# ---- student variants, the takeaway, the examples (constructed run dirs) ---------------------------------------
def _samples(ids: list[str], right: set[str], k: int = 1) -> list[dict]:
    return [{"benchmark": "synthetic-easy", "id": i, "problem": f"What is {i} * 2?", "sample_idx": s,
             "output": f"{i} * 2 = 4\nThe answer is 4.",
             "answer": "4", "pred_answer": "4" if i in right else "5", "correct": i in right, "num_tokens": 9,
             "finish_reason": "stop"} for i in ids for s in range(k)]


def _variant_run(run: Path, variants: dict[str, dict], right: dict[str, set[str]], n: int = 40) -> list[str]:
    """A run dir as `run` writes it for a recipe with `variants:`: students/<name>/ per variant, eval labels
    teacher, student_init and student:<name>; `right` holds the problems each eval label gets right."""
    from r1distill.evaluate import summarize

    ids = [f"p{i:02d}" for i in range(n)]
    summary = {}
    for label, ok in right.items():
        rows = _samples(ids, ok)
        _write(run / "eval" / label.replace(":", "_") / "synthetic-easy.jsonl",
               "".join(json.dumps(r) + "\n" for r in rows))
        summary[label] = {"synthetic-easy": summarize(rows, bootstrap=200), "_seconds": 1.0,
                          "_prompt": "system line + own instruction + 2 examples" if label == "teacher"
                          else "system line + own instruction"}
    _write(run / "eval" / "summary.json", summary)
    _write(run / "eval" / "config.yaml", "eval:\n  temperature: 0.0\n  max_new_tokens: 96\n  benchmarks:\n"
           "  - {name: synthetic, split: test, level: easy, num_problems: 40}\n")
    _write(run / "traces" / "config.yaml", "generate:\n  teacher: smollm2-135m-instruct\n  topk_logprobs: 20\n"
           "  topk_format: exact\n")
    stages = {"generate": {"out": "traces", "skipped": False, "seconds": 5.0}}
    for name, cfg in variants.items():
        d = run / "students" / name
        _write(d / "r1distill_train_config.yaml", json.dumps({"train": cfg}))  # JSON is YAML
        _write(d / "summary.json", {"objective": cfg["objective"], "rows": 10, "steps": 2, "train_loss": 1.5,
                                    "seconds": 3.0})
        _write(d / "train_log.jsonl", "".join(json.dumps({"step": s, "loss": 2.0 / s}) + "\n" for s in (1, 2)))
        _write(d / "config.json", {"num_hidden_layers": 16})
        _write(d / "r1distill_stamp.json", {"format": 2, "run": {"hash": "x", "seconds": 4.0}})
        stages[f"train:{name}"] = {"out": f"students/{name}", "skipped": False, "seconds": 4.0}
    stages["eval"] = {"out": "eval", "skipped": False, "seconds": 6.0}
    _write(run / "run.json", {"command": "r1distill run lab.yaml", "cwd": str(run), "stages": stages,
                              "resolved": {f"train:{n}": c for n, c in variants.items()}, "status": "done"})
    return ids


SFT = {"objective": "sft", "loss": {"alpha": 1.0}, "student": {"derive_from": "teacher", "num_layers": 16}}
KD5 = {"objective": "kd", "loss": {"alpha": 0.5, "divergence": "forward_kl", "topk": 5},
       "student": {"derive_from": "teacher", "num_layers": 16}}


def test_the_comparison_of_two_variants_shows_the_paired_difference_to_sft(tmp_path):
    from r1distill.report import paired_bootstrap_diff, paired_bootstrap_ratio

    run = tmp_path / "lab"
    ids = _variant_run(run, {"sft": SFT, "kd": KD5}, {
        "teacher": set(ids_ := [f"p{i:02d}" for i in range(20)]), "student_init": set(),
        "student:sft": set(ids_[:8]), "student:kd": set(ids_[:14])})
    write_report(run)
    md = (run / "report.md").read_text()
    kd = [float(i in ids_[:14]) for i in ids]
    sft = [float(i in ids_[:8]) for i in ids]
    diff, lo, hi = paired_bootstrap_diff(kd, sft)
    assert diff == pytest.approx(6 / 40) and lo < diff < hi
    ev = _read(run / "eval" / "summary.json")
    ci = ev["student:kd"]["synthetic-easy"]["pass@1_ci95"]
    # objective, divergence, top-k read at train time, layers (config.json), stored bytes (20 exact -> top-5: 6 x 5)
    assert (f"| kd | kd | forward_kl | 5 | 16 | 30 | 0.350 [{ci[0]:.3f}, {ci[1]:.3f}] "
            f"| {diff:+.3f} [{lo:+.3f}, {hi:+.3f}] |") in md
    assert "| sft | sft | — | — | 16 | 0 | 0.200 [" in md and "| baseline |" in md
    # the takeaway names the best variant and its share of the teacher, with the paired-bootstrap CI of the ratio
    ratio, rlo, rhi = paired_bootstrap_ratio(kd, [float(i in ids_) for i in ids])
    assert ratio == pytest.approx(0.7)
    assert ("**The best student, kd (kd, forward_kl, top-5, 16 layers), recovers 70% of the teacher's pass@1 on "
            f"synthetic-easy (95% CI "
            f"{100 * rlo:.0f}–{100 * rhi:.0f}%): 0.350 against 0.500, from 0.000 before training.**") in md
    # the examples: problems kd got right and the untrained student wrong, linked to the per-sample files
    # with the problem's text from the eval rows (no benchmark source is read)
    assert "Problem p00 (gold answer 4): What is p00 * 2?" in md and "Problem p02" in md and "Problem p03" not in md
    assert "[student_kd/synthetic-easy.jsonl](eval/student_kd/synthetic-easy.jsonl)" in md
    assert "| teacher | system line + own instruction + 2 examples | greedy | 96 |" in md
    page = _page(run)
    shown = _check_numbers(run, page)
    assert ("eval", "student:kd", "synthetic-easy", "pass@1") in shown
    assert ("train", "students/kd", "steps") in shown and ("stage", "train:kd", "seconds") in shown
    assert {"accuracy", "variants", "bytes", "training", "lengths", "stages"} == set(page.figures)
    _check_images(page, run)
    assert '<a href="eval/student_kd/synthetic-easy.jsonl">' in (run / "report.html").read_text()


def test_without_an_sft_variant_there_is_no_difference_column(tmp_path):
    run = tmp_path / "lab"
    rkl = {**KD5, "loss": {"alpha": 0.5, "divergence": "reverse_kl"}}
    _variant_run(run, {"kd": KD5, "rkl": rkl}, {"teacher": {"p00"}, "student:kd": {"p00"}, "student:rkl": set()})
    write_report(run)
    md = (run / "report.md").read_text()
    assert "| rkl | kd | reverse_kl | 20 | 16 | 120 | 0.000 [0.000, 0.000] |" in md  # all 20 stored entries
    assert "Δ vs" not in md and "no baseline" in md


def test_a_cross_tokenizer_variant_names_its_alignment(tmp_path):
    run = tmp_path / "lab"
    gold = {**KD5, "xtok": {"method": "gold"}}
    uld = {**KD5, "loss": {"alpha": 0.5, "divergence": "forward_kl"}, "xtok": {"method": "uld"}}
    _variant_run(run, {"gold": gold, "uld": uld}, {"teacher": {"p00"}, "student:gold": {"p00"},
                                                   "student:uld": set()})
    write_report(run)
    md = (run / "report.md").read_text()
    assert "| gold | kd | xtok gold + forward_kl | 5 | 16 | 30 | 0.025 [" in md  # 1 of 40 problems
    assert "| uld | kd | xtok uld | 20 | 16 | 120 | 0.000 [" in md


def test_a_teacher_at_zero_gives_no_ratio(tmp_path):
    run = tmp_path / "r"
    _variant_run(run, {}, {"teacher": set(), "student_init": set(), "student": {"p01"}}, n=10)
    write_report(run)
    md = (run / "report.md").read_text()
    assert ("**The teacher solves nothing on synthetic-easy (pass@1 0.000), so there is no recovery ratio; the "
            "student scores 0.100, from 0.000 before training.**") in md
    assert "Student variants compared" not in md


def test_paired_bootstrap_diff_on_known_cases():
    from r1distill.report import paired_bootstrap_diff

    same = [0.0, 1.0, 0.5, 1.0, 0.0] * 8
    assert paired_bootstrap_diff(same, same) == (0.0, 0.0, 0.0)
    shifted = [v + 0.25 for v in same]  # every problem 0.25 higher: no spread to resample
    assert paired_bootstrap_diff(shifted, same) == pytest.approx((0.25, 0.25, 0.25))
    # 100 problems: a wins 30 that b loses, b wins 10, 60 ties: diff 0.2, sd of the per-problem difference 0.6,
    # so a standard error of 0.06 and a 95% CI near 0.2 +- 0.118
    a = [1.0] * 30 + [0.0] * 10 + [1.0] * 30 + [0.0] * 30
    b = [0.0] * 30 + [1.0] * 10 + [1.0] * 30 + [0.0] * 30
    d, lo, hi = paired_bootstrap_diff(a, b, resamples=4000)
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.08, abs=0.025) and hi == pytest.approx(0.32, abs=0.025)
    d4, lo4, hi4 = paired_bootstrap_diff(a * 4, b * 4, resamples=4000)  # 4x the problems: half the width
    assert d4 == pytest.approx(0.2) and lo4 < 0.2 < hi4
    assert (hi4 - lo4) / (hi - lo) == pytest.approx(0.5, abs=0.08)
    assert paired_bootstrap_diff(a, b) == paired_bootstrap_diff(a, b)  # seeded
    with pytest.raises(ValueError):
        paired_bootstrap_diff(a, b[:-1])


def test_paired_bootstrap_ratio_and_a_zero_teacher():
    from r1distill.report import paired_bootstrap_ratio

    teacher = [1.0, 0.0, 1.0, 1.0] * 10
    assert paired_bootstrap_ratio([v / 2 for v in teacher], teacher) == pytest.approx((0.5, 0.5, 0.5))
    assert paired_bootstrap_ratio([1.0] * 40, [0.0] * 40) == (None, None, None)


def test_accuracy_axes_start_at_zero_and_end_at_the_ci_rounded_up():
    from r1distill.report.figures import accuracy_top

    assert accuracy_top([0.05, 0.02]) == 0.1  # 0.02 vs 0.01 with CIs to 0.05: an axis to 0.1, not to 0.06
    assert accuracy_top([0.41]) == 0.5 and accuracy_top([0.3]) == 0.3 and accuracy_top([0.97]) == 1.0
    assert accuracy_top([]) == 0.1 and accuracy_top([1.2]) == 1.0


def test_stored_bytes_per_token_and_model_dirnames():
    from r1distill.report import model_dirname
    from r1distill.report.compare import stored_bytes_per_token

    assert stored_bytes_per_token("sft", None) == 0.0 and stored_bytes_per_token("kd", 20) == 120.0
    assert stored_bytes_per_token("kd", 20, "q8") == 102.0  # 20 int32 ids + 20 uint8 codes + one float16 top-1
    assert stored_bytes_per_token("kd", 5, kd_term=False) == 0.0  # alpha 1: CE only
    assert stored_bytes_per_token("kd_online", 20) is None
    assert model_dirname("student:kd") == "student_kd" and model_dirname("org/model") == "org_model"


def test_an_on_policy_variant_is_described_as_what_it_trains_on():
    """No stored top-k for a purely on-policy variant (the teacher scores online); its loss form named; with lmbda < 1
    its kd steps read the stored top-k."""
    from r1distill.report.compare import describe

    data = {"configs": {"generate": {"topk_logprobs": 20}}, "meta": {}}

    def variant(**on_policy) -> dict:
        return {"name": "op", "model": "student:op", "model_config": {"num_hidden_layers": 4}, "summary": {},
                "config": {"objective": "on_policy", "loss": {"alpha": 0.5, "divergence": "reverse_kl"},
                           "on_policy": on_policy}}

    token, dist, mixed = (describe(data, variant(**o)) for o in ({}, {"loss": "distribution", "teacher_topk": 8},
                                                                 {"lmbda": 0.5}))
    assert (token["divergence"], token["topk"], token["bytes_per_token"]) == ("sampled reverse KL", None, None)
    assert dist["divergence"] == "reverse_kl on the teacher's top-8" and dist["bytes_per_token"] is None
    assert (mixed["topk"], mixed["bytes_per_token"]) == (20, 120.0)
    rewarded = describe(data, variant(reward_coef=4.0, rollouts_per_prompt=4))
    assert rewarded["divergence"] == "sampled reverse KL + verifier reward ×4 (4 rollouts a prompt)"


def test_examples_are_chosen_deterministically():
    from r1distill.report.accuracy import pick_examples

    student = {"a": 1.0, "b": 0.0, "c": 1.0, "d": 1.0, "e": 0.0}
    init = {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0, "e": 0.0}
    teacher = {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0, "e": 0.0}
    assert pick_examples(student, init, teacher) == ["c", "d", "a"]  # learnt first, then the teacher's
    assert pick_examples(student, init, teacher, n=5) == ["c", "d", "a", "b", "e"]


def test_the_screenshot_height_falls_back_to_an_estimate_that_holds_every_figure(tmp_path):
    """Without a height from the DOM (a stand-in browser that prints none), the script estimates one from the HTML,
    at least the embedded figures' heights, instead of giving up."""
    import os
    import subprocess

    run = tmp_path / "lab"
    _variant_run(run, {"sft": SFT, "kd": KD5}, {"teacher": {"p00", "p01"}, "student:sft": {"p00"},
                                               "student:kd": {"p01"}})
    write_report(run)
    html = (run / "report.html").read_text()
    figures = sum(int(h) for h in re.findall(r'<img [^>]*?height="(\d+)"', html))
    fake = tmp_path / "chromium"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'calls.txt'}\n")
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(Path(__file__).parents[2] / "scripts" / "screenshot_report.sh"), str(run),
                           str(tmp_path / "r.png")], capture_output=True, text=True,
                          env={**os.environ, "CHROMIUM": str(fake)})
    assert done.returncode == 0 and "estimated" in done.stderr, done.stderr
    shot = next(c for c in (tmp_path / "calls.txt").read_text().splitlines() if "--screenshot" in c)
    height = int(re.search(r"--window-size=1280,(\d+)", shot).group(1))
    assert figures > 1500 and height > figures + 1000


def test_the_funnel_ends_in_a_kept_bar(tmp_path, monkeypatch):
    from r1distill.report import figures

    drawn = []
    monkeypatch.setattr(figures, "funnel", lambda steps: drawn.append(steps) or figures.stage_times([("x", 1.0)], []))
    _write(tmp_path / "curated" / "stats.json", {"total": 10, "kept": 6, "funnel": [
        {"step": "generated", "left": 10}, {"step": "truncated", "rejected": 3, "left": 7},
        {"step": "duplicate", "rejected": 1, "left": 6}]})
    write_report(tmp_path)
    assert drawn == [[("generated", 10, None), ("truncated", 7, 3), ("duplicate", 6, 1), ("kept", 6, None)]]


def test_a_variant_starts_from_its_own_untrained_student_when_eval_has_one():
    from r1distill.report.accuracy import best_student, init_of

    r = lambda p: {"b": {"pass@1": p}}
    ev = {"teacher": r(0.5), "student_init": r(0.0), "student_init:deep": r(0.01), "student:sft": r(0.2),
          "student:deep": r(0.3), "student:kd": r(0.3)}
    assert best_student(ev, "b") == "student:deep"  # the first of equals
    assert init_of(ev, "student:deep") == "student_init:deep" and init_of(ev, "student:kd") == "student_init"
    assert init_of({"student": r(0.1)}, "student") is None


def test_the_eval_settings_table_wraps_its_words_at_a_bounded_width(tmp_path):
    from html import escape

    from r1distill.report.html import CSS

    # A long prompt name and system line: the cells held on one line (white-space:nowrap) and the table overflowed
    # its column beside the chart at 1280 px. Its cells now wrap at a bounded width; the number tables do not.
    system = "Solve the math word problem. Write each calculation on its own line, then 'The answer is N.'"
    m = {"problems": 4, "samples": 4, "k": 1, "pass@1": 0.5, "answered": 0.5, "mean_tokens": 10.0}
    _write(tmp_path / "eval" / "summary.json", {
        "teacher": {"gsm8k": m, "_prompt": "r1-instruction-with-worked-examples-as-earlier-chat-turns"},
        "student": {"gsm8k": m, "_prompt": "r1-instruction-with-worked-examples-as-earlier-chat-turns"}})
    _write(tmp_path / "eval" / "config.yaml", f"eval:\n  temperature: 0.6\n  top_p: 0.95\n  max_new_tokens: 256\n"
                                              f"  prompt:\n    system: \"{system}\"\n")
    write_report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    tables = re.findall(r"<table[^>]*><thead>.*?</table>", html, re.S)
    (settings,) = [t for t in tables if "<th>decoding</th>" in t]
    assert settings.startswith('<table class="wrap">') and escape(system) in settings
    assert all(t.startswith("<table><thead>") for t in tables if t is not settings)
    rules = {sel.strip(): body for sel, body in re.findall(r"([^{}]+)\{([^}]*)\}", CSS)}
    assert "white-space:normal" in rules["table.wrap th, table.wrap td"]
    assert "overflow-wrap:anywhere" in rules["table.wrap th, table.wrap td"]
    assert re.search(r"max-width:\s*\d+em", rules["table.wrap td.text"])
