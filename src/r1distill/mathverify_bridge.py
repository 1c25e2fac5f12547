"""The bridge to Math-Verify: its parse and comparison under our time limits, and its own LaTeX pattern.

Separate from r1distill.verify (grading) and r1distill.answer_extraction (finding the answer) because this is the
one place that calls into Math-Verify, whose calls can hang in sympy and report a timeout only by answering "[]" or
False: here each call gets an alarm where one works (`mv_timeout`), and a call that used its whole alarm raises
`OutOfTime`, so that a grader can tell "undecided" from "different". See r1distill.verify's docstring for what
Math-Verify may and may not see of model output.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from math_verify.parser import get_extraction_regexes

# Math-Verify logs every timeout/parse failure; model output is noisy, so keep those logs quiet.
logging.getLogger("math_verify").setLevel(logging.ERROR)


@lru_cache(maxsize=1)
def latex_env_re() -> re.Pattern[str] | None:
    """Math-Verify's own unanchored LaTeX pattern (priority 300 of ``LatexExtractionConfig``), or None."""
    try:
        ((patterns, _config),) = get_extraction_regexes([LatexExtractionConfig()])
        return next((pat for pat, priority in patterns if priority == 300), None)
    except Exception:  # noqa: BLE001 - another Math-Verify version: do without the LaTeX rule
        return None


def mv_timeout(timeout: float) -> int | None:
    # Math-Verify times out with signal.alarm, which only works in the main thread and only takes whole
    # seconds. Off the main thread run without it; `verify_many(..., hard_limit=True)` adds a process-based
    # hard limit (an alarm is also lost when it fires inside a garbage-collector callback, and cannot cut a
    # C call that never checks for signals, such as gmpy2's arithmetic, so that limit is needed anyway).
    if threading.current_thread() is not threading.main_thread():
        return None
    return max(1, math.ceil(timeout))


class OutOfTime(Exception):
    """A Math-Verify call ran until its alarm: the verdict is undecided ("timeout"), not a real mismatch."""


def _ran_out(t0: float, timeout: int | None) -> bool:
    # Math-Verify swallows its own TimeoutException and answers "[]" / False; a call that took the whole
    # alarm is how a timeout shows from outside.
    return timeout is not None and time.monotonic() - t0 >= timeout


@lru_cache(maxsize=4096)  # golds repeat across every sample of a problem
def _mv_parse_cached(s: str, timeout: int | None) -> tuple | None:
    cfg = [LatexExtractionConfig(), ExprExtractionConfig()]
    t0 = time.monotonic()
    try:
        out = tuple(parse("\\boxed{" + s + "}", cfg, parsing_timeout=timeout))
    except (Exception, TimeoutException):  # noqa: BLE001 - a grader must never crash on model output
        out = ()
    return None if not out and _ran_out(t0, timeout) else out


def mv_parse(s: str, timeout: int | None) -> tuple:
    """Math-Verify parse of a bare answer; wrapped in \\boxed{} so the LaTeX extractor finds it whole.

    Raises ``OutOfTime`` when the parse ran out of time. That is cached like any result, so an answer
    that timed out once (a gold shared by every sample of a problem) does not cost its timeout again."""
    if (out := _mv_parse_cached(s, timeout)) is None:
        raise OutOfTime
    return out


def mv_equal(pred: str, gold: str, timeout: int | None) -> bool:
    gold_parsed, pred_parsed = mv_parse(gold, timeout), mv_parse(pred, timeout)
    if not gold_parsed or not pred_parsed:
        return False
    t0 = time.monotonic()
    try:
        # order matters; allow_set_relation_comp: "$-2 \\le x \\le 7$" is the gold "[-2, 7]" too (Math-Verify
        # compares a relation with a set by default only when the gold is the relation)
        same = bool(verify(list(gold_parsed), list(pred_parsed), allow_set_relation_comp=True,
                           timeout_seconds=timeout))
    except (Exception, TimeoutException):  # noqa: BLE001 - a grader must never crash on model output
        same = False
    if not same and _ran_out(t0, timeout):
        raise OutOfTime
    return same
