"""The report as data: a list of blocks per section, which markdown.py and html.py each write out.

A block is a dict with a `kind`: table, p (a paragraph of parts), lead (the section's takeaway), note, figure,
code (preformatted text), cards (the HTML's headline numbers; Markdown skips them) or row (columns shown side
by side in the HTML). A paragraph's or cell's parts are strings, `Num`s (a number with where it was read from)
and `Link`s (a relative link, e.g. to a per-sample file).
"""

from __future__ import annotations

import html
import json
from typing import Any


class Num:
    """A number in the report: its text, and where it was read from (source, keys) with the value read."""

    def __init__(self, text: str, path: tuple = (), value: Any = None):
        self.text, self.path, self.value = text, path, value

    def md(self) -> str:
        return self.text

    def html(self) -> str:
        if not self.path:
            return html.escape(self.text)
        return (f'<span data-metric="{html.escape(json.dumps(list(self.path)))}" '
                f'data-value="{html.escape(json.dumps(self.value))}">{html.escape(self.text)}</span>')


class Link:
    """A relative link (to a file in the run dir)."""

    def __init__(self, text: str, href: str):
        self.text, self.href = text, href

    def md(self) -> str:
        return f"[{self.text}]({self.href})"

    def html(self) -> str:
        return f'<a href="{html.escape(self.href)}">{html.escape(self.text)}</a>'


Cell = list  # of str | Num | Link


def cell_md(cell: Cell) -> str:
    return "".join(p.md() if isinstance(p, (Num, Link)) else str(p) for p in cell)


def cell_html(cell: Cell) -> str:
    return "".join(p.html() if isinstance(p, (Num, Link)) else html.escape(str(p)) for p in cell)


def f(value: Any, fmt: str, *path) -> Num:
    """`value` formatted with `fmt`, tagged with the path it was read from ("—" when missing)."""
    if value is None:
        return Num("—")  # missing from the source: nothing to tag
    return Num(fmt.format(value) if isinstance(value, (int, float)) else str(value), tuple(path), value)


def table(head: list[str], rows: list[list[Cell]], groups: list[tuple[str, int]] = (), wrap: bool = False) -> dict:
    """groups: (label, columns spanned) for a header row above `head` in the HTML (e.g. one per benchmark).
    wrap: a table of words (settings, prompts): its cells wrap at a bounded width in the HTML (`table.wrap`), where
    the number tables keep each cell on one line."""
    return {"kind": "table", "head": head, "rows": rows, "groups": list(groups), "wrap": wrap}


def para(*parts) -> dict:
    return {"kind": "p", "parts": list(parts)}


def lead(*parts) -> dict:
    return {"kind": "lead", "parts": list(parts)}


def note(text: str) -> dict:
    return {"kind": "note", "text": text}


def figure(name: str, alt: str) -> dict:
    return {"kind": "figure", "name": name, "alt": alt}


def code(text: str) -> dict:
    return {"kind": "code", "text": text}


def row(*cols: list[dict]) -> list[dict]:
    """Blocks shown side by side in the HTML (one after another in Markdown); empty columns are dropped."""
    cols = tuple(c for c in cols if c)
    return [{"kind": "row", "cols": cols}] if len(cols) > 1 else [b for c in cols for b in c]
