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

TINY = Path(__file__).with_name("tiny.yaml")
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
        doc = _read(run / DIRS[name] / ".r1distill_done.json")
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
    # stats.json from before the funnel existed: the funnel is rebuilt from the reject counts, in their order
    _write(run / "curated" / "stats.json", {"total": 10, "kept": 3, "rejected": {"truncated": 4, "no_answer": 0,
                                                                                  "incorrect": 3},
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
    _write(run / "student" / ".r1distill_done.json", {"hash": "x", "seconds": 13.25})

    write_report(run)
    page = _page(run)
    shown = _check_numbers(run, page)
    assert ("curate", "rejected", "truncated") in shown and ("curate", "rejected", "incorrect") in shown
    assert ("curate", "rejected", "no_answer") not in shown  # zero counts are not funnel steps
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
