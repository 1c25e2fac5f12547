"""The one answer verifier shared by curation, evaluation and (later) RL rewards.

Pipeline: ``extract_answer`` pulls a final answer out of a model completion with cheap linear scans,
``normalize_answer`` removes presentation noise, and ``is_equivalent`` compares two answers with a
fast string/number path before falling back to Math-Verify's symbolic comparison. ``verify_answer``
grades one completion; ``verify_many`` grades many over worker processes, with a hard time limit per row
(always with ``hard_limit=True``, else only for batches of ``MIN_PARALLEL_ROWS`` rows or more).
Extraction lives in r1distill.answer_extraction and the calls into Math-Verify in r1distill.mathverify_bridge;
this module imports what it grades with from them, and re-exports the extraction API.

Free-form answers: without a box, "####" or "the answer is", the answer is the last LaTeX environment
(found with Math-Verify's own unanchored LaTeX pattern, over the tail of the text) or the last number,
whichever ends later, as in Math-Verify's own extraction. Numbers follow Math-Verify's formats where they
are unambiguous: "3 500" and "1,234" are thousands, "2,5" is a decimal comma, "1, 2" and "1,2,3" are lists.

Several boxes that end a completion with only commas, "and", "or" or spacing between them ("\\boxed{1}, \\boxed{2}")
are one list answer, as Math-Verify would read "1, 2" (a set: order does not matter); boxes with reasoning between
them are not (the last one is the answer). Units are dropped from a number, in lists too: "10\\text{ cm}",
"18 dollars", ASDiv's "9 (apples)", "30^\\circ". After "the answer is" / "Final Answer:", prose keeps the value
after its last "=" or "is"/"equals" ("The largest $n$ is 34" -> 34).

Model output is data: nothing here evals or execs it. Extraction is regular expressions only (no sympy);
sympy sees an answer only inside Math-Verify's ``parse``/``verify``. Math-Verify's ``ExprExtractionConfig``
does call sympy's ``parse_expr`` (which uses ``eval``), but only on regex matches made of digits, dots,
spaces and arithmetic operators, so no identifiers or attribute access can reach it.

Percent policy: ``normalize_answer`` keeps "%" (canonicalising "\\%" to "%") and leaves the decision to
Math-Verify, which accepts "50%" as equal to both "50" and "0.5". Graders differ on this; we follow
Math-Verify so that curation, evaluation and rewards agree with the library everyone else reports.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from math_verify.errors import TimeoutException

from r1distill.answer_extraction import (  # noqa: F401 (re-exported: verify is the verifier's one entry point)
    ASSIGN_RE,
    MAX_ANSWER_CHARS,
    MAX_TEXT_CHARS,
    Extraction,
    boxes_answer,
    extract_answer,
    last_boxed,
    strip_markup,
)
from r1distill.mathverify_bridge import OutOfTime, mv_equal, mv_parse, mv_timeout

# Bump when a change can alter a verdict: eval grades its stored outputs again (r1distill.evaluate).
# 2: several boxes as one list answer, units in parentheses and after list items, "is"/"equals" in prose, "32, 349"
#    a list (not thousands), "\ " a space.
VERSION = 2


@dataclass(frozen=True)
class Verdict:
    pred_answer: str | None
    rule: str | None
    correct: bool
    gold_ok: bool  # False when the gold cannot be parsed at all: flag the row, do not count it wrong


# ----------------------------------------------------------------------------------------------------------
# Normalization

_NUM = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:(?:,|\{,\}|\\,)\d{3})+(?:\.\d+)?")
_TEXT_UNIT_RE = re.compile(rf"^({_NUM})\s*(?:\\(?:text|mbox|mathrm)\{{[^{{}}]*\}}\s*)+$")
_WORD_UNIT_RE = re.compile(rf"^({_NUM})\s+[a-zA-Z]{{2,}}(?:\s+[a-zA-Z]{{2,}}){{0,2}}$")
# ASDiv stores answers as "9 (apples)", "0.5 (km)": a number, then its unit in parentheses (words, no digits)
_PAREN_UNIT_RE = re.compile(rf"^({_NUM})\s*\(\s*[a-zA-Z][a-zA-Z .'/-]*\)$")
# a degree sign after a number: "30°", "30^\circ", "30^{\circ}" (compared by the number; "%" is kept: Math-Verify
# takes "50%" as 50 and as 0.5, the percent policy above)
_SIGN_UNIT_RE = re.compile(rf"^({_NUM})\s*(?:°|\^\s*\{{?\s*\\circ\s*\}}?)$")
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}$")
_LATEX_SPACE_RE = re.compile(r"(?<!\\)\\ ")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![a-zA-Z])")
# keep only spaces between letters ("\pi r") and after a comma before a digit: "32, 349" is a list, "32,349" thousands
_SPACE_RE = re.compile(r"(?<![a-zA-Z,])\s+|(?<=[a-zA-Z])\s+(?![a-zA-Z])|(?<=,)\s+(?!\d)")


def _drop_unit(s: str) -> str:
    """A number with a unit -> the number ("10\\text{ cm}", "18 dollars", "9 (apples)", "30^\\circ"); else `s`."""
    for unit_re in (_TEXT_UNIT_RE, _WORD_UNIT_RE, _PAREN_UNIT_RE, _SIGN_UNIT_RE):
        if m := unit_re.match(s.strip()):
            return m.group(1)
    return s


def normalize_answer(s: str) -> str:
    """Light, meaning-preserving normalization applied to both sides before comparison."""
    s = s[:MAX_ANSWER_CHARS].replace("\u2212", "-")
    if "\\boxed" in s or "\\fbox" in s:
        s = boxes_answer(s) or s
    s = strip_markup(s)
    s = re.sub(r"\\!\s*", "", s)
    s = _LATEX_SPACE_RE.sub(" ", s)  # "\ " is a space ("x = -5,\ p = 3"); a matrix's row break "\\ " is not
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
    s = _LEFT_RIGHT_RE.sub("", s).replace("\\$", "$")
    s = re.sub(r"^\$\s*(?=[-\d.])", "", s)  # currency "$18" (surrounding $...$ is gone by now)
    if s.count("=") == 1:
        s = ASSIGN_RE.sub("", s)  # "x = 3" -> "3", but "x = 1, y = 2" keeps both parts
    if m := _TEXT_WRAP_RE.match(s):
        s = m.group(1)
    if _THOUSANDS_RE.fullmatch(s.strip()):
        s = re.sub(r"\{,\}|\\,|,", "", s)
    # "10\text{ cm}" / "18 dollars" / "9 (apples)" / "30^\circ" -> the number
    s = ",".join(_drop_unit(item) for item in s.split(","))  # each item of a list too: "35 cm, 4" -> "35,4"
    s = _SPACE_RE.sub("", re.sub(r"\s+", " ", s.strip()))
    return strip_markup(s)


# ----------------------------------------------------------------------------------------------------------
# Equivalence

_DECIMAL_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_WORDS_RE = re.compile(r"[A-Za-z ]+")
_RATIO_RE = re.compile(r"(-?\d+)/(\d+)|(-?)\\frac\{(\d+)\}\{(\d+)\}")


def _as_number(s: str) -> Fraction | None:
    """Exact value of a plain decimal, "a/b" or "\\frac{a}{b}" string, else None."""
    if _DECIMAL_RE.fullmatch(s):
        return Fraction(s)
    if m := _RATIO_RE.fullmatch(s):
        num, den = (m.group(1), m.group(2)) if m.group(2) else (m.group(3) + m.group(4), m.group(5))
        return Fraction(int(num), int(den)) if int(den) else None
    return None


def _fast_equal(pred: str, gold: str) -> bool:
    if pred == gold or (_WORDS_RE.fullmatch(pred) and pred.casefold() == gold.casefold()):
        return True  # word answers ("Evelyn", "east") are case-insensitive; Math-Verify reads them as symbols
    p, g = _as_number(pred), _as_number(gold)
    return p is not None and p == g


def _equivalent(pred: str, gold: str, timeout: float) -> bool:
    """``is_equivalent``, except that it raises ``OutOfTime`` when Math-Verify ran out of time."""
    try:
        p, g = normalize_answer(pred), normalize_answer(gold)
        if not p or not g:
            return False
        return _fast_equal(p, g) or mv_equal(p, g, mv_timeout(timeout))
    except OutOfTime:
        raise
    except (Exception, TimeoutException):  # noqa: BLE001 - a grader must never crash on model output
        return False


def is_equivalent(pred: str, gold: str, timeout: float = 5.0) -> bool:
    """True if ``pred`` is mathematically the same answer as ``gold``. Never raises."""
    try:
        return _equivalent(pred, gold, timeout)
    except OutOfTime:
        return False


def verify_answer(text: str, gold: str, last_number: bool = True, timeout: float = 5.0) -> Verdict:
    """Extract the answer from a completion and grade it against ``gold``.

    Rows with ``gold_ok=False`` have a gold that neither normalizes to a number nor parses with
    Math-Verify; callers should report them separately rather than count them as wrong. A row whose
    Math-Verify parse or comparison ran out of its ``timeout`` gets ``correct=False, rule="timeout"``,
    like a row that ``verify_many`` abandons at its hard limit.
    """
    ext = extract_answer(text, last_number=last_number)
    g = normalize_answer(gold)
    try:
        gold_ok = bool(g) and (_as_number(g) is not None or bool(mv_parse(g, mv_timeout(timeout))))
        correct = ext.answer is not None and _equivalent(ext.answer, gold, timeout)
    except OutOfTime:
        return Verdict(pred_answer=ext.answer, rule="timeout", correct=False, gold_ok=True)
    return Verdict(pred_answer=ext.answer, rule=ext.rule, correct=correct, gold_ok=gold_ok)


# ----------------------------------------------------------------------------------------------------------
# Many rows, over processes

MIN_PARALLEL_ROWS = 64  # below this, starting workers costs more than it saves
_TASKS_PER_CHILD = 2000  # recycle workers now and then: sympy's and our parse caches grow per process
TIMED_OUT = object()  # result placeholder for an item abandoned by `map_with_hard_limit`


def hard_limit(timeout: float) -> float:
    """Wall-clock seconds one row may take in a worker: Math-Verify's three alarms (gold parse, prediction
    parse, comparison) of ``ceil(timeout)`` seconds each, plus a second of slack."""
    return 3 * max(1, math.ceil(timeout)) + 1.0


def worker_context() -> Any:
    # fork on Linux: workers start at once with this module and its caches loaded, and never re-import the
    # caller's main module as spawn/forkserver do (which re-runs a script that lacks a __main__ guard, model
    # loading and all). The caller's threads (a progress bar) are not copied; a worker that deadlocks on a
    # lock one of them held at the fork is caught by the hard limit like any other stuck row.
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def map_with_hard_limit(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, limit: float,
                        on_done: Callable[[int], None] | None = None) -> list[Any]:
    """``[fn(x) for x in items]`` over ``workers`` processes; an item still running after ``limit``
    seconds is abandoned (its result is ``TIMED_OUT``) and the pool is killed and restarted.

    Workers take items in order, so by the time item i-1 has been collected item i is running: if it
    is not done ``limit`` seconds later, it has itself run at least that long.
    """
    results: list[Any] = []
    while len(results) < len(items):
        rest = items[len(results) :]
        with worker_context().Pool(min(workers, len(rest)), maxtasksperchild=_TASKS_PER_CHILD) as pool:
            it = pool.imap(fn, rest)
            for _ in rest:
                try:
                    results.append(it.next(limit))
                except mp.TimeoutError:
                    results.append(TIMED_OUT)
                    break  # leaving the `with` terminates the pool, stuck worker included
                finally:
                    if on_done:
                        on_done(1)
    return results


def _verify_row(args: tuple[str, str, bool, float]) -> Verdict:
    return verify_answer(*args)


_row_limit = hard_limit  # `verify_many`'s `hard_limit` flag shadows the function there


def verify_many(texts: Sequence[str], golds: Sequence[str], last_number: bool = True, timeout: float = 5.0,
                num_workers: int = 0, on_done: Callable[[int], None] | None = None,
                hard_limit: bool = False) -> list[Verdict]:
    """``verify_answer`` for each (text, gold) pair, over ``num_workers`` processes (0 = all CPUs).

    Each worker runs ``verify_answer`` in its main thread, where Math-Verify's SIGALRM limit works. A row
    still running after ``hard_limit(timeout)`` seconds (stuck in C code, which signals cannot interrupt)
    is abandoned and gets ``correct=False, rule="timeout"``. Fewer than ``MIN_PARALLEL_ROWS`` rows, or
    one worker, run in this process, with no hard limit (and off the main thread with no limit at all),
    unless ``hard_limit=True``: then every batch, even of one row, goes through worker processes (at
    least one), so that no row can take longer than ``hard_limit(timeout)``. Evaluation wants that; it
    costs a process start per call. ``on_done(k)`` is called as rows finish, e.g. to advance a bar.
    """
    if len(texts) != len(golds):
        raise ValueError(f"verify_many: {len(texts)} texts but {len(golds)} golds")
    rows = [(t[-MAX_TEXT_CHARS:], g, last_number, timeout) for t, g in zip(texts, golds)]
    workers = min(num_workers or os.cpu_count() or 1, len(rows))
    if not rows or (not hard_limit and (workers <= 1 or len(rows) < MIN_PARALLEL_ROWS)):
        out = []
        for row in rows:
            out.append(_verify_row(row))
            if on_done:
                on_done(1)
        return out
    results = map_with_hard_limit(_verify_row, rows, max(1, workers), _row_limit(timeout), on_done)
    return [_timed_out(row[0], last_number) if r is TIMED_OUT else r for r, row in zip(results, rows)]


def _timed_out(text: str, last_number: bool) -> Verdict:
    # extraction is a few linear scans, safe to redo here; only the comparison is in doubt
    return Verdict(extract_answer(text, last_number).answer, "timeout", correct=False, gold_ok=True)
