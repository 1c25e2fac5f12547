"""The report as Markdown: `report.md`, its figures as PNG files in `report_files/`."""

from __future__ import annotations

import yaml

from r1distill.report.blocks import cell_md
from r1distill.report.sections import header, sections


def render_markdown(data: dict, figs: dict[str, bytes], files_dir: str = "report_files") -> str:
    h = header(data)
    out = [f"# r1distill report: `{h['run']}`", ""] + ([h["what"], ""] if h["what"] else [])
    if h["command"]:
        out += ["Reproduce (from `" + str(h["cwd"]) + "`):", "", "```sh", h["command"], "```", ""]
    when = ", ".join(f"{k} {h[k]}" for k in ("started", "finished", "status") if h[k])
    if when:
        out += [when + (f"; {h['seconds']:.0f} s{h['skipped']}" if h["seconds"] is not None else "") + ".", ""]
    out += ["Versions" + h["versions_note"] + ": " + ", ".join(f"{k} {v}" for k, v in h["versions"].items()), ""]
    if h["hardware"]:
        out += ["Hardware: " + ", ".join(f"{k} {v}" for k, v in h["hardware"].items()), ""]
    for _, title, blocks in sections(data, figs):
        out += [f"## {title}", ""]
        for b in blocks:
            out += block_md(b, files_dir)
    if h["recipe"] is not None or h["resolved"]:
        out += ["## Recipe", ""]
        if h["recipe"] is not None:
            out += ["As loaded (recipe file plus overrides):", "", "```yaml",
                    yaml.safe_dump(h["recipe"], sort_keys=False).rstrip(), "```", ""]
        if h["resolved"]:
            out += ["Resolved per stage (every setting, defaults included):", "", "```yaml",
                    yaml.safe_dump(h["resolved"], sort_keys=False).rstrip(), "```", ""]
    return "\n".join(out)


def block_md(b: dict, files_dir: str) -> list[str]:
    kind = b["kind"]
    if kind == "row":
        return [line for col in b["cols"] for c in col for line in block_md(c, files_dir)]
    if kind == "figure":
        return [f"![{b['alt']}]({files_dir}/{b['name']}.png)", ""]
    if kind == "table":
        return (["| " + " | ".join(b["head"]) + " |", "|---|" + "---:|" * (len(b["head"]) - 1)]
                + ["| " + " | ".join(cell_md(c).replace("|", "\\|") for c in row) + " |" for row in b["rows"]] + [""])
    if kind == "p":
        return [cell_md(b["parts"]), ""]
    if kind == "lead":
        return [f"**{cell_md(b['parts'])}**", ""]
    if kind == "code":
        fence = "````" if "```" in b["text"] else "```"
        return [f"{fence}text", b["text"], fence, ""]
    if kind == "cards":
        return []  # the HTML's headline numbers; the table below has them
    return [f"_{b['text']}_", ""]
