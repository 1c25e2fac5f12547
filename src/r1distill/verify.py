"""The one answer verifier shared by curation, evaluation and (later) RL rewards.

Pipeline: ``extract_answer`` pulls a final answer out of a model completion with cheap linear scans,
``normalize_answer`` removes presentation noise, and ``is_equivalent`` compares two answers with a
fast string/number path before falling back to Math-Verify's symbolic comparison. ``verify_answer``
grades one completion; ``verify_many`` grades many over worker processes, with a hard time limit per row
(always with ``hard_limit=True``, else only for batches of ``MIN_PARALLEL_ROWS`` rows or more).

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

import logging
import math
import multiprocessing as mp
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from math_verify.parser import get_extraction_regexes

# Bump when a change can alter a verdict: eval grades its stored outputs again (r1distill.evaluate).
# 2: several boxes as one list answer, units in parentheses and after list items, "is"/"equals" in prose, "32, 349"
#    a list (not thousands), "\ " a space.
VERSION = 2
MAX_TEXT_CHARS = 100_000  # answers sit at the end of a completion; older text is never read
MAX_ANSWER_CHARS = 1_000
# Math-Verify logs every timeout/parse failure; model output is noisy, so keep those logs quiet.
logging.getLogger("math_verify").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Extraction:
    answer: str | None  # the extracted answer text, None if nothing found
    rule: str | None  # "boxed" | "gsm8k" | "answer_is" | "latex" | "last_number" | None (see extract_answer)


@dataclass(frozen=True)
class Verdict:
    pred_answer: str | None
    rule: str | None
    correct: bool
    gold_ok: bool  # False when the gold cannot be parsed at all: flag the row, do not count it wrong


# ----------------------------------------------------------------------------------------------------------
# Extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE_RE = re.compile(r"\\boxed ([^\s{]\S*)")  # "\boxed 5" (no braces) is valid LaTeX and models emit it
_GSM8K_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS_RE = re.compile(
    # one \s* per gap: two adjacent \s* around an optional group would backtrack quadratically
    r"\bthe\s+(?:final\s+)?answer\s+is\b[\s*_]*:?|\bfinal\s+answer\b\s*(?:(?:\*\*|__)\s*)?:"
    r"|^[ \t>#*_]*answer\b\s*(?:(?:\*\*|__)\s*)?:",  # "Answer: 7" / "**Answer:** 7" at the start of a line
    re.IGNORECASE | re.MULTILINE,
)
_SENTENCE_END_RE = re.compile(r"(?<!\bi\.e)(?<!\be\.g)\.(?=\s|$)|\n")  # "i.e." does not end it
_SPACE_CLASS = "[ \u00a0\u202f]"  # space, no-break space, narrow no-break space (thousands in "3 500")
_NUMBER_RE = re.compile(
    r"(?<![\d.])-?(?:"
    r"\d{1,3}(?:,\d{3})+(?![\d,])"  # 1,234,567: thousands
    rf"|\d{{1,3}}(?:{_SPACE_CLASS}\d{{3}})+(?![\d,\-/])"  # 3 500: thousands (not "5 100-dollar bills")
    r"|(?<!\d,)(?P<dcomma>\d+,(?:\d{1,2}|\d{4,}))(?![\d,])"  # 2,5: a decimal comma (not in a list "1,2,3")
    r"|\d+"
    r")(?:\.\d+)?(?:/\d+)?%?|-?\.\d+%?"
)


def _matching_braces(text: str) -> dict[int, int]:
    """Map each '{' index to its matching '}' index in one linear pass (escaped \\{ \\} are literals)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


_BOX_SEP_RE = re.compile(  # what may stand between boxes that together are one answer
    r"(?:[\s,;$]|\\[()\[\]]|\\q?quad|\\[,;: ]|\band\b|\bor\b"
    r"|\\(?:text|mathrm|mbox)\s*\{\s*(?:and|or|,)?\s*\})*")
MAX_BOXES = 10


def _boxes_answer(text: str) -> str | None:
    """The last box, or, when the text ends in several boxes with only commas, "and", "or", spacing or math
    delimiters between them ("\\boxed{1}, \\boxed{2}", "\\boxed{(2, 2)} \\quad\\text{and}\\quad \\boxed{(6, 2)}"),
    their contents as one list "1, 2" (read as a tuple or set like a one-box list)."""
    last = last_boxed(text)
    if last is None:
        return None
    starts = [m for m in _BOX_RE.finditer(text)]
    if len(starts) < 2:
        return last
    pairs = _matching_braces(text)
    spans = [(m.start(), m.end() - 1, pairs.get(m.end() - 1)) for m in starts]
    spans = [(s, o, c) for s, o, c in spans if c is not None and text[o + 1:c].strip()]
    if len(spans) < 2 or text[spans[-1][1] + 1:spans[-1][2]] != last:
        return last
    run = [spans[-1]]
    for prev in reversed(spans[:-1]):
        if len(run) == MAX_BOXES or prev[2] > run[0][0] or not _BOX_SEP_RE.fullmatch(text[prev[2] + 1:run[0][0]]):
            break
        run.insert(0, prev)
    return ", ".join(text[o + 1:c].strip() for _, o, c in run) if len(run) > 1 else last


def last_boxed(text: str) -> str | None:
    """Content of the last closed, non-empty \\boxed{...}/\\fbox{...} (or bare "\\boxed 5")."""
    starts = [m.end() - 1 for m in _BOX_RE.finditer(text)]
    bare = list(_BOX_BARE_RE.finditer(text))
    if not starts and not bare:
        return None
    pairs = _matching_braces(text) if starts else {}
    best_pos, best = -1, None
    for open_idx in reversed(starts):  # a truncated final box is unclosed: fall back to the previous one
        close = pairs.get(open_idx)
        if close is not None and text[open_idx + 1 : close].strip():
            best_pos, best = open_idx, text[open_idx + 1 : close]
            break
    if bare and bare[-1].start() > best_pos:
        best = bare[-1].group(1).rstrip(".,;$")
    return best


# Math-Verify's LaTeX environments: $...$, $$...$$, \(...\), \[...\] and bare \frac{a}{b}, chained by "," /
# "and" / "or" into one answer. Its pattern is lazy and can backtrack, so it only ever sees a bounded text:
# the tail of a completion or an "answer is" phrase.
LATEX_TAIL_CHARS = 2_000
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox|operatorname|begin|end)\s*\{[^{}]*\}")
_PROSE_RE = re.compile(r"(?<![\\a-zA-Z])[a-z]{3,}(?![a-zA-Z])")  # a lowercase word that is not a command
_COPULA_RE = re.compile(r"\b(?:is|are|equals?|was|were)\b", re.IGNORECASE)


@lru_cache(maxsize=1)
def _latex_env_re() -> re.Pattern[str] | None:
    """Math-Verify's own unanchored LaTeX pattern (priority 300 of ``LatexExtractionConfig``), or None."""
    try:
        ((patterns, _config),) = get_extraction_regexes([LatexExtractionConfig()])
        return next((pat for pat, priority in patterns if priority == 300), None)
    except Exception:  # noqa: BLE001 - another Math-Verify version: do without the LaTeX rule
        return None


def _is_prose(s: str) -> bool:
    return bool(_PROSE_RE.search(_TEXT_CMD_RE.sub(" ", s)))


def _env_answer(m: re.Match[str]) -> str | None:
    """The answer in one Math-Verify LaTeX match: its environments joined by ", " (x = 1 and x = -2 ->
    "1, -2"), "%" kept; None for prose between two currency signs ("$20 and got $5") or a bracket " [3] "."""
    groups = m.groupdict()
    parts = []
    for prefix in ("first_", *(f"next{i}_" for i in range(1, 6))):
        name, value = next(((k, v) for k, v in groups.items() if k.startswith(prefix + "latex") and v), ("", None))
        if value is None:
            continue
        if name.endswith("InlineBracket") or _is_prose(value):
            return None
        parts.append(value.strip() + ("%" if groups.get(prefix + "percent") else ""))
    if not parts or not all(parts):
        return None
    if len(parts) > 1:  # several environments are one list answer: drop each one's "x =" so the list is of values
        parts = [_ASSIGN_RE.sub("", p) if p.count("=") == 1 else p for p in parts]
    return ", ".join(parts)


_EXPONENT_RE = re.compile(r"\^(?:\{[^{}]*\}|\w)")
_DECORATION_RE = re.compile(r"(?:\\(?:blacksquare|square|Box|qed|checkmark|quad|qquad|hfill|[,;:! ])|[\s.,;:~])*")


def _latex_envs(text: str) -> list[tuple[int, int, str]]:
    """(start, end, answer) of each valid LaTeX environment match in ``text`` (bounded by the callers).

    A QED mark or spacing alone ("$\\blacksquare$") is no answer; an environment without digits right
    after a number is that number's unit or factor, and is read with it ("15 $\\text{cm}^2$", "2 $\\pi$")."""
    pattern = _latex_env_re()
    if pattern is None:
        return []
    out = []
    for m in pattern.finditer(text):
        ans = _env_answer(m)
        if ans is None or _DECORATION_RE.fullmatch(ans):
            continue
        start = m.start()
        if not any(c.isdigit() for c in _EXPONENT_RE.sub("", _TEXT_CMD_RE.sub("", ans))):
            if out and not text[out[-1][1] : start].strip():  # "$15$ $\text{cm}^2$"
                prev_start, _, prev = out.pop()
                start, ans = prev_start, f"{prev} {ans}"
            else:
                before = text[max(0, start - 40) : start]
                num = None
                for num in _NUMBER_RE.finditer(before):  # noqa: B007 - keep only the last match
                    pass
                if num is not None and not before[num.end() :].strip():
                    start, ans = start - len(before) + num.start(), f"{num.group(0)} {ans}"
        out.append((start, m.end(), ans))
    return out


def _tail_start(text: str) -> int:
    """Start of the last ``LATEX_TAIL_CHARS`` of ``text``, moved so that it is outside any $...$, $$...$$ or
    \\[...\\] (a window that starts inside one would pair its closing sign with the next opening one)."""
    start = len(text) - LATEX_TAIL_CHARS
    if start <= 0:
        return 0
    line = text.find("\n", start)
    if 0 <= line < len(text) - 1:
        start = line + 1  # inline math never spans lines
    elif text.count("$", text.rfind("\n", 0, start) + 1, start) % 2 and (close := text.find("$", start)) >= 0:
        start = close + 1
    if text.count("$$", 0, start) % 2 and (close := text.find("$$", start)) >= 0:
        start = close + 2
    if text.rfind("\\[", 0, start) > text.rfind("\\]", 0, start) and (close := text.find("\\]", start)) >= 0:
        start = close + 2
    return start


def _number_match_answer(m: re.Match[str], text: str) -> str:
    num, before = m.group(0), text[m.start() - 1 : m.start()]
    if num.startswith("-") and (before.isalnum() or before in (")", "}")):
        num = num[1:]  # "5-3" is a subtraction, not the number -3
    if m.group("dcomma"):
        num = num.replace(",", ".")  # "2,5 kg" -> "2.5"
    return num


_PLAIN_ITEM = r"-?(?:\d+(?:\.\d+)?(?:/\d+)?|\.\d+|\\infty|infinity|inf|∞)"
_PLAIN_TUPLE_RE = re.compile(rf"[(\[]\s*{_PLAIN_ITEM}(?:\s*,\s*{_PLAIN_ITEM})+\s*[)\]]")  # "(8, -2)", "[1, 4)"
_TRAILER_RE = re.compile(r"[\s.!;*_]*")
MAX_LIST_ITEMS = 10


def _last_number(text: str) -> tuple[str, int] | None:
    """The last number in ``text`` and where it ends; a list of at most ``MAX_LIST_ITEMS`` numbers that ends
    the text ("The possible values are 1, 2.") is read whole."""
    last, run_start, run_len = None, 0, 0
    for m in _NUMBER_RE.finditer(text):
        if last is not None and text[last.end() : m.start()].strip() == ",":
            run_len += 1
        else:
            run_start, run_len = m.start(), 1
        last = m
    if last is None:
        return None
    if 1 < run_len <= MAX_LIST_ITEMS and _TRAILER_RE.fullmatch(text, last.end()):
        return text[run_start : last.end()], last.end()
    return _number_match_answer(last, text), last.end()


def _last_plain_tuple(text: str) -> tuple[str, int] | None:
    """The last tuple or interval of numbers written without LaTeX ("(8, -2)", "[1, 4)") and where it ends."""
    last = None
    for last in _PLAIN_TUPLE_RE.finditer(text):  # noqa: B007 - keep only the last match
        pass
    return None if last is None else (last.group(0), last.end())


def _answer_in_phrase(phrase: str) -> str:
    """The answer inside what follows "the answer is": the phrase itself when it is a bare answer ("$\\frac{7}
    {4}$", "x = 5", "(C)", "Navin"), else the first LaTeX environment or number after its last "=" ("The
    total is 52" -> "52", "25, which is what we want" -> "25", "that Tom has 7 + 5 = 12 apples" -> "12")."""
    envs = _latex_envs(phrase)
    outside, cursor = [], 0
    for start, end, _ in envs:
        outside.append(phrase[cursor:start])
        cursor = end
    outside.append(phrase[cursor:])
    if not _is_prose(" ".join(outside)):
        if m := _NUMBER_RE.fullmatch(_strip_markup(phrase)):
            return _number_match_answer(m, phrase)  # "2,5" -> "2.5"
        return phrase
    inside = lambda i: any(s <= i < e for s, e, _ in envs)
    after = phrase.rfind("=")  # the answer follows the last "=" that is not inside an environment
    while after >= 0 and inside(after):
        after = phrase.rfind("=", 0, after)
    after += 1
    # ... or the last "is"/"equals" after it: "The largest $n$ is 34" -> 34, not the $n$ it is said of; when
    # nothing follows that word ("25, which is what we want") the first answer after the "=" stands
    copulas = [m.end() for m in _COPULA_RE.finditer(phrase, after) if not inside(m.start())]
    for start in ([copulas[-1]] if copulas else []) + [after]:
        candidates = [(s, ans) for s, _, ans in envs if s >= start]
        if (m := _NUMBER_RE.search(phrase, start)) and not inside(m.start()):
            candidates.append((m.start(), _number_match_answer(m, phrase)))
        if candidates:
            return min(candidates)[1]
    return phrase


def _answer_is(text: str) -> str | None:
    """X from the last "the (final) answer is X" / "final answer: X" / "Answer: X" with non-empty X."""
    for m in reversed(list(_ANSWER_IS_RE.finditer(text))):
        rest = text[m.end() : m.end() + 2 * MAX_ANSWER_CHARS].lstrip(" \t*_:")
        end = _SENTENCE_END_RE.search(rest)
        # markdown bold may be cut unevenly by the match ("is **9**." -> "9**"), so strip it one-sided
        phrase = _strip_markup((rest[: end.start()] if end else rest).strip(" \t*_"))
        if phrase and (ans := _strip_markup(_answer_in_phrase(phrase))):
            return ans
    return None


def _last_latex_or_number(text: str) -> tuple[str, str] | None:
    """Math-Verify's unanchored rule: of the last LaTeX environment (in the tail), the last plain-text tuple
    and the last number, the one that ends last; a number inside the last environment ends before the
    environment does, so "$\\frac{7}{4}$" is read whole."""
    candidates = []  # (end, answer, rule)
    start = _tail_start(text)
    if envs := _latex_envs(text[start:]):
        candidates.append((start + envs[-1][1], envs[-1][2], "latex"))
    for found in (_last_number(text), _last_plain_tuple(text)):
        if found is not None:
            candidates.append((found[1], found[0], "last_number"))
    if not candidates:
        return None
    _, answer, rule = max(candidates, key=lambda c: c[0])
    return answer, rule


def extract_answer(text: str, last_number: bool = True) -> Extraction:
    """Extract the final answer. Rules, first match wins:

    1. "boxed": the last closed, non-empty ``\\boxed{}``/``\\fbox{}`` (or bare "\\boxed 5");
    2. "gsm8k": the last "#### N" line;
    3. "answer_is": the last "the (final) answer is X", "final answer: X" or "Answer: X" (line start); X is
       cut at the sentence end, and from prose in it ("The total is 52") the first environment or number
       after its last "=" is taken;
    4. "latex" / "last_number" (only if ``last_number``): whichever ends last of the last LaTeX environment
       ($...$, \\(...\\), \\[...\\], $$...$$, bare \\frac{a}{b}; chained ones as a list; not a QED mark; a
       digit-less one right after a number joins it) in the last ``LATEX_TAIL_CHARS`` ("latex"), the last
       plain-text tuple "(8, -2)", and the last number ("3 500", "1,234", "2,5" -> "2.5", "1/2", "50%"; a
       list "1, 2" that ends the text is read whole).

    Only the text after the last "</think>" is read, since the answer follows the reasoning. Every rule is
    a regular expression over a bounded or linearly scanned text: nothing here parses or evaluates math.
    """
    text = text[-MAX_TEXT_CHARS:].replace("\u2212", "-")  # U+2212 MINUS SIGN, as in "x = \u22123"
    think_end = text.rfind("</think>")
    if think_end >= 0:
        text = text[think_end + len("</think>") :]
    found: tuple[str, str] | None = None
    if (boxed := _boxes_answer(text)) is not None:
        found = (boxed, "boxed")
    elif gsm := list(_GSM8K_RE.finditer(text)):
        found = (gsm[-1].group(1), "gsm8k")
    elif (said := _answer_is(text)) is not None:
        found = (said, "answer_is")
    elif last_number:
        found = _last_latex_or_number(text)
    if found is None or not (answer := found[0].strip()[:MAX_ANSWER_CHARS]):
        return Extraction(None, None)
    return Extraction(answer, found[1])


# ----------------------------------------------------------------------------------------------------------
# Normalization

_WRAPPERS = (("\\(", "\\)"), ("\\[", "\\]"))
_NUM = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:(?:,|\{,\}|\\,)\d{3})+(?:\.\d+)?")
_TEXT_UNIT_RE = re.compile(rf"^({_NUM})\s*(?:\\(?:text|mbox|mathrm)\{{[^{{}}]*\}}\s*)+$")
_WORD_UNIT_RE = re.compile(rf"^({_NUM})\s+[a-zA-Z]{{2,}}(?:\s+[a-zA-Z]{{2,}}){{0,2}}$")
# ASDiv stores answers as "9 (apples)", "0.5 (km)": a number, then its unit in parentheses (words, no digits)
_PAREN_UNIT_RE = re.compile(rf"^({_NUM})\s*\(\s*[a-zA-Z][a-zA-Z .'/-]*\)$")
# a degree sign after a number: "30°", "30^\circ", "30^{\circ}" (compared by the number; "%" is kept: Math-Verify
# takes "50%" as 50 and as 0.5, the percent policy above)
_SIGN_UNIT_RE = re.compile(rf"^({_NUM})\s*(?:°|\^\s*\{{?\s*\\circ\s*\}}?)$")
_ASSIGN_RE = re.compile(r"^\\?[a-zA-Z]+(?:_\{?\w+\}?)?\s*=\s*")
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}$")
_LATEX_SPACE_RE = re.compile(r"(?<!\\)\\ ")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![a-zA-Z])")
# keep only spaces between letters ("\pi r") and after a comma before a digit: "32, 349" is a list, "32,349" thousands
_SPACE_RE = re.compile(r"(?<![a-zA-Z,])\s+|(?<=[a-zA-Z])\s+(?![a-zA-Z])|(?<=,)\s+(?!\d)")


def _strip_markup(s: str) -> str:
    """Strip surrounding $...$, \\(...\\), **...** and trailing punctuation, repeatedly."""
    prev = None
    while s != prev:
        prev = s
        s = s.strip().rstrip(".,;")
        for ch in "$*_":  # balanced runs ($$, **, __) go in one step, so long runs stay linear
            k = min(len(s) - len(s.lstrip(ch)), len(s) - len(s.rstrip(ch)))
            s = s[k : len(s) - k] if k else s
        for left, right in _WRAPPERS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)]
    return s


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
        s = _boxes_answer(s) or s
    s = _strip_markup(s)
    s = re.sub(r"\\!\s*", "", s)
    s = _LATEX_SPACE_RE.sub(" ", s)  # "\ " is a space ("x = -5,\ p = 3"); a matrix's row break "\\ " is not
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
    s = _LEFT_RIGHT_RE.sub("", s).replace("\\$", "$")
    s = re.sub(r"^\$\s*(?=[-\d.])", "", s)  # currency "$18" (surrounding $...$ is gone by now)
    if s.count("=") == 1:
        s = _ASSIGN_RE.sub("", s)  # "x = 3" -> "3", but "x = 1, y = 2" keeps both parts
    if m := _TEXT_WRAP_RE.match(s):
        s = m.group(1)
    if _THOUSANDS_RE.fullmatch(s.strip()):
        s = re.sub(r"\{,\}|\\,|,", "", s)
    # "10\text{ cm}" / "18 dollars" / "9 (apples)" / "30^\circ" -> the number
    s = ",".join(_drop_unit(item) for item in s.split(","))  # each item of a list too: "35 cm, 4" -> "35,4"
    s = _SPACE_RE.sub("", re.sub(r"\s+", " ", s.strip()))
    return _strip_markup(s)


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


def _mv_timeout(timeout: float) -> int | None:
    # Math-Verify times out with signal.alarm, which only works in the main thread and only takes whole
    # seconds. Off the main thread run without it; `verify_many(..., hard_limit=True)` adds a process-based
    # hard limit (an alarm is also lost when it fires inside a garbage-collector callback, and cannot cut a
    # C call that never checks for signals, such as gmpy2's arithmetic, so that limit is needed anyway).
    if threading.current_thread() is not threading.main_thread():
        return None
    return max(1, math.ceil(timeout))


class _OutOfTime(Exception):
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


def _mv_parse(s: str, timeout: int | None) -> tuple:
    """Math-Verify parse of a bare answer; wrapped in \\boxed{} so the LaTeX extractor finds it whole.

    Raises ``_OutOfTime`` when the parse ran out of time. That is cached like any result, so an answer
    that timed out once (a gold shared by every sample of a problem) does not cost its timeout again."""
    if (out := _mv_parse_cached(s, timeout)) is None:
        raise _OutOfTime
    return out


def _mv_equal(pred: str, gold: str, timeout: int | None) -> bool:
    gold_parsed, pred_parsed = _mv_parse(gold, timeout), _mv_parse(pred, timeout)
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
        raise _OutOfTime
    return same


def _fast_equal(pred: str, gold: str) -> bool:
    if pred == gold or (_WORDS_RE.fullmatch(pred) and pred.casefold() == gold.casefold()):
        return True  # word answers ("Evelyn", "east") are case-insensitive; Math-Verify reads them as symbols
    p, g = _as_number(pred), _as_number(gold)
    return p is not None and p == g


def _equivalent(pred: str, gold: str, timeout: float) -> bool:
    """``is_equivalent``, except that it raises ``_OutOfTime`` when Math-Verify ran out of time."""
    try:
        p, g = normalize_answer(pred), normalize_answer(gold)
        if not p or not g:
            return False
        return _fast_equal(p, g) or _mv_equal(p, g, _mv_timeout(timeout))
    except _OutOfTime:
        raise
    except (Exception, TimeoutException):  # noqa: BLE001 - a grader must never crash on model output
        return False


def is_equivalent(pred: str, gold: str, timeout: float = 5.0) -> bool:
    """True if ``pred`` is mathematically the same answer as ``gold``. Never raises."""
    try:
        return _equivalent(pred, gold, timeout)
    except _OutOfTime:
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
        gold_ok = bool(g) and (_as_number(g) is not None or bool(_mv_parse(g, _mv_timeout(timeout))))
        correct = ext.answer is not None and _equivalent(ext.answer, gold, timeout)
    except _OutOfTime:
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
