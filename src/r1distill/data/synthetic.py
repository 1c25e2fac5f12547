"""Seeded grade-school word problems with integer answers.

Three levels: "easy" (one step, operands <= 20, answers 0..100, simple enough for a ~135M chat
model), "medium" (one step, numbers up to ~100, products up to ~1000) and "hard" (two or three
steps). Every solution is a list of `a op b = c` lines ending with `#### <answer>`.

Train and test never overlap: each problem text is bucketed by a stable hash (sha256, not
Python's salted `hash`), and the train split skips the test bucket while the test split keeps
only it. The frozen test set (400 easy, 100 medium and 100 hard problems, seed 1234) ships as a JSONL file; the
easy level is large enough to tell models apart (a 95% CI half-width near 0.045 at 30% accuracy). Its first 100
easy problems are the 100 it held before it grew: drawing more from the same seed only appends.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from r1distill.config import UserError

LEVELS = ("easy", "medium", "hard")
SPLITS = ("train", "test")
TEST_SEED = 1234
TEST_PER_LEVEL = {"easy": 400, "medium": 100, "hard": 100}
TEST_FILE = "synthetic_test.jsonl"

NAMES = [("Tom", "He"), ("Anna", "She"), ("Sam", "He"), ("Lily", "She"), ("Ben", "He"), ("Mia", "She"),
         ("Jack", "He"), ("Emma", "She"), ("Leo", "He"), ("Zoe", "She"), ("Omar", "He"), ("Sara", "She"),
         ("Ravi", "He"), ("Nina", "She"), ("Carlos", "He"), ("Yuki", "She"), ("Max", "He"), ("Ella", "She")]
OBJECTS = ["apples", "oranges", "pencils", "stickers", "marbles", "cookies", "books", "cards", "balloons",
           "crayons", "shells", "stamps", "candies", "eggs", "flowers", "blocks", "toy cars", "buttons"]
CONTAINERS = [("bag", "bags"), ("box", "boxes"), ("basket", "baskets"), ("pack", "packs"), ("jar", "jars")]
ITEMS = [("notebook", "notebooks"), ("pen", "pens"), ("sandwich", "sandwiches"), ("toy", "toys"),
         ("ticket", "tickets"), ("cup of juice", "cups of juice"), ("comic book", "comic books"),
         ("ball", "balls"), ("plant", "plants"), ("hat", "hats")]


class Ctx(NamedTuple):
    """The words a template fills in; drawn once per problem."""

    name: str
    he: str  # "He" / "She"
    friend: str
    obj: str
    box1: str  # singular container
    box: str
    item: str
    items: str


Step = tuple[str, int, str, int]  # (explanation, a, op, b)
Template = Callable[[random.Random, Ctx], tuple[str, list[Step]]]
R = random.Random


# ---- easy: one step, operands <= 20, answers 0..100 -------------------------------------------
def _e_add(r: R, c: Ctx) -> tuple[str, list[Step]]:
    a, b = r.randint(2, 20), r.randint(2, 20)  # >= 2 so the plural nouns read right
    p = f"{c.name} has {a} {c.obj}. {c.he} buys {b} more {c.obj}. How many {c.obj} does {c.name} have now?"
    return p, [(f"{c.name} has {a} {c.obj} and buys {b} more", a, "+", b)]


def _e_pick(r: R, c: Ctx) -> tuple[str, list[Step]]:
    a, b = r.randint(2, 20), r.randint(2, 20)
    p = (f"{c.name} found {a} {c.obj} in the morning and {b} {c.obj} in the afternoon. "
         f"How many {c.obj} did {c.name} find in all?")
    return p, [("Morning plus afternoon", a, "+", b)]


def _e_give(r: R, c: Ctx) -> tuple[str, list[Step]]:
    a = r.randint(3, 20)
    b = r.randint(2, a - 1)
    p = (f"{c.name} has {a} {c.obj}. {c.he} gives {b} {c.obj} to {c.friend}. "
         f"How many {c.obj} does {c.name} have left?")
    return p, [(f"{c.name} gives away {b} of {a}", a, "-", b)]


def _e_left(r: R, c: Ctx) -> tuple[str, list[Step]]:
    a = r.randint(2, 20)
    b = r.randint(1, a)
    p = (f"There are {a} {c.obj} on a table. {c.name} takes {b} of them. "
         f"How many {c.obj} are on the table now?")
    return p, [(f"{b} of the {a} {c.obj} are taken", a, "-", b)]


def _e_mul(r: R, c: Ctx) -> tuple[str, list[Step]]:
    a, b = r.randint(2, 10), r.randint(2, 10)
    p = (f"{c.name} has {a} {c.box}. There are {b} {c.obj} in each {c.box1}. "
         f"How many {c.obj} does {c.name} have?")
    return p, [(f"{a} {c.box} with {b} {c.obj} each", a, "*", b)]


def _e_div(r: R, c: Ctx) -> tuple[str, list[Step]]:
    k = r.randint(2, 5)
    q = r.randint(1, 20 // k)
    p = (f"{c.name} has {k * q} {c.obj}. {c.he} shares them equally among {k} friends. "
         f"How many {c.obj} does each friend get?")
    return p, [(f"{k * q} {c.obj} shared by {k} friends", k * q, "/", k)]


# ---- medium: one step, numbers up to ~100, products up to ~1000 --------------------------------
def _m_add(r: R, c: Ctx) -> tuple[str, list[Step]]:
    a, b = r.randint(21, 99), r.randint(11, 99)
    p = (f"A shop had {a} {c.obj}. Then it got a delivery of {b} more {c.obj}. "
         f"How many {c.obj} does the shop have now?")
    return p, [(f"{a} {c.obj} plus {b} delivered", a, "+", b)]


def _m_sub(r: R, c: Ctx) -> tuple[str, list[Step]]:
    a = r.randint(40, 150)
    b = r.randint(11, a - 5)
    p = f"A school has {a} {c.obj}. The students use {b} of them. How many {c.obj} are left?"
    return p, [(f"{b} of the {a} {c.obj} are used", a, "-", b)]


def _m_mul(r: R, c: Ctx) -> tuple[str, list[Step]]:
    a, b = r.randint(11, 40), r.randint(6, 25)
    p = f"{c.name} buys {a} {c.box} of {c.obj}. Each {c.box1} holds {b} {c.obj}. How many {c.obj} is that?"
    return p, [(f"{a} {c.box} with {b} each", a, "*", b)]


def _m_price(r: R, c: Ctx) -> tuple[str, list[Step]]:
    n, price = r.randint(3, 25), r.randint(5, 40)
    p = f"One {c.item} costs {price} dollars. How many dollars do {n} {c.items} cost?"
    return p, [(f"{n} {c.items} at {price} dollars each", n, "*", price)]


def _m_div(r: R, c: Ctx) -> tuple[str, list[Step]]:
    k, q = r.randint(3, 12), r.randint(8, 80)
    p = (f"A teacher has {k * q} {c.obj} and puts the same number into each of {k} {c.box}. "
         f"How many {c.obj} go into each {c.box1}?")
    return p, [(f"{k * q} {c.obj} split into {k} {c.box}", k * q, "/", k)]


# ---- hard: two or three steps -----------------------------------------------------------------
def _h_buy_give(r: R, c: Ctx) -> tuple[str, list[Step]]:
    a, n, each = r.randint(5, 60), r.randint(2, 9), r.randint(3, 15)
    d = r.randint(2, a + n * each - 1)
    p = (f"{c.name} has {a} {c.obj}. {c.he} buys {n} {c.box} with {each} {c.obj} in each, and then "
         f"gives {d} {c.obj} to {c.friend}. How many {c.obj} does {c.name} have now?")
    return p, [(f"The {c.box} hold", n, "*", each), ("After buying", a, "+", n * each),
               (f"After giving {d} away", a + n * each, "-", d)]


def _h_share(r: R, c: Ctx) -> tuple[str, list[Step]]:
    k, q = r.randint(2, 9), r.randint(3, 25)
    a = r.randint(2, k * q - 2)
    p = (f"{c.name} had {a} {c.obj} and found {k * q - a} more. {c.he} puts all of them equally into "
         f"{k} {c.box}. How many {c.obj} are in each {c.box1}?")
    return p, [("In total", a, "+", k * q - a), (f"Split into {k} {c.box}", k * q, "/", k)]


def _h_change(r: R, c: Ctx) -> tuple[str, list[Step]]:
    n, price = r.randint(2, 12), r.randint(2, 20)
    bill = next(b for b in (10, 20, 50, 100, 200, 500) if b > n * price)
    p = (f"{c.name} buys {n} {c.items} for {price} dollars each and pays with a {bill}-dollar bill. "
         f"How many dollars of change does {c.name} get?")
    return p, [(f"{n} {c.items} cost", n, "*", price), ("The change is", bill, "-", n * price)]


def _h_rows(r: R, c: Ctx) -> tuple[str, list[Step]]:
    rows, per, extra = r.randint(3, 15), r.randint(4, 20), r.randint(2, 30)
    p = (f"In a hall there are {rows} rows with {per} chairs in each row, and {extra} more chairs "
         f"by the door. How many chairs are in the hall?")
    return p, [("Chairs in rows", rows, "*", per), ("Adding the chairs by the door", rows * per, "+", extra)]


def _h_save(r: R, c: Ctx) -> tuple[str, list[Step]]:
    weeks, wage, k = r.randint(2, 8), r.randint(10, 50), r.randint(2, 6)
    rest = k * r.randint(1, (weeks * wage - 2) // k)  # a multiple of k, so the split is exact
    spent = weeks * wage - rest
    p = (f"{c.name} earns {wage} dollars a week for {weeks} weeks. {c.he} spends {spent} dollars and "
         f"splits the rest equally into {k} jars. How many dollars go into each jar?")
    return p, [("Total earned", weeks, "*", wage), (f"After spending {spent}", weeks * wage, "-", spent),
               (f"Split into {k} jars", rest, "/", k)]


def _h_two_days(r: R, c: Ctx) -> tuple[str, list[Step]]:
    a, b, d = r.randint(10, 60), r.randint(10, 60), r.randint(2, 5)
    p = (f"Every week {c.name} reads {a} pages on Monday and {b} pages on Tuesday. "
         f"How many pages does {c.name} read in {d} weeks?")
    return p, [("Pages in one week", a, "+", b), (f"Over {d} weeks", a + b, "*", d)]


TEMPLATES: dict[str, dict[str, Template]] = {
    "easy": {"add_buy": _e_add, "add_found": _e_pick, "sub_give": _e_give, "sub_take": _e_left,
             "mul_groups": _e_mul, "div_share": _e_div},
    "medium": {"add_delivery": _m_add, "sub_used": _m_sub, "mul_boxes": _m_mul, "mul_price": _m_price,
               "div_boxes": _m_div},
    "hard": {"buy_then_give": _h_buy_give, "add_then_share": _h_share, "shop_change": _h_change,
             "rows_plus_extra": _h_rows, "earn_spend_split": _h_save, "weekly_reading": _h_two_days},
}

_OPS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


def is_test_text(text: str) -> bool:
    """The stable split bucket: 1 in 10 texts belongs to the test split."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) % 10 == 0


def _draw_ctx(r: R) -> Ctx:
    (name, he), (friend, _) = r.sample(NAMES, 2)
    box1, box = r.choice(CONTAINERS)
    item, items = r.choice(ITEMS)
    return Ctx(name, he, friend, r.choice(OBJECTS), box1, box, item, items)


def _make(r: R, level: str) -> dict:
    """Draw one problem of `level`; every step is checked to be exact integer arithmetic."""
    key = r.choice(sorted(TEMPLATES[level]))
    problem, steps = TEMPLATES[level][key](r, _draw_ctx(r))
    lines, value = [], 0
    for text, a, op, b in steps:
        if op == "/" and a % b:
            raise AssertionError(f"template {key} produced an inexact division {a} / {b}")
        value = _OPS[op](a, b)
        lines.append(f"{text}: {a} {op} {b} = {value}.")
    if value < 0:
        raise AssertionError(f"template {key} produced a negative answer")
    lines.append(f"#### {value}")
    return {"problem": problem, "answer": str(value), "solution": "\n".join(lines),
            "source": "synthetic", "level": level, "template": key}


def generate_problems(n: int, split: str = "train", level: str = "easy", seed: int = 0) -> list[dict]:
    """`n` unique problems of `level` ("mixed" = round-robin over levels) from one split."""
    if split not in SPLITS:
        raise UserError(f"Unknown synthetic split {split!r}; use one of {', '.join(SPLITS)}")
    if level not in (*LEVELS, "mixed"):
        raise UserError(f"Unknown synthetic level {level!r}; use one of {', '.join(LEVELS)}, mixed")
    r = random.Random(seed)
    want_test = split == "test"
    out: list[dict] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:  # the template space is far larger; this only guards bugs
            raise UserError(f"Could not draw {n} unique {level} problems for split {split!r}")
        lvl = LEVELS[len(out) % len(LEVELS)] if level == "mixed" else level
        rec = _make(r, lvl)
        if is_test_text(rec["problem"]) != want_test or rec["problem"] in seen:
            continue
        seen.add(rec["problem"])
        out.append({"id": f"synthetic/{split}/{level}/{len(out)}", **rec})
    return out


def build_test_set() -> list[dict]:
    """The frozen test set's rows: 400 easy, 100 medium, 100 hard from the test split."""
    return [p for lvl in LEVELS for p in generate_problems(TEST_PER_LEVEL[lvl], "test", lvl, TEST_SEED)]


def write_test_set(path: str | Path) -> Path:
    """Regenerate the frozen test set JSONL at `path`."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in build_test_set()))
    return out


def frozen_test_path() -> Path:
    """Where the frozen test set lives: inside the installed package, else at the repo root."""
    # parents[1] is the r1distill package dir (same as Path(r1distill.__file__).parent).
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "_shipped" / TEST_FILE, here.parents[3] / "data" / TEST_FILE):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"Synthetic test set {TEST_FILE} not found (looked in r1distill/_shipped/ and <repo>/data/). "
        "Reinstall the package, or regenerate it from the repo root with: python -c "
        "'from r1distill.data.synthetic import write_test_set as w; w(\"data/synthetic_test.jsonl\")'"
    )


def load_test_set(level: str | None = None) -> list[dict]:
    """The frozen synthetic test set, optionally only one level (None or "mixed" = all)."""
    if level not in (None, "mixed", *LEVELS):
        raise UserError(f"Unknown synthetic level {level!r}; use one of {', '.join(LEVELS)}, mixed")
    rows = [json.loads(line) for line in frozen_test_path().read_text().splitlines() if line.strip()]
    return rows if level in (None, "mixed") else [p for p in rows if p["level"] == level]
