"""The report as one self-contained HTML file: figures embedded as base64 PNGs, no scripts, no network."""

from __future__ import annotations

import base64
import html
import struct

import yaml

from r1distill.report.blocks import Cell, Num, cell_html, cell_md
from r1distill.report.sections import header, sections
from r1distill.tables import title

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d8dee4; --soft:#f6f8fa; --accent:#e07b39; --blue:#3b6ea5; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color:var(--ink);
       background:#eef1f4; }
main { max-width:1120px; margin:0 auto; padding:28px 28px 60px; }
header.top { background:#1f2a37; color:#fff; padding:22px 28px; border-radius:10px; margin-bottom:22px; }
header.top h1 { margin:0 0 4px; font-size:22px; font-weight:650; letter-spacing:.2px; }
header.top .sub { color:#c7d0da; font-size:13.5px; }
header.top pre { background:#111922; color:#e8edf2; border:0; margin:12px 0 10px; }
header.top .chips span { display:inline-block; background:#2d3b4b; color:#dbe3ea; border-radius:12px;
       padding:1px 10px; margin:3px 6px 0 0; font-size:12.5px; }
header.top details summary { color:#c7d0da; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 24px 14px;
          margin-bottom:18px; }
h2 { font-size:18px; margin:0 0 12px; padding-bottom:6px; border-bottom:2px solid var(--soft); }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:4px 0 16px; }
.card { flex:1 1 200px; border:1px solid var(--line); border-radius:8px; padding:10px 14px 8px;
        border-top:4px solid var(--c); }
.card .who { font-size:13px; color:var(--muted); font-weight:600; }
.card .big { font-size:28px; font-weight:700; font-variant-numeric:tabular-nums; }
.card .ci { font-size:12.5px; color:var(--muted); font-variant-numeric:tabular-nums; margin-bottom:6px; }
.card .bench { font-size:12px; color:var(--muted); }
table { border-collapse:collapse; margin:8px 0 14px; font-size:13.5px; font-variant-numeric:tabular-nums; }
th, td { padding:5px 11px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { background:var(--soft); text-align:right; font-weight:600; color:#333; white-space:nowrap; }
td { text-align:right; }
th:first-child, td.text { text-align:left; }
th.group { text-align:center; background:#fff; border-bottom:2px solid var(--line); font-size:13px; }
tbody tr:nth-child(even) td { background:#fafbfc; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:7px; }
img { max-width:100%; display:block; margin:6px 0 12px; }
pre { background:var(--soft); border:1px solid var(--line); border-radius:6px; padding:10px 12px;
      overflow-x:auto; font-size:12.5px; line-height:1.45; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size:12.5px; }
p { margin:6px 0 10px; color:#333; }
.note { color:var(--muted); font-style:italic; }
.wide { overflow-x:auto; }
table.wrap { max-width:100%; }
table.wrap th, table.wrap td { white-space:normal; overflow-wrap:anywhere; vertical-align:top; }
table.wrap td.text { min-width:5em; max-width:24em; }
.row { display:flex; flex-wrap:wrap; gap:8px 32px; align-items:flex-start; }
.row > div:first-child { flex:0 0 auto; max-width:100%; }
.row > div + div { flex:1 1 320px; min-width:320px; }
img { height:auto; }
p.lead { font-size:16.5px; font-weight:600; color:var(--ink); background:#fff7ef; border-left:4px solid var(--accent);
         padding:8px 12px; border-radius:4px; margin:2px 0 14px; }
pre.sample { white-space:pre-wrap; word-break:break-word; max-height:260px; overflow-y:auto; margin:2px 0 12px; }
a { color:var(--blue); }
"""


def render_html(data: dict, figs: dict[str, bytes]) -> str:
    h = header(data)
    esc = html.escape
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>r1distill report: {esc(h['run'])}</title>", f"<style>{CSS}</style></head><body><main>"]
    # header: what ran, how to rerun it, with what
    out.append('<header class="top">')
    out.append(f"<h1>r1distill report</h1><div class=\"sub\">run dir <code>{esc(h['run'])}</code>")
    times = [f"{k} {esc(str(h[k]).replace('T', ' '))}" for k in ("started", "finished") if h[k]]
    if h["seconds"] is not None:
        times.append(f"{h['seconds']:.0f} s{esc(h['skipped'])}")
    if h["status"] and h["status"] != "done":
        times.append(f"status: {esc(h['status'])}")
    if times:
        out.append(" · " + " · ".join(times))
    out.append("</div>")
    if h["what"]:
        out.append(f'<div class="sub">{esc(h["what"])}</div>')
    if h["command"]:
        out.append(f"<pre><code>cd {esc(str(h['cwd']))}\n{esc(h['command'])}</code></pre>")
    else:
        out.append('<div class="sub">No run.json: this run dir was not made by <code>r1distill run</code>, '
                   "so the command is unknown.</div>")
    out.append('<div class="chips">' + "".join(f"<span>{esc(k)} {esc(str(v))}</span>" for k, v in h["versions"].items())
               + (f"<span>{esc(h['versions_note'].strip(' ()'))}</span>" if h["versions_note"] else ""))
    for k, v in (h["hardware"] or {}).items():
        out.append(f"<span>{esc(k)}: {esc(', '.join(v) if isinstance(v, list) else str(v))}</span>")
    out.append("</div>")
    if h["recipe"] is not None or h["resolved"]:
        out.append("<details><summary>Recipe (as loaded, and resolved per stage)</summary>")
        if h["recipe"] is not None:
            out.append(f"<pre><code>{esc(yaml.safe_dump(h['recipe'], sort_keys=False))}</code></pre>")
        if h["resolved"]:
            out.append(f"<pre><code>{esc(yaml.safe_dump(h['resolved'], sort_keys=False))}</code></pre>")
        out.append("</details>")
    out.append("</header>")
    from r1distill.report.figures import colors

    col = colors(list(data["eval"] or {}))
    swatches = {title(m): c for m, c in col.items()}
    swatches |= colors([v["name"] for v in data["variants"]])  # the comparison table, as its bar chart
    for sid, heading, blocks in sections(data, figs):
        out.append(f'<section id="{sid}"><h2>{esc(heading)}</h2>')
        out += [_cards(data["eval"], col) if b["kind"] == "cards" else _block_html(b, figs, swatches)
                for b in blocks]
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out)


def _png_size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])  # width, height from the IHDR chunk


def _is_text(cell: Cell) -> bool:
    """A cell of words (left-aligned), not a number or a missing one."""
    numeric = lambda p: isinstance(p.value, (int, float)) or p.value is None if isinstance(p, Num) else p == "—"
    return bool(cell) and not any(numeric(p) for p in cell)


def _block_html(b: dict, figs: dict[str, bytes], swatches: dict[str, str]) -> str:
    esc = html.escape
    if b["kind"] == "row":
        return ('<div class="row">' + "".join(
            "<div>" + "".join(_block_html(c, figs, swatches) for c in col) + "</div>" for col in b["cols"]) + "</div>")
    if b["kind"] == "figure":
        png = figs[b["name"]]
        w, h = _png_size(png)
        # Shown at 100 px per inch of figure: the PNG is drawn at savefig.dpi (150) so that it stays sharp.
        scale = 100 / 150
        return (f'<img data-figure="{b["name"]}" alt="{esc(b["alt"])}" width="{round(w * scale)}" '
                f'height="{round(h * scale)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    if b["kind"] == "table":
        head = b["head"]
        groups = ""
        if b["groups"]:  # a header row per group; the columns below keep only what follows the group's label
            groups = "".join(f'<th colspan="{n}" class="group">{esc(g)}</th>' for g, n in b["groups"])
            groups = f"<tr>{groups}</tr>"
            labels = [g for g, n in b["groups"] for _ in range(n)]
            head = [h.removeprefix(f"{g} ") if g else h for g, h in zip(labels, head)]
        table = '<table class="wrap">' if b.get("wrap") else "<table>"
        out = [f'<div class="wide">{table}<thead>' + groups + "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in head)
               + "</tr></thead><tbody>"]
        for row in b["rows"]:
            tds = []
            for i, cell in enumerate(row):
                inner = cell_html(cell)
                if i == 0 and b["head"][0] in ("model", "variant") and cell_md(cell) in swatches:
                    inner = f'<span class="swatch" style="background:{swatches[cell_md(cell)]}"></span>{inner}'
                cls = ' class="text"' if _is_text(cell) else ""
                tds.append(f"<td{cls}>{inner}</td>")
            out.append("<tr>" + "".join(tds) + "</tr>")
        return "\n".join(out) + "</tbody></table></div>"
    if b["kind"] == "p":
        return f"<p>{cell_html(b['parts'])}</p>"
    if b["kind"] == "lead":
        return f'<p class="lead">{cell_html(b["parts"])}</p>'
    if b["kind"] == "code":
        return f'<pre class="sample"><code>{esc(b["text"])}</code></pre>'
    if b["kind"] == "cards":
        return ""
    return f'<p class="note">{esc(b["text"])}</p>'


def _cards(ev: dict, col: dict[str, str]) -> str:
    """The headline: pass@1 per model (and benchmark) as big numbers, before any table."""
    cards = []
    for model, res in ev.items():
        lines = []
        for b, r in res.items():
            if b.startswith("_") or "pass@1" not in r:
                continue
            p1 = Num(f"{r['pass@1']:.3f}", ("eval", model, b, "pass@1"), r["pass@1"]).html()
            ci = r.get("pass@1_ci95")
            ci_html = ""
            if ci:
                lo, hi = (Num(f"{v:.3f}", ("eval", model, b, "pass@1_ci95", i), v).html() for i, v in enumerate(ci))
                ci_html = f'<div class="ci">95% CI [{lo}, {hi}]</div>'
            lines.append(f'<div class="bench">{html.escape(b)} pass@1</div><div class="big">{p1}</div>{ci_html}')
        cards.append(f'<div class="card" style="--c:{col.get(model, "#888")}"><div class="who">'
                     f"{html.escape(title(model))}</div>{''.join(lines)}</div>")
    return f'<div class="cards">{"".join(cards)}</div>'
