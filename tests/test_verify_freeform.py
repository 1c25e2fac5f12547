"""The verifier against held-out free-form gold/prediction pairs, and against plain Math-Verify on them.

Built by tests/data/make_verify_freeform.py from MATH-500 and GSM8K gold answers, with completions rewritten
in free-form kinds (no box, "so $x = \\frac{7}{4}$", "3 500", "2,5 kg", intervals, matrices, "the answer is"
followed by prose...), near misses that must be rejected, and boxed completions; ``expected`` is a human
grader's verdict, not either tool's. verify_freeform.jsonl was written before the verifier change;
verify_freeform_blind.jsonl after it, with new phrasings, and measured without tuning to it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
from math_verify import parse, verify

from r1distill.verify import verify_many

DATA = Path(__file__).resolve().parent / "data"
# Measured agreement with `expected` (verify_answer / plain Math-Verify): main 359/362 (99.2%) / 281/362
# (77.6%); blind 121/128 (94.5%) when first measured, 124/128 (96.9%) after two general fixes it showed
# (U+2212 minus, relation vs set gold) / 91/128 (71.1%). The floors leave room for a verdict or two that
# depends on timing (a Math-Verify call near its time limit on a loaded machine).
SETS = {"verify_freeform.jsonl": 0.97, "verify_freeform_blind.jsonl": 0.92}


@cache
def pairs(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


@cache
def ours(name: str) -> tuple[bool, ...]:
    rows = pairs(name)
    verdicts = verify_many([p["pred"] for p in rows], [p["gold"] for p in rows], timeout=5.0, num_workers=1)
    return tuple(v.correct for v in verdicts)


def _plain_math_verify(gold: str, pred: str) -> bool:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        return bool(verify(parse(gold), parse(pred)))
    except Exception:  # noqa: BLE001 - a crash is a wrong verdict
        return False


def _rate(name: str, got: tuple[bool, ...]) -> float:
    return sum(g == p["expected"] for g, p in zip(got, pairs(name))) / len(pairs(name))


def test_the_main_set_is_big_balanced_and_well_formed() -> None:
    rows = pairs("verify_freeform.jsonl")
    assert len(rows) >= 250
    assert 0.4 <= sum(p["expected"] for p in rows) / len(rows) <= 0.6
    kinds = Counter(p["kind"] for p in rows)
    assert len(kinds) >= 20 and kinds["boxed"] >= 20
    assert sum(not p["expected"] for p in rows if p["kind"] == "truncated") >= 10
    for name in SETS:
        for p in pairs(name):
            assert set(p) == {"gold", "pred", "expected", "kind", "source"}
            assert isinstance(p["expected"], bool) and p["gold"] and p["pred"] and p["kind"]
            assert p["source"] == "hand" or p["source"].split(":", 1)[0] in ("math500", "gsm8k")
            assert p["kind"] == "boxed" or "\\boxed" not in p["pred"]


@pytest.mark.parametrize("name", SETS)
def test_agrees_with_the_expected_verdicts_at_least_as_often_as_math_verify(name: str) -> None:
    plain = tuple(_plain_math_verify(p["gold"], p["pred"]) for p in pairs(name))
    ours_rate, mv_rate = _rate(name, ours(name)), _rate(name, plain)
    wrong = [(p["kind"], p["gold"], p["pred"][-80:]) for g, p in zip(ours(name), pairs(name)) if g != p["expected"]]
    assert ours_rate >= mv_rate, (ours_rate, mv_rate, wrong)
    assert ours_rate >= SETS[name], (ours_rate, wrong)


@pytest.mark.parametrize("name", SETS)
def test_every_boxed_pair_is_right(name: str) -> None:
    boxed = [(p, g) for p, g in zip(pairs(name), ours(name)) if "\\boxed" in p["pred"]]
    assert len(boxed) >= 4
    assert [p for p, g in boxed if g != p["expected"]] == []
