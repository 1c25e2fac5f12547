"""The verifier returns a Verdict within its time limit and never raises, whatever the model wrote."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1distill import verify
from r1distill.verify import TIMED_OUT, Verdict, hard_limit, map_with_hard_limit, verify_answer, verify_many

TIMEOUT = 1.0
LIMIT = hard_limit(TIMEOUT)  # the most one row may take in a worker: Math-Verify's alarms plus slack
# In this process nothing kills a slow row: the alarms bound Math-Verify, but the linear extraction scans over
# the megabyte inputs come on top (seen at 4.07 s against LIMIT 4.0 on a 2-core CI machine). A hang would still
# fail this bound; verify_many's worker pool is what enforces LIMIT itself (see the stuck-row test below).
# The bound is on this process's CPU time, not the wall clock: a machine busy with other work (load 5 on 2 cores
# broke a wall-clock bound) slows a call down without making it do more.
IN_PROCESS_LIMIT = 2 * LIMIT
MB = 1_000_000
# Built once: megabyte inputs aimed at the extraction scans, the brace matcher and Math-Verify.
ADVERSARIAL = [
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "{" * MB,
    "\\boxed{" * (MB // 7),
    "9" * MB,
    "The answer is " * (MB // 14),
    "#### " + "1," * (MB // 2),
    "<think>" + "x " * (MB // 2) + "</think>\\boxed{" + "(" * 5_000 + "1" + ")" * 5_000 + "}",
    "\\boxed{\\frac{" * 2_000 + "1" + "}{2}}" * 2_000,
    "$" * MB,
    "$" + "x" * MB,
    "$a$ " * (MB // 4),
]
GOLDS = ["1", "\\frac{1}{2}", "9^{9^{9^{9}}}", "x^2+1", "\\{1,2\\}", "\\text{east}"]
# LaTeX-ish pieces, so random strings reach the boxed/answer-is/Math-Verify paths, not just the fallbacks.
PIECES = st.sampled_from(["\\boxed{", "}", "{", "^", "9", "\\frac", "\\sqrt", "</think>", "The answer is ",
                          "####", "$", "\\", ".", "-", "1/2", "x", "\\pi", "e", "=", ",", " ", "\n", "!",
                          # the free-form rules: environments, "Answer:", tuples, thousands, decimal commas
                          "\\(", "\\)", "\\[", "\\]", "$$", "(", ")", "[", "Final Answer: ", "\nAnswer: ",
                          " 000", "2,5", " and ", "\\begin{pmatrix}", "&", "\\end{pmatrix}", "\u2212", "%"])
RANDOM = st.one_of(st.text(max_size=300), st.lists(PIECES, max_size=60).map("".join))
# About one draw in five is adversarial (with a random tail): those can take a whole Math-Verify alarm each.
TEXTS = st.one_of(RANDOM, RANDOM, RANDOM, RANDOM, st.tuples(st.sampled_from(ADVERSARIAL), RANDOM).map("".join))
SETTINGS = settings(max_examples=200, deadline=None, database=None,  # bounded by CPU time below, not the wall
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _timed(fn, *args, **kwargs):
    """fn's result and the CPU seconds this process spent in it."""
    t0 = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - t0


@SETTINGS
@given(text=TEXTS, gold=st.one_of(st.sampled_from(GOLDS), st.text(max_size=50)))
def test_verify_answer_is_total_and_bounded(text, gold):
    v, seconds = _timed(verify_answer, text, gold, timeout=TIMEOUT)
    assert isinstance(v, Verdict) and isinstance(v.correct, bool) and seconds < IN_PROCESS_LIMIT
    assert v.pred_answer is None or len(v.pred_answer) <= verify.MAX_ANSWER_CHARS


@settings(SETTINGS, max_examples=30)
@given(pairs=st.lists(st.tuples(st.text(max_size=200), st.sampled_from(GOLDS)), max_size=4))
def test_verify_many_in_process_matches_verify_answer(pairs):
    texts, golds = [t for t, _ in pairs], [g for _, g in pairs]
    done = []
    verdicts, seconds = _timed(verify_many, texts, golds, timeout=TIMEOUT, on_done=done.append)
    assert verdicts == [verify_answer(t, g, timeout=TIMEOUT) for t, g in pairs]
    assert sum(done) == len(pairs) and seconds < LIMIT * max(len(pairs), 1)


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_inputs_return_within_the_limit(text):
    for gold in ("1", "9^{9^{9^{9}}}"):
        v, seconds = _timed(verify_answer, text, gold, timeout=TIMEOUT)
        assert isinstance(v, Verdict) and seconds < IN_PROCESS_LIMIT


def test_verify_many_over_processes_agrees_with_one_process():
    texts = [f"so \\boxed{{{i % 7}}}" for i in range(verify.MIN_PARALLEL_ROWS)] + ADVERSARIAL
    golds = [str(i % 5) for i in range(len(texts))]
    done = []
    verdicts = verify_many(texts, golds, timeout=TIMEOUT, num_workers=2, on_done=done.append)
    assert verdicts == verify_many(texts, golds, timeout=TIMEOUT, num_workers=1)
    assert sum(done) == len(texts)
    with pytest.raises(ValueError, match="texts but"):
        verify_many(["a"], [], num_workers=1)


def test_a_row_stuck_past_the_hard_limit_is_abandoned_and_the_rest_finish():
    # time.sleep stands in for a worker hung in C code: no alarm is set, only the parent's limit applies.
    items = [0.0, 60.0, 0.0, 0.0, 0.0, 0.0]
    t0 = time.perf_counter()
    results = map_with_hard_limit(time.sleep, items, workers=2, limit=1.0)
    assert results[1] is TIMED_OUT and results[:1] + results[2:] == [None] * 5
    assert time.perf_counter() - t0 < 30  # far below the 60 s sleep: the stuck worker was killed


def test_timed_out_rows_get_a_timeout_verdict(monkeypatch):
    monkeypatch.setattr(verify, "map_with_hard_limit", lambda fn, rows, *a: [TIMED_OUT] * len(rows))
    n = verify.MIN_PARALLEL_ROWS
    verdicts = verify_many(["The answer is \\boxed{3}."] * n, ["3"] * n, num_workers=2)
    assert verdicts[0] == Verdict(pred_answer="3", rule="timeout", correct=False, gold_ok=True)


# A row that really hangs Math-Verify: sympy evaluates 9^(9^9) = 9**387420489 in its numeric comparison.
# Without a time limit (Math-Verify's alarms off, as off the main thread) it was still running after 120 s
# on a 2-core machine; with the alarm in a main thread it is cut after `timeout` seconds.
HANGS = "So the answer is $\\boxed{9^{9^{9}}}$."


def test_a_hanging_row_times_out_in_process_in_the_main_thread():
    v, seconds = _timed(verify_answer, HANGS, "1", timeout=TIMEOUT)
    assert v == Verdict(pred_answer="9^{9^{9}}", rule="timeout", correct=False, gold_ok=True)
    assert seconds < LIMIT


def test_hard_limit_grades_a_small_batch_off_the_main_thread_within_the_limit():
    # In-process grading off the main thread has no limit at all (signal.alarm needs the main thread); with
    # hard_limit=True even two rows go to a worker process, where the row is cut and counted wrong.
    out: list = []
    worker = threading.Thread(target=lambda: out.append(_timed(
        verify_many, [HANGS, "The answer is 1."], ["1", "1"], timeout=TIMEOUT, hard_limit=True)))
    worker.start()
    worker.join(60)
    assert out, "verify_many(hard_limit=True) did not return within 60 s"
    (verdicts, seconds), = out
    assert verdicts[0].rule == "timeout" and not verdicts[0].correct
    assert verdicts[1] == Verdict(pred_answer="1", rule="answer_is", correct=True, gold_ok=True)
    assert seconds < LIMIT + 20  # + the pool's start-up; generous for a busy machine (unbounded, it takes minutes)


def test_hard_limit_kills_a_row_that_no_alarm_can_stop(monkeypatch):
    # Math-Verify's alarm cannot stop a long C call (gmpy2 arithmetic, or an alarm lost in a gc callback):
    # turn the alarms off so that the worker really hangs in sympy; the parent's hard limit kills it.
    monkeypatch.setattr(verify, "mv_timeout", lambda timeout: None)
    texts = ["The answer is 2.", HANGS, "The answer is 3."]
    t0 = time.perf_counter()  # the wall clock: the row hangs in a worker process, not in this one
    verdicts = verify_many(texts, ["2", "1", "3"], timeout=TIMEOUT, num_workers=1, hard_limit=True)
    seconds = time.perf_counter() - t0
    assert verdicts[1] == Verdict(pred_answer="9^{9^{9}}", rule="timeout", correct=False, gold_ok=True)
    assert [v.correct for v in verdicts] == [True, False, True]
    assert LIMIT <= seconds < LIMIT + 20  # abandoned at the limit, then a fresh pool for the last row (not minutes)


def test_hard_limit_for_one_row_and_for_none():
    assert verify_many(["\\boxed{7}"], ["7"], hard_limit=True)[0].correct
    assert verify_many([], [], hard_limit=True) == []
