"""GPU check of teacher generation: the hf backend in bf16 on CUDA, tokens/s with top-k capture off and on.

Built-in teacher, synthetic problems, `--prompts` x `--n` sequences of up to `--max-new-tokens` tokens at
`--batch-size`, temperature 0.6 with one seed, so both runs draw the same tokens (the top-k recorder
does not change the logits). One short warm-up call first. Prints one JSON object: tokens, seconds,
tokens/s and peak CUDA memory of each run, and the capture's cost.

    python scripts/gpu_check_generate.py                  # CUDA: 64 prompts x 4, 256 new tokens, batch 64
    python scripts/gpu_check_generate.py --device cpu --small   # a quick run anywhere, to check the script
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--small", action="store_true", help="4 prompts x 2, 16 new tokens, batch 8 (checks the script)")
    args = ap.parse_args()
    if args.small:
        args.prompts, args.n, args.max_new_tokens, args.batch_size = 4, 2, 16, 8
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    if cuda and not torch.cuda.is_available():
        print(f"gpu_check_generate: CUDA is not available (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda}); run on a GPU machine, or pass --device cpu --small to check the script",
              file=sys.stderr)
        return 2

    from r1distill.backends import SamplingConfig
    from r1distill.backends.hf import HFBackend
    from r1distill.data.problems import SourceConfig, load_problems
    from r1distill.prompts import r1_messages

    t0 = time.perf_counter()
    backend = HFBackend(args.model, dtype=args.dtype, device=args.device, batch_size=args.batch_size)
    load_s = time.perf_counter() - t0
    prompts = [r1_messages(p["problem"]) for p in load_problems(SourceConfig(num_problems=args.prompts))]
    backend.generate(prompts[:2], SamplingConfig(n=1, max_new_tokens=4, logprobs=args.k))  # warm-up

    def timed(k: int) -> dict:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        sampling = SamplingConfig(n=args.n, max_new_tokens=args.max_new_tokens, temperature=0.6, top_p=0.95,
                                  logprobs=k, seed=1234)
        start = time.perf_counter()
        outs = backend.generate(prompts, sampling)
        if cuda:
            torch.cuda.synchronize()
        secs = time.perf_counter() - start
        tokens = sum(len(c.token_ids) for cs in outs for c in cs)
        return {"tokens": tokens, "seconds": round(secs, 3), "tokens_per_s": round(tokens / secs, 1),
                "peak_cuda_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None}

    off, on = timed(0), timed(args.k)
    print(json.dumps({
        "model": args.model, "device": torch.cuda.get_device_name(0) if cuda else args.device,
        "dtype": str(backend.model.dtype), "torch": torch.__version__, "load_seconds": round(load_s, 2),
        "prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
        "topk_off": off, f"topk_{args.k}_on": on,
        "capture_cost": round(off["tokens_per_s"] / on["tokens_per_s"], 3),  # > 1: capture is slower
        "same_tokens": off["tokens"] == on["tokens"],
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
