"""Stage `curate`: trace shards -> verified, filtered traces + stats.

Each trace gets `pred_answer, correct, format_ok, reject_reason`. Answers are graded by
`r1distill.verify.verify_many` (worker processes, a hard time limit per row). The first failing
filter, in this order, names the reject reason (the order of `REASONS`):

1. Problem filters, which drop every sample of a problem:
   `contaminated` (the problem shares a word n-gram with a benchmark problem),
   `duplicate_problem` (same or near-same text as an earlier problem; the first one keeps its samples),
   `pass_rate` (the teacher's pass rate over all samples of the problem is outside `pass_rate_range`).
2. Trace filters: `unknown_tokens` (a sampled token an API server named by a string the tokenizer could not
   identify, stored as id -1: the row cannot be trained on; always on), `finish_<reason>` (the server ended the
   completion neither at a clean stop nor at max_new_tokens: `finish_content_filter`,
   `finish_insufficient_system_resource`, `finish_abort`, `finish_unknown` when it gave no reason; such a text
   is cut off, not complete; always on, one funnel step per reason seen), `truncated` (finish_reason ==
   length), `unclosed_think`, `no_answer`, `gold_unparseable`
   (the gold answer cannot be read, so the trace is flagged rather than called wrong), `incorrect`,
   `too_short` / `too_long` (num_tokens), `repetition` (share of repeated word n-grams),
   `language_mixing` (share of letters outside the problem's script).
3. Across the surviving traces: `duplicate_completion` (same or near-same text as an earlier one), then
   `over_max_per_problem` (rejection sampling keeps at most m traces per problem, shortest or random).

Kept rows (reject_reason null) are written with their top-k columns, one output shard per input shard
(`data-00000.parquet`, ...; a shard with no kept row writes none); rejected rows go to `rejected.jsonl`
without them, for reading. `stats.json` and `stats.md` give the funnel (traces left after each enabled
filter), pass-rate histogram, token lengths, and contamination hits.

Memory stays flat in the dataset's size: the decisions are made in a first pass over the thin columns of
each shard (ids, text, answers, finish reasons, lengths), keeping a few numbers per row and no text; a
second pass reads each shard in row batches, adds the curated columns, filters and writes it as it is
stored (the top-k columns never become Python objects, and q8 stays q8). Near-duplicate completions are
found by MinHash signatures, confirmed on texts read back from their shard when a candidate pair appears.
The output is written into `{out}.tmp` and renamed into place at the end.

Decontamination against a benchmark that cannot be loaded (no local file, and the hub unreachable: one probe,
`r1distill.hub`) is skipped with one warning, and `stats.md` says "skipped" rather than a count of 0.

Reruns follow `r1distill.rerun`: the traces are read and checked first; a dir holding the results of the same
config and input is left as it is ("done"), one of another config or input is moved aside to
`curated.old-<stamp>`. `config.yaml` is a recipe (`r1distill curate curated/config.yaml`).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from r1distill import filters, hub, layout, rerun
from r1distill.config import LAYOUT, ConfigError, UserError, config_hash, to_dict, write_resolved
from r1distill.console import console, progress
from r1distill.curate_shards import ShardTexts, decide_shard, expected_schema, write_shard
from r1distill.data.problems import BENCHMARKS, BENCHMARKS_ENV, SourceConfig, load_problems
from r1distill.data.traces import check_schema, parquet_file, shard_paths
from r1distill.tables import funnel_markdown

REASONS = ("contaminated", "duplicate_problem", "pass_rate", "unknown_tokens", "truncated", "unclosed_think",
           "no_answer", "gold_unparseable", "incorrect", "too_short", "too_long", "repetition", "language_mixing",
           "duplicate_completion", "over_max_per_problem")


@dataclass
class CurateConfig:
    run_dir: str = "runs/default"  # the run's directory: each stage's default input and output dirs are under it
    input_dir: str | None = None  # default: {run_dir}/traces
    output_dir: str | None = None  # default: {run_dir}/curated
    require_correct: bool = True  # drop traces whose answer does not verify against the gold answer
    drop_truncated: bool = True  # drop traces that hit max_new_tokens
    require_format: bool = True  # drop traces with an unclosed <think> or no final answer
    max_per_problem: int | None = None  # rejection sampling: keep at most m traces per problem
    select: str = "shortest"  # which m traces max_per_problem keeps: shortest | random (seeded by `seed`)
    seed: int = 0  # the seed of the per-problem subsampling (max_per_problem)
    min_tokens: int | None = None  # drop traces with fewer completion tokens (too_short)
    max_tokens: int | None = None  # drop traces with more completion tokens (too_long)
    max_repeat_ngram_share: float | None = 0.5  # drop when more of the word n-grams repeat (null: off)
    repeat_ngram: int = 4  # n for max_repeat_ngram_share
    max_foreign_script_share: float | None = 0.2  # drop when more letters are in another script than the problem's
    pass_rate_range: list[float] | None = None  # [a, b]: keep problems whose teacher pass rate is in it
    dedup_problems: bool = True  # drop later prompt_ids whose problem duplicates an earlier one
    dedup_completions: bool = True  # drop traces whose completion duplicates an earlier kept one
    near_dup_threshold: float | None = 0.9  # word 5-gram Jaccard at which texts are duplicates (null: exact)
    decontaminate: list[str] = field(default_factory=lambda: list(BENCHMARKS))  # benchmarks to hold out
    decontam_ngram: int = 8  # a problem sharing one word n-gram with a benchmark problem is contaminated
    last_number: bool = True  # fall back to the last number when no boxed/#### /"answer is" is found
    verify_timeout: float = 5.0  # seconds per Math-Verify call (a row is abandoned after ~3x)
    num_workers: int = 0  # verifier processes; 0 = all CPUs
    # delete this stage's earlier outputs (after the input is checked) instead of resuming or moving aside
    overwrite: bool = False

    def __post_init__(self) -> None:
        share = lambda v: v is None or 0 <= v <= 1
        checks = [
            (self.max_per_problem is None or self.max_per_problem >= 1,
             "max_per_problem must be >= 1 (or unset for no limit)"),
            (self.select in ("shortest", "random"), f"select must be shortest or random, not {self.select!r}"),
            (self.min_tokens is None or self.min_tokens >= 0, "min_tokens must be >= 0 (or unset)"),
            (self.max_tokens is None or self.max_tokens >= max(self.min_tokens or 1, 1),
             "max_tokens must be >= 1 and >= min_tokens (or unset)"),
            (share(self.max_repeat_ngram_share), "max_repeat_ngram_share must be in [0, 1] (or null: off)"),
            (self.repeat_ngram >= 1, "repeat_ngram must be >= 1"),
            (share(self.max_foreign_script_share), "max_foreign_script_share must be in [0, 1] (or null: off)"),
            (self.pass_rate_range is None or (len(self.pass_rate_range) == 2
                                              and 0 <= self.pass_rate_range[0] <= self.pass_rate_range[1] <= 1),
             "pass_rate_range must be [a, b] with 0 <= a <= b <= 1, e.g. [0.2, 0.8] (or null: off)"),
            (self.near_dup_threshold is None or 0 < self.near_dup_threshold <= 1,
             "near_dup_threshold must be in (0, 1] (or null: exact duplicates only)"),
            (all(b in HELD_OUT for b in self.decontaminate),
             f"decontaminate must list benchmarks from {', '.join(HELD_OUT)} (or be [] for none)"),
            (self.decontam_ngram >= 1, "decontam_ngram must be >= 1 (8 is usual)"),
            (self.verify_timeout > 0, "verify_timeout must be > 0 seconds"),
            (self.num_workers >= 0, "num_workers must be >= 0 (0 = all CPUs)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"curate.{msg}")

    @property
    def inp(self) -> Path:
        return Path(self.input_dir or Path(self.run_dir) / LAYOUT["traces"])

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path(self.run_dir) / LAYOUT["curated"])

    def enabled(self) -> list[str]:
        """The reject reasons whose filter is switched on, in filter order."""
        on = {"contaminated": bool(self.decontaminate), "duplicate_problem": self.dedup_problems,
              "pass_rate": self.pass_rate_range is not None, "unknown_tokens": True, "truncated": self.drop_truncated,
              "unclosed_think": self.require_format, "no_answer": self.require_format,
              "gold_unparseable": self.require_correct, "incorrect": self.require_correct,
              "too_short": self.min_tokens is not None,
              "too_long": self.max_tokens is not None, "repetition": self.max_repeat_ngram_share is not None,
              "language_mixing": self.max_foreign_script_share is not None,
              "duplicate_completion": self.dedup_completions, "over_max_per_problem": bool(self.max_per_problem)}
        return [r for r in REASONS if on[r]]


CLEAN_FINISHES = ("stop", "length")  # a completion that ended at eos/a stop string, or at max_new_tokens


def finish_reason_key(finish_reason: str | None) -> str:
    """The reject reason of a completion that ended neither cleanly nor at the length limit."""
    return "finish_" + (re.sub(r"[^a-z0-9]+", "_", str(finish_reason or "unknown").lower()).strip("_") or "unknown")


def _trace_reason(cfg: CurateConfig, row: dict) -> str | None:
    if row["completion_ids_unknown"]:
        return "unknown_tokens"
    if row["finish_reason"] not in CLEAN_FINISHES:
        return finish_reason_key(row["finish_reason"])
    if cfg.drop_truncated and row["finish_reason"] == "length":
        return "truncated"
    if cfg.require_format and row["unclosed_think"]:
        return "unclosed_think"
    if cfg.require_format and row["pred_answer"] is None:
        return "no_answer"
    if cfg.require_correct and not row["correct"]:
        # A gold answer the verifier cannot read says nothing about the trace: flag it, do not call it wrong.
        return "incorrect" if row["gold_ok"] else "gold_unparseable"
    if reason := filters.length_reason(row["num_tokens"], cfg.min_tokens, cfg.max_tokens):
        return reason
    if cfg.max_repeat_ngram_share is not None and row["repeat_share"] > cfg.max_repeat_ngram_share:
        return "repetition"
    if cfg.max_foreign_script_share is not None and row["foreign_share"] > cfg.max_foreign_script_share:
        return "language_mixing"
    return None


HELD_OUT = (*BENCHMARKS, "synthetic")  # what `decontaminate` may name


def _benchmark_index(cfg: CurateConfig) -> tuple[filters.NgramIndex, list[str]]:
    """N-gram index of the benchmarks to hold out, and the names of those that could not be loaded. Offline this
    costs one fast probe of the hub (`r1distill.hub`), not minutes of retries per benchmark."""
    items, skipped, why = [], [], {}
    for name in cfg.decontaminate:
        try:
            # `synthetic` means the whole frozen synthetic test set (every level).
            mixed = {"split": "test", "level": "mixed"} if name == "synthetic" else {}
            src = SourceConfig(name=name, **mixed)
            items += [(name, p["id"], p["problem"]) for p in load_problems(src, check_answers=False)]
        except UserError as e:
            skipped.append(name)
            why[name] = str(e)
    if skipped:
        offline = hub.offline_reason() if any("hub" in w for w in why.values()) else None
        reason = (f"no local file and the hub is unreachable ({offline}); set {BENCHMARKS_ENV} to a dir of "
                  "<name>_test.jsonl files" if offline else "; ".join(f"{n}: {w}" for n, w in why.items()))
        console.print(f"[yellow]warning[/]: not decontaminating against {', '.join(skipped)}: {reason}")
    return filters.ngram_index(items, cfg.decontam_ngram), skipped


def _problem_reasons(cfg: CurateConfig, rows: list[dict], problems: dict[str, str], stats: dict) -> dict[str, str]:
    """Reject reason per prompt_id for the problem filters (`problems`: prompt_id -> its text, in first-seen
    order); records contamination hits in `stats`."""
    reasons: dict[str, str] = {}
    hits: dict[str, set[str]] = defaultdict(set)
    if cfg.decontaminate:
        index, stats["decontamination_skipped"] = _benchmark_index(cfg)
        stats["decontamination_checked"] = [b for b in cfg.decontaminate if b not in stats["decontamination_skipped"]]
        for pid, text in problems.items():
            for bench, item_id in filters.contamination(text, index, cfg.decontam_ngram):
                reasons[pid] = "contaminated"
                hits[bench].add(item_id)
    stats["contamination"] = {b: sorted(ids) for b, ids in sorted(hits.items())}
    if cfg.dedup_problems:
        pids = [p for p in problems if p not in reasons]
        dups = filters.find_duplicates([problems[p] for p in pids], cfg.near_dup_threshold)
        reasons.update({pid: "duplicate_problem" for pid, d in zip(pids, dups) if d is not None})
    if cfg.pass_rate_range is not None:
        rates = filters.pass_rates((r["prompt_id"], r["correct"]) for r in rows)
        reasons.update({pid: "pass_rate" for pid, rate in rates.items()
                        if pid not in reasons and filters.outside(rate, cfg.pass_rate_range)})
    return reasons


def _select(cfg: CurateConfig, rows: list[dict], texts: "ShardTexts") -> None:
    """Cross-trace filters on the surviving rows: duplicate completions, then rejection sampling."""
    alive = [r for r in rows if r["reject_reason"] is None]
    if cfg.dedup_completions:
        dups = filters.find_duplicates(texts.subset([r["_row"] for r in alive]), cfg.near_dup_threshold)
        for row, d in zip(alive, dups):
            if d is not None:
                row["reject_reason"] = "duplicate_completion"
    if cfg.max_per_problem:
        rng = random.Random(cfg.seed)
        by_problem = defaultdict(list)
        for row in alive:
            if row["reject_reason"] is None:
                by_problem[row["prompt_id"]].append(row)
        for group in by_problem.values():
            if cfg.select == "shortest":
                group.sort(key=lambda r: (r["num_tokens"], r["sample_idx"]))
            else:
                rng.shuffle(group)
            for row in group[cfg.max_per_problem :]:
                row["reject_reason"] = "over_max_per_problem"


UNSTAMPED = ("overwrite", "num_workers", "run_dir", "input_dir", "output_dir")  # settings that change no output


def stamp(cfg: CurateConfig, shards: list) -> str:
    """The rerun stamp: the settings that change the output, and the input shards' content (not their path)."""
    return config_hash(cfg, rerun.fingerprint(shards), exclude=UNSTAMPED)


def run(cfg: CurateConfig) -> Path:
    t0 = time.time()
    shards = shard_paths(cfg.inp)
    if not shards:
        raise UserError(f"No Parquet shards in {cfg.inp}: run generate first (or set curate.input_dir)")
    for p in shards:  # every shard's footer, before anything is written
        schema = parquet_file(p).schema_arrow
        check_schema(schema.empty_table(), expected_schema(schema), str(p))
    counts = [parquet_file(p).metadata.num_rows for p in shards]
    total = sum(counts)
    out, done_stamp = cfg.out, stamp(cfg, shards)
    if rerun.claim(out, done_stamp, "curate", overwrite=cfg.overwrite, config=to_dict(cfg), ignore=UNSTAMPED) == "done":
        console.print(f"curate: {out} already holds this config's curation of these traces (stamp {done_stamp}); "
                      "nothing to do (curate.overwrite=true redoes it)")
        return out
    console.print(f"[bold]curate[/] {total} traces in {len(shards)} shards from {cfg.inp}")
    rows: list[dict] = []
    problems: dict[str, str] = {}
    tallies: Counter = Counter()
    with progress() as bar:
        task = bar.add_task("verify", total=total, info="")
        for p, start in zip(shards, np.cumsum([0, *counts[:-1]])):
            decide_shard(cfg, p, int(start), rows, problems, tallies, lambda k: bar.update(task, advance=k))
    extra: dict = {"gold_unparseable": tallies["gold_unparseable"], "verify_timeouts": tallies["verify_timeouts"]}
    problem_reason = _problem_reasons(cfg, rows, problems, extra)
    for row in rows:
        row["reject_reason"] = problem_reason.get(row["prompt_id"]) or _trace_reason(cfg, row)
    _select(cfg, rows, ShardTexts(shards, counts))
    kept_rows = [r for r in rows if r["reject_reason"] is None]
    work = out.with_name(out.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with open(work / layout.REJECTED, "w") as rejected, progress() as bar:
        task = bar.add_task("write", total=total, info="")
        for i, (p, start, n) in enumerate(zip(shards, np.cumsum([0, *counts[:-1]]), counts)):
            write_shard(p, work / f"data-{i:05d}.parquet", rows[start:start + n], rejected)
            bar.update(task, advance=n)
    stats = {**_stats(cfg, rows, kept_rows), **extra, "seconds": round(time.time() - t0, 2)}
    (work / layout.CURATE_STATS).write_text(json.dumps(stats, indent=1))
    (work / layout.CURATE_STATS_MD).write_text(funnel_markdown(stats))
    write_resolved(cfg, work, "curate")
    if kept_rows:
        rerun.finish(work, done_stamp)
    else:  # the funnel and every rejected row, for finding out why; not finished: a rerun curates again
        rerun.write_stamp(work, done_stamp, complete=False)
    if out.exists():  # claim() left nothing finished there: other results were moved aside
        shutil.rmtree(out)
    work.rename(out)
    if not kept_rows:
        raise UserError(f"curate kept no traces out of {len(rows)} ({_counts(rows)}): see "
                        f"{out / layout.CURATE_STATS_MD} for the funnel and {out / layout.REJECTED} for each trace's "
                        "pred_answer against its gold answer; a wrong gold format or a too tight filter shows there")
    console.print(f"curate: kept {stats['kept']}/{stats['total']} traces")
    return out


def _counts(rows: list[dict]) -> dict:
    return dict(Counter(r["reject_reason"] for r in rows if r["reject_reason"]))


def _stats(cfg: CurateConfig, rows: list[dict], kept: list[dict]) -> dict:
    counts = _counts(rows)
    rates = filters.pass_rates((r["prompt_id"], r["correct"]) for r in rows)
    left, funnel = len(rows), [{"step": "generated", "left": len(rows)}]
    unclean = sorted(r for r in counts if r.startswith("finish_"))  # filtered right after unknown_tokens
    steps = [x for r in cfg.enabled() for x in ([r, *unclean] if r == "unknown_tokens" else [r])]
    for reason in steps:
        left -= counts.get(reason, 0)
        funnel.append({"step": reason, "rejected": counts.get(reason, 0), "left": left})
    return {
        "total": len(rows),
        "kept": len(kept),
        "rejected": {k: counts.get(k, 0) for k in (*REASONS, *unclean)},
        "funnel": funnel,
        "correct": sum(r["correct"] for r in rows),
        "problems": len(rates),
        "problems_kept": len({r["prompt_id"] for r in kept}),
        "teacher_pass_rate": sum(rates.values()) / max(len(rates), 1),
        "pass_rate_histogram": filters.histogram(rates.values()),  # problems per tenth: [0, .1), ..., [.9, 1]
        "tokens_all": filters.distribution([r["num_tokens"] for r in rows]),
        "tokens_kept": filters.distribution([r["num_tokens"] for r in kept]),
    }
