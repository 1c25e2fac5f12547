"""The R1 prompt, chat rendering, and <think> parsing."""

from __future__ import annotations

import re

# DeepSeek-R1's evaluation instruction, appended to the problem in the user turn (no system prompt).
R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def r1_messages(problem: str, system: str | None = None) -> list[dict[str, str]]:
    """Chat messages for one problem: the problem, a blank line, then the R1 instruction."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": f"{problem}\n{R1_INSTRUCTION}"})
    return messages


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
