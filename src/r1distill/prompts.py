"""Prompts (the R1 instruction, a system line, few-shot examples), chat rendering, and <think> parsing.

A `PromptConfig` says how a problem is put to a model. The teacher and the student may see different prompts:
a small or non-reasoning teacher needs a format line and a few worked examples to answer at all, while the
student should learn to answer without them (context distillation, Snell et al. 2022). So generate renders the
teacher's messages with the examples (`teacher_prompt` in the trace) and the student's without them (`prompt`,
what train reads), and eval can give each model its own prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from r1distill.config import ConfigError

# DeepSeek-R1's evaluation instruction, appended to the problem in the user turn (no system prompt).
R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)


@dataclass
class PromptConfig:
    """How a problem is put to a model (`generate.prompt`, `eval.prompt`, `eval.model_prompts.<model>`)."""

    system: str | None = None  # a system turn before everything (R1's protocol has none)
    instruction: str = R1_INSTRUCTION  # appended to each problem on a new line ("" for none)
    examples: list[dict] = field(default_factory=list)  # few-shot: [{problem, response}] as earlier chat turns
    examples_file: str | None = None  # or a JSONL file of {"problem": ..., "response": ...} rows
    examples_for_student: bool = False  # generate: keep the examples in the student's prompt too

    def __post_init__(self) -> None:
        if self.examples_file:
            loaded = _read_examples(Path(self.examples_file))
            if self.examples and self.examples != loaded:
                raise ConfigError(f"prompt: give examples or examples_file ({self.examples_file}), not both")
            self.examples = loaded
        for i, ex in enumerate(self.examples):
            if not isinstance(ex, dict) or set(ex) != {"problem", "response"} or \
                    not all(isinstance(v, str) and v.strip() for v in ex.values()):
                raise ConfigError(f"prompt.examples[{i}]: expected {{problem: ..., response: ...}} with two "
                                  f"non-empty strings, got {ex!r}")

    def user_turn(self, problem: str) -> str:
        return f"{problem}\n{self.instruction}" if self.instruction else problem

    def messages(self, problem: str, few_shot: bool = True) -> list[dict[str, str]]:
        """The chat for one problem: [system], then each example as a user turn and the assistant's response
        (with `few_shot`), then the problem."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        if few_shot:
            for ex in self.examples:
                out += [{"role": "user", "content": self.user_turn(ex["problem"])},
                        {"role": "assistant", "content": ex["response"]}]
        out.append({"role": "user", "content": self.user_turn(problem)})
        return out

    def student_messages(self, problem: str) -> list[dict[str, str]]:
        """What the student trains on: the same chat without the examples (unless examples_for_student)."""
        return self.messages(problem, few_shot=self.examples_for_student)

    def describe(self) -> str:
        """One line for tables and reports, e.g. "system line + R1 instruction + 2 examples"."""
        parts = (["system line"] if self.system else []) + [
            "R1 instruction" if self.instruction == R1_INSTRUCTION else "own instruction" if self.instruction
            else "no instruction"]
        if self.examples:
            parts.append(f"{len(self.examples)} example{'s' if len(self.examples) > 1 else ''}")
        return " + ".join(parts)


def _read_examples(path: Path) -> list[dict]:
    if not path.is_file():
        raise ConfigError(f"prompt.examples_file: {path} not found")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not {"problem", "response"} <= set(row):
            raise ConfigError(f"{path}:{n}: expected an object with 'problem' and 'response'")
        rows.append({"problem": row["problem"], "response": row["response"]})
    return rows


def r1_messages(problem: str, system: str | None = None) -> list[dict[str, str]]:
    """Chat messages for one problem: the problem, a blank line, then the R1 instruction."""
    return PromptConfig(system=system).messages(problem)


def render_prompt(tokenizer, messages: list[dict[str, str]], think_prefix: bool = False) -> list[int]:
    """Token ids of the chat prompt ending with the assistant turn's opening.

    `think_prefix` forces the response to begin with "<think>\\n" (R1's protocol for reasoning models).
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if think_prefix:
        text += "<think>\n"
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def split_think(completion: str) -> tuple[str | None, str]:
    """(reasoning inside <think>…</think> or None, the rest of the answer).

    A completion whose prompt forced "<think>\\n" starts inside the block, so a lone "</think>"
    also closes a reasoning section.
    """
    m = _THINK_RE.search(completion)
    if m:
        return m.group(1).strip(), (completion[: m.start()] + completion[m.end():]).strip()
    if "</think>" in completion:
        head, tail = completion.split("</think>", 1)
        return head.replace("<think>", "").strip(), tail.strip()
    return None, completion.strip()


def has_unclosed_think(completion: str) -> bool:
    return completion.count("<think>") > completion.count("</think>")
