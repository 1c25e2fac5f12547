"""Answer extraction: the final answer of a model completion, found with regular expressions over bounded text.

Separate from r1distill.verify, which grades (normalization, equivalence, many rows over processes): extraction
never compares anything and never parses math, so it is cheap and safe to run anywhere (a verifier's time limits
are not needed here). The rules, and why they follow Math-Verify's, are in r1distill.verify's docstring and in
`extract_answer`. `strip_markup` and `ASSIGN_RE` are shared with normalization (r1distill.verify), which reads
answers the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from r1distill.mathverify_bridge import latex_env_re

MAX_TEXT_CHARS = 100_000  # answers sit at the end of a completion; older text is never read
MAX_ANSWER_CHARS = 1_000


@dataclass(frozen=True)
class Extraction:
    answer: str | None  # the extracted answer text, None if nothing found
    rule: str | None  # "boxed" | "gsm8k" | "answer_is" | "latex" | "last_number" | None (see extract_answer)


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


def boxes_answer(text: str) -> str | None:
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
        parts = [ASSIGN_RE.sub("", p) if p.count("=") == 1 else p for p in parts]
    return ", ".join(parts)


_EXPONENT_RE = re.compile(r"\^(?:\{[^{}]*\}|\w)")
_DECORATION_RE = re.compile(r"(?:\\(?:blacksquare|square|Box|qed|checkmark|quad|qquad|hfill|[,;:! ])|[\s.,;:~])*")


def _latex_envs(text: str) -> list[tuple[int, int, str]]:
    """(start, end, answer) of each valid LaTeX environment match in ``text`` (bounded by the callers).

    A QED mark or spacing alone ("$\\blacksquare$") is no answer; an environment without digits right
    after a number is that number's unit or factor, and is read with it ("15 $\\text{cm}^2$", "2 $\\pi$")."""
    pattern = latex_env_re()
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
        if m := _NUMBER_RE.fullmatch(strip_markup(phrase)):
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
        phrase = strip_markup((rest[: end.start()] if end else rest).strip(" \t*_"))
        if phrase and (ans := strip_markup(_answer_in_phrase(phrase))):
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
    if (boxed := boxes_answer(text)) is not None:
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
# Markup (shared with normalization)

_WRAPPERS = (("\\(", "\\)"), ("\\[", "\\]"))
ASSIGN_RE = re.compile(r"^\\?[a-zA-Z]+(?:_\{?\w+\}?)?\s*=\s*")


def strip_markup(s: str) -> str:
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
