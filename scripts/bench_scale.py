"""The data path at scale: curate and train's token rows on trace dirs of growing size, under a memory watch.

Schema-exact synthetic trace dirs are built from real teacher rows: the built-in teacher generates a seed set
once (top-20 log-probs), and each synthetic completion (1-2k tokens) is a run of real token positions (their
ids and top-k rows as the teacher wrote them) drawn from it; the completion text is random words from the seed
texts ending in a boxed answer equal to the gold, so that curation keeps every row (and finds no duplicates).
Each size is then measured in its own process (so peaks do not mix):

- curate: `r1distill curate` on the dir (decontamination off: it needs the hub);
- train data: the token rows train reads, built from the curated dir (for the current code: the conversion to
  the memory-mapped cache, then one pass over every row through the collator, as a rank would in an epoch);
- with --baseline SRC (a checkout's src dir, e.g. of the commit before the streaming changes), the same two
  stages with that code, for the side-by-side comparison.

Memory: peak RSS (the kernel's high-water mark), and peak anonymous memory (`Anonymous` of
/proc/PID/smaps_rollup, sampled every 0.1 s): the memory-mapped cache's pages are file-backed page cache, which
every rank of a node maps once and shares (one process alone shows them as Private_Clean, which would count
them per rank), so the anonymous memory is what each rank adds of its own.

    python scripts/bench_scale.py [--sizes 0.25 1 3] [--work runs/bench_scale] [--baseline /tmp/old/src]
                                  [--baseline-max-gb 0.3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEED_PROBLEMS, SEED_SAMPLES, SEED_TOKENS, K = 48, 2, 256, 20
ROWS_PER_SHARD = 256


def seed_traces(work: Path) -> Path:
    """Real teacher rows: 48 easy synthetic problems x 2 samples, 256 new tokens, top-20 (generated once)."""
    out = work / "seed"
    if (out / "summary.json").exists():
        return out
    cmd = [sys.executable, "-m", "r1distill.cli", "generate", f"generate.output_dir={out}",
           f"generate.source={{name: synthetic, num_problems: {SEED_PROBLEMS}}}",
           f"generate.num_samples={SEED_SAMPLES}", f"generate.max_new_tokens={SEED_TOKENS}",
           f"generate.topk_logprobs={K}", "generate.temperature=0.8", "--overwrite"]
    subprocess.run(cmd, check=True, cwd=REPO)
    return out


def topk_bytes(directory: Path) -> int:
    """Compressed bytes of the top-k columns on disk, from the Parquet footers."""
    import pyarrow.parquet as pq

    total = 0
    for p in sorted(directory.glob("*.parquet")):
        md = pq.ParquetFile(p).metadata
        for g in range(md.num_row_groups):
            for c in range(md.num_columns):
                col = md.row_group(g).column(c)
                if col.path_in_schema.startswith(("topk_ids", "topk_logprobs", "topk_lp")):
                    total += col.total_compressed_size
    return total


def build_dir(seed: Path, out: Path, gb: float) -> dict:
    """A trace dir holding about `gb` GB of top-k on disk (measured after each shard), built from the seed."""
    from r1distill.data.traces import TRACE_SCHEMA, read_table, rows_to_table, write_table_atomic

    done = out / "built.json"
    if done.exists():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    t = read_table(seed)
    ids = np.concatenate([np.asarray(x, np.int32) for x in t["completion_ids"].to_pylist()])
    top_ids = np.concatenate([np.asarray(x, np.int32) for x in t["topk_ids"].to_pylist()])
    top_lp = np.concatenate([np.asarray(x, np.float16) for x in t["topk_logprobs"].to_pylist()])
    words = " ".join(t["completion"].to_pylist()).split()
    rng = np.random.default_rng(0)
    n_tok, shard, rows_total, target = len(ids), 0, 0, gb * 1e9
    tokens_total = 0
    while topk_bytes(out) < target:
        rows = []
        for _ in range(ROWS_PER_SHARD):
            i = rows_total
            length = int(rng.integers(1000, 2001))
            start = int(rng.integers(0, n_tok - length))  # a run of real positions
            sl = slice(start, start + length)
            answer = str(int(rng.integers(1, 10_000)))
            text = " ".join(rng.choice(words, size=length * 3 // 4)) + f" So the answer is $\\boxed{{{answer}}}$."
            rows.append({
                "prompt_id": f"p{i:08d}", "sample_idx": 0, "problem": f"Problem {i}: what is {answer}?",
                "answer": answer, "prompt": [{"role": "user", "content": f"Problem {i}: what is {answer}?"}],
                "completion": text, "reasoning": None, "completion_ids": ids[sl].tolist(),
                "topk_ids": top_ids[sl], "topk_logprobs": top_lp[sl], "finish_reason": "stop",
                "num_tokens": length, "teacher": "smollm2-135m-instruct", "gen_config_hash": "bench",
            })
            rows_total += 1
            tokens_total += length
        write_table_atomic(rows_to_table(rows, TRACE_SCHEMA), out / f"shard-{shard:05d}.parquet",
                           metadata={"r1distill.logprobs_kind": "raw"})
        shard += 1
    info = {"rows": rows_total, "tokens": tokens_total, "shards": shard, "topk_bytes": topk_bytes(out)}
    done.write_text(json.dumps(info))
    return info


def _smaps(pid: int) -> tuple[int, int]:
    """(RSS, anonymous) bytes of a live process."""
    rss = anon = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            kb = int(rest.split()[0]) * 1024 if rest.strip() and rest.split()[0].isdigit() else 0
            if key == "Rss":
                rss = kb
            elif key == "Anonymous":
                anon = kb
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return rss, anon


def watched(cmd: list[str], env: dict) -> dict:
    """Run `cmd`, sampling its memory every 0.1 s; peak RSS from wait4 (the kernel's own high-water mark)."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = {"anon": 0}

    def sample():
        while proc.poll() is None:
            peak["anon"] = max(peak["anon"], _smaps(proc.pid)[1])
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    th.join()
    err = proc.stderr.read().decode(errors="replace")
    return {"ok": proc.returncode == 0, "seconds": time.time() - t0, "peak_rss": usage.ru_maxrss * 1024,
            "peak_anon": peak["anon"], "error": "" if proc.returncode == 0 else err[-1500:]}


TRAIN_DATA_NEW = """
import sys, time
from r1distill.models import load_tokenizer
from r1distill.train import TrainConfig
from r1distill.train.collate import DistillCollator
from r1distill.train.data import TokenData, prepare_tokens
tok = load_tokenizer("smollm2-135m-instruct")
cfg = TrainConfig(input_dir=sys.argv[1], cache_dir=sys.argv[2])
rows = TokenData(prepare_tokens(cfg, tok, need_topk=True, retok=False), max_length=4096)
collate = DistillCollator(tok.pad_token_id, rows)
for s in range(0, len(rows), 8):  # one epoch of batches, as a rank's data loader reads them
    collate([{"idx": i} for i in range(s, min(s + 8, len(rows)))])
"""

TRAIN_DATA_OLD = """
import sys
from r1distill.models import load_tokenizer
from r1distill.train import load_table, _row_locator
from r1distill.train.collate import DistillCollator, build_features
from pathlib import Path
tok = load_tokenizer("smollm2-135m-instruct")
inp = Path(sys.argv[1])
feats = build_features(load_table(inp, True, "kd"), tok, 4096, True, _row_locator(inp))
collate = DistillCollator(tok.pad_token_id, feats)
for s in range(0, len(feats), 8):
    collate([{"idx": i} for i in range(s, min(s + 8, len(feats)))])
"""


def measure(code: str, src: Path | None, traces: Path, work: Path, gb: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src) if src else str(REPO / "src"), "OMP_NUM_THREADS": "2"}
    curated = work / f"curated-{gb}-{'old' if src else 'new'}"
    cur = watched([sys.executable, "-m", "r1distill.cli", "curate", f"curate.input_dir={traces}",
                   f"curate.output_dir={curated}", "curate.decontaminate=[]", "curate.num_workers=2"], env)
    res = {"curate": cur}
    if cur["ok"]:
        cache = work / f"cache-{gb}"
        subprocess.run(["rm", "-rf", str(cache)])
        res["train"] = watched([sys.executable, "-c", code, str(curated), str(cache)], env)
        subprocess.run(["rm", "-rf", str(cache)])
    subprocess.run(["rm", "-rf", str(curated)])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.25, 1.0, 3.0], help="GB of top-k on disk")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench_scale")
    ap.add_argument("--baseline", type=Path, help="src dir of another checkout to measure beside this one")
    ap.add_argument("--baseline-max-gb", type=float, default=0.3, help="sizes above this skip the baseline")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    seed = seed_traces(args.work)
    results = []
    for gb in args.sizes:
        traces = args.work / f"traces-{gb}GB"
        info = build_dir(seed, traces, gb)
        print(f"{gb} GB: {info}", flush=True)
        row = {"gb": gb, **info, "new": measure(TRAIN_DATA_NEW, None, traces, args.work, gb)}
        if args.baseline and gb <= args.baseline_max_gb:
            row["old"] = measure(TRAIN_DATA_OLD, args.baseline, traces, args.work, gb)
        results.append(row)
        print(json.dumps(row, indent=1), flush=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    gib = lambda b: f"{b / 2**30:.2f}"
    print("\n| top-k on disk | tokens | code | curate peak RSS GiB | curate s | curate µs/token | train data peak "
          "anonymous GiB | train data peak RSS GiB | train data s | train data µs/token |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for code in ("old", "new"):
            if code not in r:
                continue
            c, t = r[code]["curate"], r[code].get("train", {})
            tok = r["tokens"]
            cells = [f"{r['topk_bytes'] / 1e9:.2f} GB", f"{tok / 1e6:.1f}M", code,
                     gib(c["peak_rss"]) if c["ok"] else "failed", f"{c['seconds']:.0f}",
                     f"{c['seconds'] / tok * 1e6:.1f}",
                     gib(t["peak_anon"]) if t.get("ok") else "-", gib(t["peak_rss"]) if t.get("ok") else "-",
                     f"{t['seconds']:.0f}" if t.get("ok") else "-",
                     f"{t['seconds'] / tok * 1e6:.1f}" if t.get("ok") else "-"]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
