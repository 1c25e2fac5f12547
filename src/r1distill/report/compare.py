"""Student variants side by side: one row per variant (objective, divergence, top-k at train time, layers,
stored bytes per token) with pass@1 and its 95% CI per benchmark, and the difference to the baseline with a
paired-bootstrap 95% CI over problems.

The baseline is the variant named `sft`, else the first whose objective is sft; without one there is no
difference column. Stored bytes per token count the teacher distribution a variant's training read, as the trace
format holds it uncompressed: SFT reads only the completion tokens (0 bytes of distribution); offline KD on the
first k stored entries reads k int32 ids plus k float16 log-probs ("exact": 6k bytes) or k uint8 codes and one
float16 top-1 ("q8": 5k + 2). Online objectives ask a live teacher: no stored bytes, and no point on that plot.
"""

from __future__ import annotations

from r1distill.report import blocks as B
from r1distill.report.collect import per_problem
from r1distill.report.stats import paired, paired_bootstrap_diff

ONLINE = ("kd_online", "gkd", "on_policy")


def stored_bytes_per_token(objective: str | None, topk: int | None, topk_format: str = "exact",
                           kd_term: bool = True) -> float | None:
    """Bytes of teacher distribution per completion token a variant's training reads (see the module doc); None
    for online objectives (and when k is unknown)."""
    if objective in ONLINE:
        return None
    if objective == "sft" or not kd_term:
        return 0.0
    if not topk:
        return None
    return float(5 * topk + 2 if topk_format == "q8" else 6 * topk)


def _generate_config(data: dict) -> dict:
    return data["configs"].get("generate") or ((data["meta"] or {}).get("resolved") or {}).get("generate") or {}


def _layers(v: dict) -> int | None:
    """Decoder layers of the trained student: its config.json, else what the train config asked for."""
    n = v["model_config"].get("num_hidden_layers")
    if n:
        return n
    st = v["config"].get("student") or {}
    return len(st.get("layers") or []) or st.get("num_layers")


def benchmarks(data: dict) -> list[str]:
    ev = data["eval"] or {}
    return sorted({b for v in data["variants"] for b in ev.get(v["model"], {}) if not b.startswith("_")})


def baseline(variants: list[dict]) -> dict | None:
    """The variant others are compared with: the one named sft, else the first whose objective is sft."""
    return next((v for v in variants if v["name"] == "sft"), None) or next(
        (v for v in variants if (v["config"].get("objective") or v["summary"].get("objective")) == "sft"), None)


def describe(data: dict, v: dict) -> dict:
    """What a variant is: name, model (its eval label), objective, divergence, topk (the stored entries its loss
    read; None for SFT/online), layers, bytes_per_token."""
    gen = _generate_config(data)
    stored_k, fmt = gen.get("topk_logprobs"), gen.get("topk_format") or "exact"
    loss = v["config"].get("loss") or {}
    objective = v["config"].get("objective") or v["summary"].get("objective")
    kd_term = objective not in ("sft", *ONLINE) and loss.get("alpha", 0.5) < 1.0
    k = loss.get("topk") or stored_k
    k = min(k, stored_k) if k and stored_k else k
    div = loss.get("divergence") if objective != "sft" and (kd_term or objective in ONLINE) else None
    if div == "jsd" and loss.get("beta") is not None:
        div = f"jsd β={loss['beta']:g}"
    if objective == "on_policy":  # the teacher scores the student's samples online; lmbda < 1 adds kd steps
        op = v["config"].get("on_policy") or {}
        mixed = op.get("lmbda", 1.0) < 1.0 and loss.get("alpha", 0.5) < 1.0
        div = ("sampled reverse KL" if op.get("loss", "token") == "token"
               else f"{div or loss.get('divergence')} on the teacher's top-{op.get('teacher_topk', 20)}")
        if op.get("reward_coef"):  # REINFORCE on the verifier beside the distillation
            group = op.get("rollouts_per_prompt", 1)
            div += f" + verifier reward ×{op['reward_coef']:g}" + (f" ({group} rollouts a prompt)" if group > 1 else "")
        return {"name": v["name"], "model": v["model"], "objective": objective, "divergence": div,
                "topk": k if mixed else None, "layers": _layers(v),
                "bytes_per_token": stored_bytes_per_token("kd", k, fmt) if mixed else None}
    xtok = v["config"].get("xtok")
    if xtok and div:  # cross-tokenizer KD: the alignment method; gold adds the divergence on shared tokens
        method = xtok.get("method", "gold")
        div = f"xtok {method}" + (f" + {div}" if method == "gold" else "")
    return {"name": v["name"], "model": v["model"], "objective": objective, "divergence": div,
            "topk": k if kd_term else None, "layers": _layers(v),
            "bytes_per_token": stored_bytes_per_token(objective, k, fmt, kd_term)}


def summary_line(data: dict, v: dict) -> str:
    """A variant in a few words, e.g. "kd, forward_kl, top-5, 16 layers"."""
    d = describe(data, v)
    return ", ".join(p for p in (d["objective"], d["divergence"], d["topk"] and f"top-{d['topk']}",
                                 d["layers"] and f"{d['layers']} layers") if p)


def rows(data: dict) -> list[dict]:
    """One dict per variant with eval results: `describe`'s keys, results ({bench: summary metrics}), baseline
    (bool), and diff ({bench: (diff, lo, hi)} against the baseline, when both have per-sample files). Computed
    once per collected run dir (the figures and the section share them)."""
    if "compare_rows" in data:
        return data["compare_rows"]
    ev = data["eval"] or {}
    vs = [v for v in data["variants"] if v["model"] in ev]
    base = baseline(vs)
    out = []
    for v in vs:
        results = {b: r for b, r in ev[v["model"]].items() if not b.startswith("_") and "pass@1" in r}
        row = {**describe(data, v), "results": results, "diff": {}, "baseline": v is base}
        if base is not None and v is not base:
            for b in results:
                mine = per_problem(data["samples"].get(v["model"], {}).get(b))
                theirs = per_problem(data["samples"].get(base["model"], {}).get(b))
                a, c = paired(mine, theirs)
                if a:
                    row["diff"][b] = paired_bootstrap_diff(a, c)
        out.append(row)
    data["compare_rows"] = out
    return out


def section(data: dict, figs: dict) -> list[dict]:
    """The comparison section's blocks (empty when the run has no variants with eval results)."""
    table_rows = rows(data)
    if not table_rows:
        return []
    benches = benchmarks(data)
    base = next((r for r in table_rows if r["baseline"]), None)
    head = ["variant", "objective", "divergence", "top-k", "layers", "stored B/token"]
    groups = [("", len(head))]
    for b in benches:
        cols = [f"{b} pass@1 [95% CI]"] + ([f"{b} Δ vs {base['name']} [95% CI]"] if base else [])
        head += cols
        groups.append((b, len(cols)))
    cells = []
    for r in table_rows:
        bpt = r["bytes_per_token"]
        row = [[r["name"]], [r["objective"] or "—"], [r["divergence"] or "—"],
               [str(r["topk"]) if r["topk"] else "—"], [str(r["layers"]) if r["layers"] else "—"],
               ["online" if r["objective"] in ONLINE else "—" if bpt is None else f"{bpt:.0f}"]]
        for b in benches:
            m = r["results"].get(b)
            if not m:
                row.append(["—"])
            else:
                cell = [B.f(m["pass@1"], "{:.3f}", "eval", r["model"], b, "pass@1")]
                if m.get("pass@1_ci95"):
                    lo, hi = m["pass@1_ci95"]
                    cell += [" [", B.f(lo, "{:.3f}", "eval", r["model"], b, "pass@1_ci95", 0), ", ",
                             B.f(hi, "{:.3f}", "eval", r["model"], b, "pass@1_ci95", 1), "]"]
                row.append(cell)
            if base:
                d = r["diff"].get(b)
                row.append(["baseline"] if r["baseline"] else
                           [f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"] if d else ["—"])
        cells.append(row)
    blocks = [B.table(head, cells, groups)]
    figures = [B.figure(n, alt) for n, alt in (("variants", "pass@1 per student variant with 95% CIs"),
                                              ("bytes", "student pass@1 against stored bytes per token"))
               if n in figs]
    note = ("Δ is each variant's pass@1 minus the baseline's, with a paired bootstrap 95% CI over problems "
            "(the same resampled problems for both); an interval that holds 0 is no measured difference. "
            if base else "No variant is SFT (named `sft` or with objective sft), so there is no baseline to "
            "compare with. ")
    note += ("Top-k is the number of the teacher's stored entries per token the KD loss read; stored B/token the "
             "bytes of teacher distribution that takes in the trace format, uncompressed (int32 ids + float16 "
             "log-probs, or 8-bit codes for q8); SFT reads the completion tokens only.")
    return blocks + B.row(figures[:1], figures[1:]) + [B.para(note)]
