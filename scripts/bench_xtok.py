"""Cross-tokenizer KD against same-tokenizer KD: step time and peak memory side by side in one run, and the extra
bytes per token of the trace columns cross-tokenizer KD reads.

Data: the built-in teacher's own traces (synthetic easy problems, top-20, sampled at 0.8), curated with every
filter off. Variants, each one process (so each peak is its own), run alternately R times:
  same       kd, today's path: an N-layer student derived from the teacher (its tokenizer), stored top-20;
  xtok-same  the same student through the cross-tokenizer path (train.xtok: gold + ALM): byte groups, merge,
             sorted L1 and the two-pass head, all on one tokenizer, so the ratio to `same` is the machinery's cost;
  xtok-bpe   the same layers with another tokenizer (a byte-level BPE trained here on the synthetic problems,
             digits in groups of up to three; its 700-token head is much smaller than the teacher's 49k, so
             this row is cheaper for that reason, not because of the loss).
Timed: optimizer steps after the first (warm-up) one, median; peak: the process's peak RSS during
`Trainer.train` (VmHWM after resetting it through /proc/self/clear_refs; Linux), and over the whole process.

    python scripts/bench_xtok.py [--layers 4] [--batch 8] [--steps 4] [--repeats 2] [--problems 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("same", "xtok-same", "xtok-bpe")
def prepare(work: Path, args) -> dict:
    """Traces, curated traces and the two students (made once under `work`)."""
    from r1distill import curate, generate
    from r1distill.data.problems import SourceConfig
    from r1distill.data.toy_tokenizer import train_bpe_tokenizer
    from r1distill.models import derive_student, resolve_model

    if not (work / "curated" / "stats.json").exists():
        generate.run(generate.GenerateConfig(output_dir=str(work / "traces"), num_samples=2,
                                             max_new_tokens=args.max_new_tokens, temperature=0.8, topk_logprobs=20,
                                             source=SourceConfig(name="synthetic", num_problems=args.problems),
                                             batch_size=16))
        curate.run(curate.CurateConfig(run_dir=str(work), require_correct=False, drop_truncated=False,
                                       require_format=False, decontaminate=[], dedup_completions=False,
                                       max_repeat_ngram_share=None, max_foreign_script_share=None, num_workers=1))
    teacher = resolve_model("smollm2-135m-instruct")
    same, bpe = work / f"student-{args.layers}", work / f"student-{args.layers}-bpe"
    if not (same / "config.json").exists():
        derive_student(teacher, same, num_layers=args.layers)
    if not (bpe / "config.json").exists():
        derive_student(teacher, bpe, num_layers=args.layers, tokenizer=str(train_bpe_tokenizer(work / "bpe")))
    return {"traces": work / "traces", "curated": work / "curated", "same": same, "bpe": bpe}


def column_bytes(directory: Path) -> dict[str, int]:
    """Compressed bytes on disk per top-level column, from the Parquet footers."""
    import pyarrow.parquet as pq

    out: dict[str, int] = {}
    for p in sorted(directory.glob("*.parquet")):
        md = pq.ParquetFile(p).metadata
        for g in range(md.num_row_groups):
            for c in range(md.num_columns):
                col = md.row_group(g).column(c)
                name = col.path_in_schema.split(".")[0]
                out[name] = out.get(name, 0) + col.total_compressed_size
    return out


def child(args) -> None:
    """One variant's training run; prints one JSON line."""
    from transformers import TrainerCallback

    from r1distill.models import StudentConfig
    from r1distill.train import LossConfig, TrainConfig, XtokOptions, build_trainer

    work = args.work
    student = work / (f"student-{args.layers}" + ("-bpe" if args.child == "xtok-bpe" else ""))
    xtok = XtokOptions(method="gold", alm_weight=0.5) if args.child != "same" else None
    cfg = TrainConfig(run_dir=str(work), student=StudentConfig(name=str(student)), teacher="smollm2-135m-instruct",
                      input_dir=str(work / "curated"), output_dir=str(work / f"out-{args.child}"), objective="kd",
                      loss=LossConfig(alpha=0.5), xtok=xtok, epochs=100.0, batch_size=args.batch,
                      learning_rate=1e-4, warmup_ratio=0.0, lr_scheduler="constant", report_to=[],
                      max_length=args.max_length, bf16=False, cache_dir=str(work / "cache"), logging_steps=1)
    trainer = build_trainer(cfg, str(student)).trainer
    trainer.args.max_steps = args.steps + 1
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **kw):
            times.append(time.perf_counter())

    trainer.add_callback(Clock())
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    t0 = time.perf_counter()
    trainer.train()
    hwm = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM"))
    import resource

    steps = [b - a for a, b in zip([t0, *times], times)][1:]
    logs = [h for h in trainer.state.log_history if "kd" in h]
    print("RESULT " + json.dumps({"variant": args.child, "step_s": statistics.median(steps), "train_peak": hwm,
                                  "proc_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                                  "kd_first": logs[0]["kd"], "kd_last": logs[-1]["kd"],
                                  "tokens": trainer._tokens_seen / len(times)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench_xtok")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    args.work.mkdir(parents=True, exist_ok=True)
    paths = prepare(args.work, args)

    import pyarrow.parquet as pq

    from r1distill.data.traces import shard_paths

    tokens = sum(sum(pq.read_table(p, columns=["num_tokens"])["num_tokens"].to_pylist())
                 for p in shard_paths(paths["traces"]))
    sizes = column_bytes(paths["traces"])
    got: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    base = [sys.executable, __file__, "--work", str(args.work), "--layers", str(args.layers), "--batch",
            str(args.batch), "--steps", str(args.steps), "--max-length", str(args.max_length)]
    for r in range(args.repeats):
        for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            out = subprocess.run([*base, "--child", v], check=True, capture_output=True, text=True, cwd=REPO).stdout
            res = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
            got[v].append(res)
            print(f"repeat {r} {v}: {res['step_s']:.2f} s/step, train peak {res['train_peak'] / 2**30:.2f} GiB, "
                  f"kd {res['kd_first']:.3f} -> {res['kd_last']:.3f}", flush=True)
    med = {v: {k: statistics.median(x[k] for x in got[v]) for k in ("step_s", "train_peak", "proc_peak", "tokens")}
           for v in VARIANTS}
    print(f"\n`python scripts/bench_xtok.py --layers {args.layers} --batch {args.batch} --steps {args.steps} "
          f"--repeats {args.repeats} --problems {args.problems}`\n")
    print("| variant | s/step (median) | runs | peak RSS in train, GiB | process peak, GiB | completion tokens/step |")
    print("|---|---:|---|---:|---:|---:|")
    for v in VARIANTS:
        runs = ", ".join(f"{x['step_s']:.2f}" for x in got[v])
        print(f"| {v} | {med[v]['step_s']:.2f} | {runs} | "
              f"{med[v]['train_peak'] / 2**30:.2f} | {med[v]['proc_peak'] / 2**30:.2f} | {med[v]['tokens']:.0f} |")
    for v in VARIANTS[1:]:
        print(f"\n{v} / same: step time {med[v]['step_s'] / med['same']['step_s']:.2f}x, train peak "
              f"{med[v]['train_peak'] / med['same']['train_peak']:.2f}x")
    print(f"\nTrace columns on disk ({tokens} teacher tokens, Parquet zstd), bytes per token:")
    for name in ("token_nbytes", "token_logprobs", "token_bytes_ok", "completion_ids", "topk_ids", "topk_logprobs"):
        if name in sizes:
            print(f"- {name}: {sizes[name] / tokens:.2f}")
    extra = sum(sizes.get(n, 0) for n in ("token_nbytes", "token_logprobs", "token_bytes_ok"))
    topk = sum(sizes.get(n, 0) for n in ("topk_ids", "topk_logprobs"))
    print(f"- new columns together: {extra / tokens:.2f} B/token ({100 * extra / topk:.1f}% of the top-20's "
          f"{topk / tokens:.1f})")


if __name__ == "__main__":
    main()
