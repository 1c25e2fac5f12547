"""Benchmark the import stage: speed and peak memory on synthetic rows in OpenR1-Math-220k's schema.

Why: `r1distill import` must read sets of a million rows in flat memory (DESIGN.md: no stage holds a dataset in
memory). This writes N rows with every column of open-r1/OpenR1-Math-220k's card (2-4 generations of ~60-200
tokens each, ~3% cut off), as Parquet (row groups of 1000 rows) and as JSONL, imports each in a fresh subprocess
and reports its peak RSS (the child's own ru_maxrss) and throughput, at each size given, as a Markdown table.
The peak RSS should grow only by the prompt_id -> count dict (one entry per distinct problem; here every row is
one).

    nice -n 10 .venv/bin/python scripts/bench_import.py --rows 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("the sum of two numbers is so we get then multiply both sides by divide subtract add square root triangle "
         "angle circle radius area perimeter equation solve for let denote integer prime factor remainder modulo "
         "wait check again this means that hence therefore consider case first second third next since because "
         "value of x y z n k m equals greater less than at most least").split()


def _pool(rng, n: int = 4000) -> list[str]:
    """Sentences of 6-14 words (~10-20 tokens), the bricks generations are built of."""
    lengths = rng.integers(6, 15, n)
    return [" ".join(WORDS[i] for i in rng.integers(0, len(WORDS), k)) + "." for k in lengths]


def _rows(start: int, count: int, rng, pool: list[str]):
    """Rows `start`.. in OpenR1-Math-220k's schema (default config: every column of its card)."""
    import numpy as np

    out = []
    for i in range(start, start + count):
        ans = str(int(rng.integers(1, 1000)))
        problem = f"Problem {i}: {pool[i % len(pool)]} Find the value of $x$ if $x + {i} = {i + int(ans)}$."
        n = int(rng.integers(2, 5))
        gens, finish, complete = [], [], []
        for _ in range(n):
            body = " ".join(pool[j] for j in rng.integers(0, len(pool), int(rng.integers(3, 12))))
            if rng.random() < 0.03:  # cut off inside the thought
                gens.append(f"<think>\n{body}")
                finish.append("length")
                complete.append(False)
            else:
                gens.append(f"<think>\n{body}\n</think>\n\nSo $x = {ans}$, and the answer is $\\boxed{{{ans}}}$.")
                finish.append("stop")
                complete.append(True)
        correct = [bool(c) for c in np.array(complete) & (rng.random(n) < 0.8)]
        out.append({
            "problem": problem, "solution": f"Subtracting {i}: $x = \\boxed{{{ans}}}$.", "answer": ans,
            "problem_type": "Algebra", "question_type": "math-word-problem", "source": "olympiads",
            "uuid": f"{i:08x}-bench", "is_reasoning_complete": complete, "generations": gens,
            "correctness_math_verify": correct, "correctness_llama": None, "finish_reasons": finish,
            "correctness_count": sum(correct),
            "messages": [{"content": problem, "role": "user"}, {"content": gens[0], "role": "assistant"}],
        })
    return out


def write_source(n: int, directory: Path) -> tuple[Path, Path]:
    """N rows as openr1-N.parquet and openr1-N.jsonl (written chunk by chunk: flat memory here too)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    pq_path, js_path = directory / f"openr1-{n}.parquet", directory / f"openr1-{n}.jsonl"
    if pq_path.exists() and js_path.exists():
        return pq_path, js_path
    rng = np.random.default_rng(0)
    pool = _pool(rng)
    schema = pa.schema([("problem", pa.string()), ("solution", pa.string()), ("answer", pa.string()),
                        ("problem_type", pa.string()), ("question_type", pa.string()), ("source", pa.string()),
                        ("uuid", pa.string()), ("is_reasoning_complete", pa.list_(pa.bool_())),
                        ("generations", pa.list_(pa.string())), ("correctness_math_verify", pa.list_(pa.bool_())),
                        ("correctness_llama", pa.list_(pa.bool_())), ("finish_reasons", pa.list_(pa.string())),
                        ("correctness_count", pa.int64()),
                        ("messages", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())])))])
    chunk = 10_000
    with pq.ParquetWriter(pq_path, schema, compression="snappy") as w, js_path.open("w") as js:
        for start in range(0, n, chunk):
            rows = _rows(start, min(chunk, n - start), rng, pool)
            w.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=1000)
            js.writelines(json.dumps(r) + "\n" for r in rows)
    return pq_path, js_path


def child(path: str, out: str, tokenizer: str) -> None:
    """One import in this (fresh) process; prints its numbers as one JSON line on stdout."""
    import resource

    from r1distill import ingest
    from r1distill.data.sources import TraceSourceConfig

    ingest.load(tokenizer)  # the fixed cost (libraries, tokenizer), to tell it from what grows with the rows
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.time()
    ingest.run(ingest.ImportConfig(source=TraceSourceConfig(path=path, format="openr1"), output_dir=out,
                                   tokenizer=tokenizer))
    wall = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    summary = json.loads((Path(out) / "summary.json").read_text())
    print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "wall": wall, "summary": summary}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--formats", nargs="+", default=["parquet", "jsonl"], choices=["parquet", "jsonl"])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/r1distill-bench-import"))
    ap.add_argument("--tokenizer", default="smollm2-135m-instruct")
    ap.add_argument("--keep", action="store_true", help="keep the source files and the imported shards")
    ap.add_argument("--child", nargs=2, metavar=("SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.tokenizer)
    lines = ["| source rows | file | file size | traces | tokens | check pass | total | source rows/s | traces/s "
             "| tokens/s | peak RSS (after load) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in args.rows:
        t0 = time.time()
        files = dict(zip(("parquet", "jsonl"), write_source(n, args.dir)))
        print(f"wrote {n} rows in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        for fmt in args.formats:
            out = args.dir / f"out-{n}-{fmt}"
            shutil.rmtree(out, ignore_errors=True)
            log = args.dir / f"import-{n}-{fmt}.log"
            with log.open("w") as err:
                proc = subprocess.run([sys.executable, __file__, "--child", str(files[fmt]), str(out),
                                       "--tokenizer", args.tokenizer], stdout=subprocess.PIPE, stderr=err, text=True)
            if proc.returncode:
                sys.exit(f"import of {files[fmt]} failed: see {log}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            s, wall = r["summary"], r["wall"]
            size = files[fmt].stat().st_size / 2**20
            lines.append(f"| {n:,} | {fmt} | {size:,.0f} MiB | {s['rows']:,} | {s['total_tokens']:,} "
                         f"| {s['scan_seconds']:.0f} s | {wall:.0f} s | {n / wall:,.0f} | {s['rows'] / wall:,.0f} "
                         f"| {s['total_tokens'] / wall:,.0f} | {r['peak_mb']:,.0f} MiB ({r['base_mb']:,.0f}) |")
            print(lines[-1], file=sys.stderr, flush=True)
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
        if not args.keep:
            for p in files.values():
                p.unlink()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
