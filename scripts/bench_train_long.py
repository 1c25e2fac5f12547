"""Training tokens/s at long completions (1-2k tokens) against short ones (128), for the same student, in one run.

Both curated dirs are built from the same real teacher rows as scripts/bench_scale.py builds its trace dirs
(runs of real token positions with their top-20 rows), so only the completion length differs. The student is a
derived N-layer student of the built-in teacher; objective kd (alpha 0.5, top-20, chunked head), batch B rows,
fp32 (or --bf16) on CPU. Timed: `Trainer.train` for S steps after one warm-up step, alternating short and long
runs R times; completion tokens/s from our trainer's own count. Goal (issue 15): long >= 0.5 x short.

    python scripts/bench_train_long.py [--layers 1] [--batch 4] [--steps 3] [--repeats 2] [--bf16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_scale import seed_traces  # noqa: E402


def curated(seed: Path, out: Path, lengths: tuple[int, int], rows: int) -> Path:
    from r1distill.data.traces import CURATED_SCHEMA, read_table, rows_to_table, write_table_atomic

    if (out / "data-00000.parquet").exists():
        return out
    t = read_table(seed)
    ids = np.concatenate([np.asarray(x, np.int32) for x in t["completion_ids"].to_pylist()])
    top_ids = np.concatenate([np.asarray(x, np.int32) for x in t["topk_ids"].to_pylist()])
    top_lp = np.concatenate([np.asarray(x, np.float16) for x in t["topk_logprobs"].to_pylist()])
    rng = np.random.default_rng(1)
    out_rows = []
    for i in range(rows):
        n = int(rng.integers(lengths[0], lengths[1] + 1))
        s = int(rng.integers(0, len(ids) - n))
        out_rows.append({
            "prompt_id": f"p{i}", "sample_idx": 0, "problem": f"Problem {i}?", "answer": "1",
            "prompt": [{"role": "user", "content": f"Problem {i}: what is 1?"}], "completion": "",
            "reasoning": None, "completion_ids": ids[s:s + n].tolist(), "topk_ids": top_ids[s:s + n],
            "topk_logprobs": top_lp[s:s + n], "finish_reason": "stop", "num_tokens": n, "teacher": "bench",
            "gen_config_hash": "bench", "pred_answer": "1", "correct": True, "format_ok": True,
            "reject_reason": None,
        })
    write_table_atomic(rows_to_table(out_rows, CURATED_SCHEMA), out / "data-00000.parquet")
    return out


def tokens_per_s(work: Path, traces: Path, student: str, args, tag: str) -> float:
    from r1distill.models import StudentConfig
    from r1distill.train import LossConfig, TrainConfig, build_trainer

    cfg = TrainConfig(run_dir=str(work), student=StudentConfig(name=student), input_dir=str(traces),
                      output_dir=str(work / f"out-{tag}"), objective="kd", loss=LossConfig(alpha=0.5),
                      epochs=1.0, batch_size=args.batch, learning_rate=1e-4, warmup_ratio=0.0,
                      lr_scheduler="constant", report_to=[], max_length=2304, bf16=args.bf16,
                      cache_dir=str(work / "cache"), logging_steps=1)
    setup = build_trainer(cfg, student)
    trainer = setup.trainer
    trainer.args.max_steps = args.steps + 1
    t0 = time.perf_counter()
    trainer.train()
    # tokens/s of the logged steps after the first (warm-up) one, from the trainer's own per-window count
    logs = [r for r in trainer.state.log_history if "tokens_per_s" in r and "loss" in r]
    _ = time.perf_counter() - t0
    return statistics.median(r["tokens_per_s"] for r in logs[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench_train_long")
    args = ap.parse_args()
    from r1distill.models import derive_student, resolve_model

    args.work.mkdir(parents=True, exist_ok=True)
    seed = seed_traces(REPO / "runs" / "bench_scale")
    n = args.batch * (args.steps + 1)
    short = curated(seed, args.work / "short", (128, 128), n)
    long = curated(seed, args.work / "long", (1000, 2000), n)
    student = args.work / f"student-{args.layers}"
    if not (student / "config.json").exists():
        derive_student(resolve_model("smollm2-135m-instruct"), student, num_layers=args.layers)
    got = {"short": [], "long": []}
    for r in range(args.repeats):
        for tag, d in ((("short", short), ("long", long)) if r % 2 == 0 else (("long", long), ("short", short))):
            got[tag].append(tokens_per_s(args.work, d, str(student), args, f"{tag}{r}"))
            print(f"repeat {r} {tag}: {got[tag][-1]:.0f} completion tokens/s", flush=True)
    s, lg = statistics.median(got["short"]), statistics.median(got["long"])
    print(f"\n`python scripts/bench_train_long.py --layers {args.layers} --batch {args.batch} --steps {args.steps} "
          f"--repeats {args.repeats}{' --bf16' if args.bf16 else ''}`\n")
    print("| completions | rows/step | tokens/s (median) | runs |\n|---|---:|---:|---|")
    print(f"| 128 tokens | {args.batch} | {s:.0f} | {', '.join(f'{x:.0f}' for x in got['short'])} |")
    print(f"| 1-2k tokens | {args.batch} | {lg:.0f} | {', '.join(f'{x:.0f}' for x in got['long'])} |")
    print(f"\nlong / short: {lg / s:.2f}x (goal >= 0.5x)")


if __name__ == "__main__":
    main()
