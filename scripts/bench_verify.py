"""Verifier throughput: verdicts per second, one process vs all cores.

Each MATH-500 gold `solution` is graded as the prediction against its `answer`, so almost every verdict
should be correct and the work is the realistic mix of boxed LaTeX answers. Prints a Markdown table.

    python scripts/bench_verify.py [PATH] [--limit N] [--workers W] [--timeout S]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from r1distill import verify
from r1distill.data.problems import BENCHMARKS_ENV, read_file

DEFAULT = Path(os.environ.get(BENCHMARKS_ENV, Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))


def measure(texts: list[str], golds: list[str], workers: int, timeout: float) -> dict:
    """Grade every pair once with `workers` processes, pool start-up included."""
    t0 = time.perf_counter()
    verdicts = verify.verify_many(texts, golds, timeout=timeout, num_workers=workers)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rate": len(texts) / seconds, "correct": sum(v.correct for v in verdicts),
            "timeouts": sum(v.rule == "timeout" for v in verdicts)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", type=Path, default=DEFAULT / "math500_test.jsonl",
                    help="JSONL with solution and answer fields (default: the shared MATH-500 test set)")
    ap.add_argument("--limit", type=int, default=None, help="use the first N rows")
    ap.add_argument("--workers", type=int, default=0, help="processes for the parallel run (0 = all CPUs)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per Math-Verify call")
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    main()
