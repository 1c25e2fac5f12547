"""Verifier benchmarks: throughput (one process vs all cores) and agreement on gold/prediction pairs.

Throughput: each MATH-500 gold `solution` is graded as the prediction against its `answer`, so almost every
verdict should be correct and the work is the realistic mix of boxed LaTeX answers. Prints a Markdown table.

    python scripts/bench_verify.py [PATH] [--limit N] [--workers W] [--timeout S]

Agreement (``--pairs``): a JSONL of ``{"gold", "pred", "expected", "kind", "source"}`` pairs (default
tests/data/verify_freeform.jsonl). Prints how often `verify_answer(pred, gold)` and plain Math-Verify
(`verify(parse(gold), parse(pred))`, default configs) agree with `expected`, per kind, and every pair where
either one disagrees. "Math-Verify, gold in $...$" wraps the gold in `$...$` first, a stronger baseline for
golds written as bare LaTeX (plain Math-Verify finds nothing in "\\sqrt{5}" or "(3,4]").

    python scripts/bench_verify.py --pairs [PAIRS.jsonl] [--workers W] [--timeout S] [--quiet]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

from math_verify import parse
from math_verify import verify as mv_verify

from r1distill import verify
from r1distill.data.problems import BENCHMARKS_ENV, read_file

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = Path(os.environ.get(BENCHMARKS_ENV, ROOT.parent / "shared" / "benchmarks"))
DEFAULT_PAIRS = ROOT / "tests" / "data" / "verify_freeform.jsonl"


def measure(texts: list[str], golds: list[str], workers: int, timeout: float) -> dict:
    """Grade every pair once with `workers` processes, pool start-up included."""
    t0 = time.perf_counter()
    verdicts = verify.verify_many(texts, golds, timeout=timeout, num_workers=workers)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rate": len(texts) / seconds, "correct": sum(v.correct for v in verdicts),
            "timeouts": sum(v.rule == "timeout" for v in verdicts)}


def throughput(args: argparse.Namespace) -> None:
    rows = read_file(args.path)[: args.limit]
    texts, golds = [r["solution"] for r in rows], [r["answer"] for r in rows]
    workers = args.workers or os.cpu_count() or 1
    print(f"`{shlex.join(['python', *sys.argv])}` ({len(rows)} rows of {args.path.name}, {os.cpu_count()} CPUs)\n")
    print("| run | processes | rows | seconds | verdicts/s | correct | timeouts |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    # All cores first: forked workers inherit this process's caches (parses, sympy, the LaTeX parser) but
    # warm only their own, so both runs start cold.
    for name, w in (("all cores", workers), ("single process", 1)):
        m = measure(texts, golds, w, args.timeout)
        print(f"| {name} | {w} | {len(rows)} | {m['seconds']:.2f} | {m['rate']:.0f} | {m['correct']} | "
              f"{m['timeouts']} |")


# ------------------------------------------------------------------------------------------------ agreement


def load_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def math_verify_plain(gold: str, pred: str) -> bool:
    """Plain Math-Verify, as its README shows it: default extraction configs and time limits."""
    try:
        return bool(mv_verify(parse(gold), parse(pred)))
    except Exception:  # noqa: BLE001 - count a crash as a wrong verdict, like a grader would
        return False


def math_verify_gold_in_dollars(gold: str, pred: str) -> bool:
    try:
        return bool(mv_verify(parse(f"${gold}$"), parse(pred)))
    except Exception:  # noqa: BLE001
        return False


def agreement(args: argparse.Namespace) -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    pairs = load_pairs(args.pairs)
    t0 = time.perf_counter()
    ours = [v.correct for v in verify.verify_many([p["pred"] for p in pairs], [p["gold"] for p in pairs],
                                                   timeout=args.timeout, num_workers=args.workers)]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = [math_verify_plain(p["gold"], p["pred"]) for p in pairs]
    t_plain = time.perf_counter() - t0
    dollars = [math_verify_gold_in_dollars(p["gold"], p["pred"]) for p in pairs]
    graders = {"verify_answer": ours, "Math-Verify": plain, "Math-Verify, gold in $...$": dollars}
    n, n_true = len(pairs), sum(p["expected"] for p in pairs)
    print(f"`{shlex.join(['python', *sys.argv])}`: {n} pairs ({n_true} expected true, {n - n_true} false) "
          f"from {args.pairs.name}; verify_answer {t_ours:.1f} s, Math-Verify {t_plain:.1f} s\n")
    print("| grader | agree | rate | false accepts | false rejects |")
    print("|---|---:|---:|---:|---:|")
    for name, got in graders.items():
        agree = sum(g == p["expected"] for g, p in zip(got, pairs))
        fa = sum(g and not p["expected"] for g, p in zip(got, pairs))
        fr = sum(p["expected"] and not g for g, p in zip(got, pairs))
        print(f"| {name} | {agree}/{n} | {agree / n:.1%} | {fa} | {fr} |")
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        by_kind[p["kind"]].append(i)
    print("\n| kind | pairs | verify_answer | Math-Verify | Math-Verify, gold in $...$ |")
    print("|---|---:|---:|---:|---:|")
    for kind in sorted(by_kind):
        idx = by_kind[kind]
        cells = [f"{sum(got[i] == pairs[i]['expected'] for i in idx)}/{len(idx)}" for got in graders.values()]
        print(f"| {kind} | {len(idx)} | " + " | ".join(cells) + " |")
    if args.quiet:
        return
    print("\nDisagreements with `expected` (ours = verify_answer, mv = plain Math-Verify):\n")
    for i, p in enumerate(pairs):
        if ours[i] != p["expected"] or plain[i] != p["expected"]:
            v = verify.verify_answer(p["pred"], p["gold"], timeout=args.timeout)
            tail = p["pred"][-90:].replace("\n", "\\n")
            print(f"- [{p['kind']}] expected={p['expected']} ours={ours[i]} mv={plain[i]} gold={p['gold']!r} "
                  f"ours_read={v.pred_answer!r} ({v.rule}) pred=...{tail!r}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", type=Path, default=DEFAULT / "math500_test.jsonl",
                    help="JSONL with solution and answer fields (default: the shared MATH-500 test set)")
    ap.add_argument("--limit", type=int, default=None, help="use the first N rows")
    ap.add_argument("--workers", type=int, default=0, help="processes for the parallel run (0 = all CPUs)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per Math-Verify call")
    ap.add_argument("--pairs", type=Path, nargs="?", const=DEFAULT_PAIRS, default=None,
                    help=f"measure agreement on gold/prediction pairs instead (default {DEFAULT_PAIRS.name})")
    ap.add_argument("--quiet", action="store_true", help="with --pairs: tables only, no disagreement list")
    args = ap.parse_args(argv)
    if args.pairs is not None:
        agreement(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
