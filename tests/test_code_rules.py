"""Rules of the source tree that review would otherwise have to keep (issue 26): a module's private names (`_x`) are
its own, so no module of src imports another's or reaches for one through a module name."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "r1distill"


def private_uses(path: Path) -> list[str]:
    """`from r1distill.x import _y` and `mod._y` (mod bound to an r1distill module) in one file."""
    tree = ast.parse(path.read_text(), str(path))
    modules: set[str] = set()  # local names bound to r1distill modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("r1distill"):
            for a in node.names:
                if a.name.startswith("_"):
                    found.append(f"{path.name}:{node.lineno} from {node.module} import {a.name}")
                elif a.name[:1].islower():  # a submodule or a function: attribute access is checked below
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            modules.update((a.asname or a.name.split(".")[0]) for a in node.names if a.name.startswith("r1distill"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    found = [use for path in sorted(SRC.rglob("*.py")) for use in private_uses(path)]
    assert not found, "private names used across modules (make them public where they are defined):\n" + "\n".join(
        found)


def test_the_rule_finds_both_forms(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from r1distill.train.data import _topk, upcast\nfrom r1distill.data import traces as store\n"
                   "store._write_atomic(1)\nstore.__name__\n")
    assert private_uses(bad) == ["bad.py:1 from r1distill.train.data import _topk", "bad.py:3 store._write_atomic"]


class _Example:
    # the line above
    a: int = 1  # beside it, which goes on
    #             on the next line
    # b's own line above
    b: int = 2
    c: int = 3


def test_every_config_key_has_help():
    """Every key of every stage's config (nested ones too, train.student's among them) says what it does in --help: the
    comment above the field or beside it, continuation lines included (issue 26)."""
    import importlib

    from r1distill.cli import STAGE_CONFIGS, _comments, config_keys

    keys = [(s, k, note) for s, (m, n) in STAGE_CONFIGS.items()
            for k, _, note in config_keys(getattr(importlib.import_module(m), n))]
    assert len(keys) > 150 and not [f"{s}.{k}" for s, k, note in keys if not note]
    assert _comments(_Example) == {"a": "the line above beside it, which goes on on the next line",
                                  "b": "b's own line above"}


def test_the_eval_stage_does_not_load_the_report():
    """Stages lean on shared modules, not on each other: eval writes results.md without the report package."""
    import subprocess
    import sys

    code = "import sys, r1distill.evaluate; print(sorted(m for m in sys.modules if m.startswith('r1distill.report')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_dir_file_names_are_spelt_only_in_the_layout_module():
    """One contract for the run dir (issue 26): a file name a stage writes and another reads is a constant of
    r1distill/layout.py, never a string literal elsewhere in src (docstrings and messages aside)."""
    from r1distill import layout

    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)} | set(layout.LAYOUT.values())
    names -= set(layout.LAYOUT.values())  # dir names double as words ("eval", "student"): checked via LAYOUT below
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}")
    assert not found, "run-dir file names outside layout.py:\n" + "\n".join(found)
    assert layout.summary("-w0of2") == "summary-w0of2.json" and layout.manifest() == "manifest.json"


def test_no_module_of_src_is_over_400_lines():
    """A module a reader can hold in mind (issue 26): over 400 lines, it holds more than one concern."""
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in sorted(SRC.rglob("*.py"))}
    long = {name: n for name, n in sizes.items() if n > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_the_readme_layout_names_every_module_and_script():
    """README's Layout section matches the tree (issue 26): every module of src (a package's modules may be named in
    its dir's entry, as report/ does) and every script is there, and every src path it names exists."""
    import re

    readme = (SRC.parents[1] / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```")[1]
    entries: dict[str, str] = {}  # the path column -> its description, continuation lines included
    key = ""
    for line in block.splitlines():
        if line.strip() and not line.startswith(" " * 20):
            key, _, text = line.strip().partition("  ")
            entries[key] = text
        elif key:
            entries[key] += " " + line.strip()
    paths = " ".join(entries)
    missing = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC).as_posix()
        if p.name == "__init__.py" and p.parent != SRC / "backends":
            continue
        if not re.search(rf"(^|[ ,/]){re.escape(rel)}\b", paths) and p.stem not in entries.get(f"{p.parent.name}/", ""):
            missing.append(rel)
    missing += [f"scripts/{p.name}" for p in sorted((SRC.parents[1] / "scripts").iterdir())
                if f"scripts/{p.name}" not in paths and not p.name.startswith("gpu_check_")]
    assert not missing, f"not in README's Layout: {missing}"
    named = re.findall(r"^  ([\w/]+\.py)", block, re.M)
    assert len(named) > 40 and not [n for n in named if not (SRC / n).exists()]
