"""Stage `curate`: trace shards -> verified, filtered traces + stats.

Each trace gets `pred_answer, correct, format_ok, reject_reason`. The first failing filter, in
this order, names the reject reason: `truncated` (finish_reason == length), `unclosed_think`,
`no_answer`, `incorrect`, then `over_max_per_problem` (rejection sampling keeps at most m correct
traces per problem, the shortest first). Kept rows (reject_reason null) are written with their
top-k columns to `data-00000.parquet`; rejected rows go to `rejected.jsonl` without them, for
reading. `stats.json` and `stats.md` give the funnel.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from r1distill.config import LAYOUT, ConfigError, UserError, write_resolved
from r1distill.console import console, progress
from r1distill.data.traces import (
    CURATED_SCHEMA,
    TRACE_SCHEMA,
    check_schema,
    read_table,
    rows_to_table,
    write_table_atomic,
)
from r1distill.prompts import has_unclosed_think
from r1distill.verify import verify_answer

REASONS = ("truncated", "unclosed_think", "no_answer", "incorrect", "over_max_per_problem")


@dataclass
class CurateConfig:
    run_dir: str = "runs/default"
    input_dir: str | None = None  # default: {run_dir}/traces
    output_dir: str | None = None  # default: {run_dir}/curated
    require_correct: bool = True  # drop traces whose answer does not verify against the gold answer
    drop_truncated: bool = True  # drop traces that hit max_new_tokens
    require_format: bool = True  # drop traces with an unclosed <think> or no final answer
    max_per_problem: int | None = None  # rejection sampling: keep at most m correct traces per problem
    last_number: bool = True  # fall back to the last number when no boxed/#### /"answer is" is found
    verify_timeout: float = 5.0  # seconds per comparison
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.max_per_problem is not None and self.max_per_problem < 1:
            raise ConfigError("curate.max_per_problem must be >= 1 (or unset for no limit)")

    @property
    def inp(self) -> Path:
        return Path(self.input_dir or Path(self.run_dir) / LAYOUT["traces"])

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path(self.run_dir) / LAYOUT["curated"])


def _reject_reason(cfg: CurateConfig, row: dict) -> str | None:
    if cfg.drop_truncated and row["finish_reason"] == "length":
        return "truncated"
    if cfg.require_format and has_unclosed_think(row["completion"]):
        return "unclosed_think"
    if cfg.require_format and row["pred_answer"] is None:
        return "no_answer"
    if cfg.require_correct and not row["correct"]:
        return "incorrect"
    return None


def run(cfg: CurateConfig) -> Path:
    t0 = time.time()
    table = read_table(cfg.inp)
    check_schema(table, TRACE_SCHEMA, str(cfg.inp))
    out = cfg.out
    if out.exists():
        shutil.rmtree(out)  # curation is cheap and deterministic: always rebuild
    rows = table.to_pylist()
    console.print(f"[bold]curate[/] {len(rows)} traces from {cfg.inp}")
    gold_bad = 0
    with progress() as bar:
        task = bar.add_task("verify", total=len(rows), info="")
        for row in rows:
            v = verify_answer(row["completion"], row["answer"], last_number=cfg.last_number,
                              timeout=cfg.verify_timeout)
            gold_bad += not v.gold_ok
            row["pred_answer"], row["correct"] = v.pred_answer, v.correct
            row["format_ok"] = v.pred_answer is not None and not has_unclosed_think(row["completion"])
            row["reject_reason"] = _reject_reason(cfg, row)
            bar.update(task, advance=1)
    if cfg.max_per_problem:
        by_problem = defaultdict(list)
        for row in rows:
            if row["reject_reason"] is None:
                by_problem[row["prompt_id"]].append(row)
        for group in by_problem.values():
            for row in sorted(group, key=lambda r: (r["num_tokens"], r["sample_idx"]))[cfg.max_per_problem:]:
                row["reject_reason"] = "over_max_per_problem"
    kept = [r for r in rows if r["reject_reason"] is None]
    if not kept:
        raise UserError(f"curate kept no traces out of {len(rows)} ({_counts(rows)}); generate more samples, "
                        "or loosen the filters (e.g. curate.require_correct=false)")
    write_table_atomic(rows_to_table(kept, CURATED_SCHEMA), out / "data-00000.parquet")
    with open(out / "rejected.jsonl", "w") as f:
        for r in rows:
            if r["reject_reason"] is not None:
                slim = {k: v for k, v in r.items() if k not in ("topk_ids", "topk_logprobs", "completion_ids")}
                f.write(json.dumps(slim) + "\n")
    stats = _stats(rows, kept, gold_bad, time.time() - t0)
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    (out / "stats.md").write_text(stats_markdown(stats))
    write_resolved(cfg, out)
    console.print(f"curate: kept {stats['kept']}/{stats['total']} traces; rejected {stats['rejected']}")
    return out


def _counts(rows: list[dict]) -> dict:
    return dict(Counter(r["reject_reason"] for r in rows if r["reject_reason"]))


def _stats(rows: list[dict], kept: list[dict], gold_bad: int, seconds: float) -> dict:
    counts = _counts(rows)
    per_problem = defaultdict(list)
    for r in rows:
        per_problem[r["prompt_id"]].append(r["correct"])
    return {
        "total": len(rows),
        "kept": len(kept),
        "rejected": {k: counts.get(k, 0) for k in REASONS},
        "correct": sum(r["correct"] for r in rows),
        "problems": len(per_problem),
        "problems_kept": len({r["prompt_id"] for r in kept}),
        "teacher_pass_rate": sum(sum(v) / len(v) for v in per_problem.values()) / max(len(per_problem), 1),
        "gold_unparseable": gold_bad,
        "mean_tokens_all": sum(r["num_tokens"] for r in rows) / max(len(rows), 1),
        "mean_tokens_kept": sum(r["num_tokens"] for r in kept) / max(len(kept), 1),
        "seconds": round(seconds, 2),
    }


def stats_markdown(stats: dict) -> str:
    lines = ["| step | traces |", "|---|---:|", f"| generated | {stats['total']} |"]
    left = stats["total"]
    for reason in REASONS:
        n = stats["rejected"][reason]
        if n:
            left -= n
            lines.append(f"| − {reason} | {n} |")
    lines.append(f"| **kept** | **{left}** |")
    lines.append("")
    lines.append(f"Teacher pass rate (mean over {stats['problems']} problems): {stats['teacher_pass_rate']:.3f}; "
                 f"problems with a kept trace: {stats['problems_kept']}.")
    return "\n".join(lines) + "\n"
