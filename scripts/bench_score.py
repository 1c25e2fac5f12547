"""Scoring existing tokens against generating them: the same teacher, the same tokens, side by side in one run.

For each backend (`--backends hf vllm`): the teacher generates `--prompts` synthetic problems x `--samples` samples in
the R1 prompt at temperature 0.7 with top-`--k` capture (`--max-new-tokens`; the built-in teacher rambles to the
limit, as long reasoning traces do), then scores exactly those (prompt, completion) tokens with `score` (the score
stage's call: a forward pass, top-k per position). Each is timed `--repeats` times, alternating; tokens/s counts
completion tokens (median), model load and engine start left out. Also the largest |log-prob difference| between
the top-k the generation stored and the one scoring gave (fp32 on a CPU here: agreement to float rounding).

    python scripts/bench_score.py [--model smollm2-135m-instruct] [--backends hf vllm] [--prompts 16] [--samples 2]
                                  [--max-new-tokens 256] [--k 20] [--batch-size 32] [--score-batch-size 8]
                                  [--repeats 2] [--dtype auto]
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import numpy as np

from r1distill.backends import SamplingConfig, close, get_backend
from r1distill.data.problems import SourceConfig, load_problems
from r1distill.prompts import r1_messages, render_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--backends", nargs="+", default=["hf", "vllm"])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32, help="hf generate batch")
    ap.add_argument("--score-batch-size", type=int, default=8, help="hf score batch (score.batch_size)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    prompts = [r1_messages(p["problem"]) for p in load_problems(SourceConfig(num_problems=args.prompts))]
    sampling = SamplingConfig(n=args.samples, max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95,
                              logprobs=args.k, seed=0)
    rows = []
    for name in args.backends:
        t0 = time.perf_counter()
        backend = get_backend(name, args.model, dtype=args.dtype, batch_size=args.batch_size)
        start = time.perf_counter() - t0
        try:
            warm = backend.generate(prompts[:2], SamplingConfig(n=1, max_new_tokens=8, logprobs=args.k))  # warm-up
            backend.score([(render_prompt(backend.tokenizer, m), cs[0].token_ids)
                           for m, cs in zip(prompts, warm)], args.k)
            gen_s, score_s = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                outs = backend.generate(prompts, sampling)
                gen_s.append(time.perf_counter() - t0)
                inputs = [(render_prompt(backend.tokenizer, m), c.token_ids)
                          for m, cs in zip(prompts, outs) for c in cs]
                if name == "hf":
                    backend.batch_size = args.score_batch_size
                t0 = time.perf_counter()
                scored = backend.score(inputs, args.k)
                score_s.append(time.perf_counter() - t0)
                if name == "hf":
                    backend.batch_size = args.batch_size
            tokens = sum(len(c) for _, c in inputs)
            gens = [c for cs in outs for c in cs]
            diff = max(float(np.abs(np.sort(g.topk_logprobs, -1) - np.sort(s.topk_logprobs, -1)).max())
                       for g, s in zip(gens, scored) if len(g.token_ids))
            g, s = statistics.median(gen_s), statistics.median(score_s)
            rows.append((name, start, tokens, tokens / g, tokens / s, g / s, diff))
            print(f"{name}: start {start:.1f}s, {tokens} tokens, generate {gen_s}, score {score_s}", file=sys.stderr)
        finally:
            close(backend)
    print(f"`python scripts/bench_score.py {shlex.join(sys.argv[1:])}`: {args.prompts} problems x {args.samples} "
          f"samples, R1 prompt, temperature 0.7, top-{args.k}, max_new_tokens {args.max_new_tokens}; median of "
          f"{args.repeats}\n")
    print("| backend | start-up s | completion tokens | generate tok/s | score tok/s | score / generate | "
          "max abs top-k log-prob diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, start, tokens, gtps, stps, ratio, diff in rows:
        print(f"| {name} | {start:.1f} | {tokens} | {gtps:.0f} | {stps:.0f} | {ratio:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
