"""The trace-set formats: each one's column preset, and how one of its rows becomes samples (`row_samples`).

Separate from r1distill.data.sources, which finds the rows (files, hub datasets), checks the source config and runs
the first pass: what a row of each format holds, and how it is turned into a `Sample` or a `BadRow`, does not depend
on where the row came from. sources re-exports `Sample`, `BadRow` and the presets.

Normalisation:
- the completion's reasoning is always `<think>…</think>`: OpenThoughts' `<|begin_of_thought|>…` markers are
  rewritten (`<think>\\n{thought}\\n</think>\\n\\n{solution}`), s1K's trajectory and attempt are joined the same way,
  a chat turn's `reasoning_content` (DeepSeek's API) is put in front, and a completion with a closing `</think>`
  but no opening one (its prompt opened the block) gets `<think>\\n` in front;
- finish reason "length" when the completion was cut off: an unclosed `<think>`, an OpenThoughts solution without
  its closing marker, OpenR1's `finish_reasons[i] == "length"` or `is_reasoning_complete[i]` false, or a
  `finish_reason` column saying "length"; "stop" otherwise;
- the gold answer: the `answer` column, else the last `\\boxed{}` of the reference solution (`solution`), else the
  row is bad. OpenR1's `correctness_math_verify` / `correctness_llama` are not kept: curate verifies every trace
  again with the one verifier curation and eval share.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from r1distill.prompts import has_unclosed_think

FORMATS = ("messages", "sharegpt", "openr1", "openthoughts", "s1k", "columns")

# Our field -> their column, per format (dataset cards: open-r1/OpenR1-Math-220k, open-thoughts/OpenThoughts-114k
# and bespokelabs/Bespoke-Stratos-17k (system + conversations of {from, value}; OpenThoughts' reference solutions
# are `ground_truth_solution` in its metadata config), simplescaling/s1K, GAIR/LIMO (question, solution, answer)).
PRESETS: dict[str, dict[str, str]] = {
    "messages": {"messages": "messages", "answer": "answer", "solution": "solution"},
    "sharegpt": {"conversations": "conversations", "system": "system", "answer": "answer", "solution": "solution"},
    "openthoughts": {"conversations": "conversations", "system": "system", "answer": "answer",
                     "solution": "ground_truth_solution"},
    "openr1": {"problem": "problem", "answer": "answer", "solution": "solution", "generations": "generations",
               "finish_reasons": "finish_reasons", "is_reasoning_complete": "is_reasoning_complete"},
    "s1k": {"problem": "question", "answer": "answer", "solution": "solution",
            "thinking_trajectories": "thinking_trajectories", "attempt": "attempt"},
    "columns": {"problem": "problem", "answer": "answer", "completion": "completion", "solution": "solution",
                "finish_reason": "finish_reason"},
}
# The fields a row must have (a missing one is a bad row); the others are read when present.
REQUIRED = {"messages": ("messages",), "sharegpt": ("conversations",), "openthoughts": ("conversations",),
            "openr1": ("problem", "generations"), "s1k": ("problem", "thinking_trajectories", "attempt"),
            "columns": ("problem", "completion")}
DEFAULT_MARKERS = {"think_open": "<|begin_of_thought|>", "think_close": "<|end_of_thought|>",
                   "solution_open": "<|begin_of_solution|>", "solution_close": "<|end_of_solution|>"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


@dataclass
class Sample:
    """One completion, normalised. prompt: the chat turns before it (messages/sharegpt/openthoughts), or None for
    "build the default prompt from the problem"."""

    problem: str
    answer: str
    prompt: list[dict[str, str]] | None
    completion: str
    finish_reason: str  # stop | length
    where: str  # "line 7", "row 12"
    sample_in_row: int = 0


@dataclass
class BadRow:
    where: str
    kind: str  # invalid_json | missing_column | no_assistant_turn | no_user_turn | empty_completion | empty_problem
    #            | missing_answer | bad_value
    message: str  # one line naming the row and the field (the file is named once by whoever reports it)


class _Bad(Exception):
    def __init__(self, where: str, theirs: str | None, why: str, kind: str):
        super().__init__(f"{where}: {f'field {theirs!r}: ' if theirs else ''}{why}")
        self.bad = BadRow(where, kind, str(self))


# ---- one row -> samples -----------------------------------------------------------------------
def row_samples(fmt: str, cols: dict[str, str], marks: dict[str, str], row: dict,
                where: str) -> Iterator[Sample | BadRow]:
    """One row's samples in order: a BadRow for a generation that cannot be read, and one in place of the rest
    when the row itself cannot."""
    try:
        yield from _parse(fmt, cols, marks, row, where)
    except _Bad as e:
        yield e.bad


def _parse(fmt: str, cols: dict[str, str], marks: dict[str, str], row: dict, where: str) -> Iterator[Sample | BadRow]:
    for ours in REQUIRED[fmt]:
        if cols[ours] not in row:
            raise _Bad(where, cols[ours], f"missing (format {fmt}); columns present: {', '.join(map(str, row))}; "
                       f"map it with columns: {{{ours}: <column>}}", "missing_column")
    if fmt in ("messages", "sharegpt", "openthoughts"):
        yield _chat_sample(fmt, cols, marks, row, where)
    elif fmt == "openr1":
        yield from _openr1_samples(cols, row, where)
    elif fmt == "s1k":
        yield _s1k_sample(cols, row, where)
    else:
        yield _columns_sample(cols, row, where)


def _chat_sample(fmt: str, cols: dict[str, str], marks: dict[str, str], row: dict, where: str) -> Sample:
    col = cols["messages" if fmt == "messages" else "conversations"]
    turns, reasoning = _turns(row[col], fmt, where, col)
    last = next((i for i in range(len(turns) - 1, -1, -1) if turns[i]["role"] == "assistant"), None)
    if last is None:
        raise _Bad(where, col, "no assistant turn (the completion is the last one)", "no_assistant_turn")
    text = turns[last]["content"]
    if fmt == "openthoughts":
        completion, cut = _openthoughts(text, marks, where, col)
    else:
        if reasoning[last]:  # DeepSeek API style: the chain of thought beside the answer
            text = f"<think>\n{reasoning[last].strip()}\n</think>\n\n{text.lstrip()}"
        completion, cut = _open_think(text), False
    if not completion.strip():
        raise _Bad(where, col, "the assistant turn is empty", "empty_completion")
    prompt = turns[:last]
    system = row.get(cols["system"]) if "system" in cols else None
    if isinstance(system, str) and system.strip() and not any(t["role"] == "system" for t in prompt):
        prompt = [{"role": "system", "content": system}, *prompt]
    user = next((t for t in reversed(prompt) if t["role"] == "user"), None)
    if user is None:
        raise _Bad(where, col, "no user turn before the assistant turn (the problem)", "no_user_turn")
    if not user["content"].strip():
        raise _Bad(where, col, "the user turn (the problem) is empty", "empty_problem")
    return Sample(user["content"].strip(), _answer(cols, row, where), prompt, completion,
                  _finish(completion, cut), where)


def _turns(value: Any, fmt: str, where: str, col: str) -> tuple[list[dict[str, str]], list[str | None]]:
    """The chat as [{role, content}] (ShareGPT's from/value and its role names mapped), and each turn's
    reasoning_content (None where it has none)."""
    if not isinstance(value, list):
        raise _Bad(where, col, f"expected a list of chat turns, got {type(value).__name__}", "bad_value")
    role_key, text_key = ("role", "content") if fmt == "messages" else ("from", "value")
    turns, reasoning = [], []
    for i, t in enumerate(value):
        if not isinstance(t, dict) or not isinstance(t.get(role_key), str) or not isinstance(t.get(text_key), str):
            raise _Bad(where, col, f"turn {i} is not an object with string {role_key!r} and {text_key!r}",
                       "bad_value")
        role = t[role_key] if fmt == "messages" else SHAREGPT_ROLES.get(t[role_key].lower(), t[role_key])
        turns.append({"role": role, "content": t[text_key]})
        rc = t.get("reasoning_content")
        reasoning.append(rc if isinstance(rc, str) and rc.strip() else None)
    return turns, reasoning


def _openthoughts(text: str, m: dict[str, str], where: str, col: str) -> tuple[str, bool]:
    """OpenThoughts' markers -> (`<think>\\n{thought}\\n</think>\\n\\n{solution}`, whether it was cut off)."""
    start = text.find(m["think_open"])
    if start < 0:
        raise _Bad(where, col, f"the assistant turn has no {m['think_open']} marker: not in the openthoughts format "
                   "(read it with format: sharegpt, or set markers)", "bad_value")
    rest = text[start + len(m["think_open"]):]
    end = rest.find(m["think_close"])
    if end < 0:  # cut off inside the thought
        return f"<think>\n{rest.strip()}", True
    thought, after = rest[:end].strip(), rest[end + len(m["think_close"]):]
    opened = after.find(m["solution_open"])
    solution = after[opened + len(m["solution_open"]):] if opened >= 0 else after
    closed = solution.find(m["solution_close"])
    if closed >= 0:
        solution = solution[:closed]
    if not thought and not solution.strip():
        return "", False
    return f"<think>\n{thought}\n</think>\n\n{solution.strip()}", closed < 0


def _openr1_samples(cols: dict[str, str], row: dict, where: str) -> Iterator[Sample | BadRow]:
    problem = _text(row, cols["problem"], where, "empty_problem")
    answer = _answer(cols, row, where)
    gens = row[cols["generations"]]
    if not isinstance(gens, list) or not gens:
        raise _Bad(where, cols["generations"], "expected a non-empty list of completions", "bad_value")
    finish = row.get(cols["finish_reasons"])
    complete = row.get(cols["is_reasoning_complete"])
    for i, g in enumerate(gens):
        if not isinstance(g, str) or not g.strip():
            yield BadRow(where, "empty_completion", f"{where}: field {cols['generations'] + f'[{i}]'!r}: empty")
            continue
        completion = _open_think(g)
        cut = _at(finish, i) == "length" or _at(complete, i) is False
        yield Sample(problem, answer, None, completion, _finish(completion, cut), where, i)


def _s1k_sample(cols: dict[str, str], row: dict, where: str) -> Sample:
    problem = _text(row, cols["problem"], where, "empty_problem")
    answer = _answer(cols, row, where)
    trajs = row[cols["thinking_trajectories"]]
    thought = trajs[0] if isinstance(trajs, list) and trajs else trajs  # the first (s1K has one)
    if not isinstance(thought, str) or not thought.strip():
        raise _Bad(where, cols["thinking_trajectories"], "empty (no thinking trajectory)", "empty_completion")
    attempt = _text(row, cols["attempt"], where, "empty_completion")
    completion = f"<think>\n{thought.strip()}\n</think>\n\n{attempt}"
    return Sample(problem, answer, None, completion, _finish(completion, False), where)


def _columns_sample(cols: dict[str, str], row: dict, where: str) -> Sample:
    problem = _text(row, cols["problem"], where, "empty_problem")
    answer = _answer(cols, row, where)
    raw = row[cols["completion"]]
    if not isinstance(raw, str) or not raw.strip():
        raise _Bad(where, cols["completion"], "empty completion" if isinstance(raw, str) or raw is None
                   else f"expected a string, got {type(raw).__name__}", "empty_completion")
    completion = _open_think(raw)
    said = row.get(cols["finish_reason"])
    return Sample(problem, answer, None, completion, _finish(completion, str(said).strip().lower() == "length"),
                  where)


def _finish(completion: str, cut: bool) -> str:
    return "length" if cut or has_unclosed_think(completion) else "stop"


def _at(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) and i < len(values) else None


def _open_think(text: str) -> str:
    """A completion whose prompt opened the think block ("…</think>answer") gets its `<think>` back."""
    close = text.find("</think>")
    if close >= 0 and not 0 <= text.find("<think>") < close:
        return "<think>\n" + text
    return text


def _scalar(value: Any) -> str | None:
    """A cell as stripped text (18 and 18.0 -> "18"); None when null or not a string/number."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _text(row: dict, col: str, where: str, kind: str) -> str:
    text = _scalar(row.get(col))
    if not text:
        value = row.get(col)
        why = "empty" if value is None or isinstance(value, str) else f"expected text, got {type(value).__name__}"
        raise _Bad(where, col, why, kind)
    return text


def _answer(cols: dict[str, str], row: dict, where: str) -> str:
    """The gold answer: its column, else the last \\boxed{} of the reference solution, else a bad row."""
    if text := _scalar(row.get(cols["answer"])):
        return text
    solution = row.get(cols["solution"])
    if isinstance(solution, str) and (boxed := last_boxed(solution)):
        return boxed
    had = (f"no \\boxed{{}} in {cols['solution']!r}" if isinstance(solution, str)
           else f"no {cols['solution']!r} column with a \\boxed{{}} answer either")
    raise _Bad(where, cols["answer"], f"no gold answer ({had}); map a gold-answer column with "
               "columns: {answer: <column>}", "missing_answer")


def last_boxed(text: str) -> str | None:
    """The stripped content of the last closed, non-empty `\\boxed{…}` (or `\\fbox{…}`), by the verifier's own rule
    (so curate grades against what import took); None when there is none."""
    from r1distill.verify import last_boxed as boxed  # math-verify loads only when a gold has to come from a box

    content = boxed(text)
    return content.strip() if content and content.strip() else None
