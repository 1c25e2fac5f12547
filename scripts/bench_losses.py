"""KD loss from hidden states: peak memory and time of `chunked_distill_loss` vs the naive full-logit loss.

Forward + backward of α·CE + (1−α)·KD (α = 0.5, τ = 1, fp32, CPU, B = 1) with the student's LM head
(vocab × hidden), for two teachers: its stored top-k (offline KD, renormalised forward KL) and a
full-vocabulary teacher given as hidden states + head (forward KL). The naive loss builds the full
(T, V) student and teacher logits and calls `distill_loss`. Each variant runs in a fresh subprocess;
its peak memory is getrusage's max RSS minus the RSS just before the first step (inputs already built).
Prints a Markdown table.

With `--student MODEL` it measures one whole training step instead (forward, offline top-k KD loss,
backward; no optimizer) of that model on one sequence of T tokens: the chunked LM head inside the
patched forward (`add_distill_head`, as `r1distill train` runs it) vs the model's own full logits.

    python scripts/bench_losses.py [--tokens T] [--vocab V] [--hidden H] [--topk K] [--chunk-size N] [--reps R]
    python scripts/bench_losses.py --student smollm2-135m-instruct --tokens 2048
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time

import torch

from r1distill.train.losses import chunked_distill_loss, distill_loss

TEACHERS = {"topk": "top-{k} offline KD (renorm forward KL)", "full": "full-vocab forward KL",
            "step": "training step of {student}, top-{k} KD"}


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _timed(step, reps: int) -> dict:
    """Run `step` reps times after measuring the RSS baseline: peak MB above it, fastest step, last loss."""
    base = _rss_kb()
    seconds = []
    for _ in range(reps):
        t0 = time.perf_counter()
        loss = step()
        seconds.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    return {"peak_mb": peak / 1024, "seconds": min(seconds), "loss": loss}


def model_worker(args: argparse.Namespace) -> dict:
    """One training step of a real model (parameter gradients included, as in training) on one sequence."""
    from transformers import AutoModelForCausalLM

    from r1distill.models import resolve_model
    from r1distill.train.config import LossConfig
    from r1distill.train.head import add_distill_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(args.student), dtype=torch.float32).train()
    V, T = model.config.vocab_size, args.tokens
    add_distill_head(model, LossConfig(alpha=0.5, chunk_size=args.chunk_size), V)
    ids = torch.randint(100, V, (1, T))
    labels = ids.clone()
    labels[:, : args.prompt] = -100
    mask = torch.ones_like(ids)
    top_ids = torch.randint(0, V, (1, T, args.topk))
    top_lps = torch.log_softmax(torch.randn(1, T, args.topk) * 2, -1) + torch.log(torch.tensor(0.9))
    for p in model.parameters():  # allocate the parameter gradients before the baseline, as after step 1
        p.grad = torch.empty_like(p).fill_(0.0)  # written, so its pages count in the baseline RSS

    def step() -> float:
        if args.method == "chunked":
            out = model(input_ids=ids, attention_mask=mask,
                        distill={"labels": labels, "topk_ids": top_ids, "topk_logprobs": top_lps})
        else:
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
            out = distill_loss(logits, labels[:, 1:], top_ids[:, 1:], top_lps[:, 1:], alpha=0.5)
        out["loss"].backward()
        return out["loss"].item()

    return _timed(step, args.reps)


def worker(args: argparse.Namespace) -> dict:
    """Build the inputs, then run args.reps forward+backward steps of one variant: (peak MB, fastest step)."""
    if args.teacher == "step":
        return model_worker(args)
    torch.manual_seed(0)
    T, V, H = args.tokens, args.vocab, args.hidden
    hidden = torch.randn(1, T, H, requires_grad=True)
    weight = torch.randn(V, H).mul_(H**-0.5).requires_grad_()  # in place: no setup peak above the baseline
    labels = torch.randint(0, V, (1, T))
    labels[:, : args.prompt] = -100  # the prompt carries no loss
    kd: dict = {}
    if args.teacher == "topk":
        # The teacher's top-k hold 90% of its mass.
        lps = torch.log_softmax(torch.randn(1, T, args.topk) * 2, -1) + torch.log(torch.tensor(0.9))
        kd = {"topk_ids": torch.randint(0, V, (1, T, args.topk)), "topk_logprobs": lps}
    else:
        t_hidden, t_weight = torch.randn(1, T, H), torch.randn(V, H).mul_(H**-0.5)

    def step() -> float:
        if args.method == "naive":
            if args.teacher == "full":
                with torch.no_grad():
                    kd["teacher_logits"] = t_hidden @ t_weight.T
            out = distill_loss(hidden @ weight.T, labels, alpha=0.5, **kd)
        else:
            if args.teacher == "full":
                kd.update(teacher_hidden=t_hidden, teacher_lm_head_weight=t_weight)
            out = chunked_distill_loss(hidden, weight, labels, alpha=0.5, chunk_size=args.chunk_size, **kd)
        out["loss"].backward()
        kd.pop("teacher_logits", None)
        hidden.grad = weight.grad = None
        return out["loss"].item()

    return _timed(step, args.reps)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096, help="sequence length T (B = 1)")
    ap.add_argument("--vocab", type=int, default=49152, help="vocabulary size V")
    ap.add_argument("--hidden", type=int, default=576, help="hidden size H (student and teacher)")
    ap.add_argument("--topk", type=int, default=20, help="stored teacher log-probs per position")
    ap.add_argument("--prompt", type=int, default=256, help="leading positions with label -100")
    ap.add_argument("--chunk-size", type=int, default=256, help="valid tokens per chunk")
    ap.add_argument("--reps", type=int, default=1, help="steps per variant; the fastest is reported (each variant "
                    "starts in a fresh process, so the first step is equally cold for both)")
    ap.add_argument("--student", help="a model name or path: benchmark its whole training step instead")
    ap.add_argument("--teachers", default="topk,full", help="comma-separated subset of: " + ", ".join(TEACHERS))
    ap.add_argument("--worker", nargs=2, metavar=("TEACHER", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.teacher, args.method = args.worker
        print(json.dumps(worker(args)))
        return
    passthrough = list(sys.argv[1:] if argv is None else argv)
    shape = f"V={args.vocab}, H={args.hidden}" if not args.student else f"model {args.student}"
    print(f"`{shlex.join(['python', 'scripts/bench_losses.py', *passthrough])}` (T={args.tokens}, {shape}, "
          f"k={args.topk}, chunk={args.chunk_size}, fp32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)\n")
    print("| teacher | loss | peak MB | s / step | memory × naive | time × naive | loss value |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for teacher in ["step"] if args.student else args.teachers.split(","):
        res = {}
        for method in ("naive", "chunked"):
            cmd = [sys.executable, __file__, *passthrough, "--worker", teacher, method]
            res[method] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        name = TEACHERS[teacher].format(k=args.topk, student=args.student)
        for method, r in res.items():
            print(f"| {name} | {method} | {r['peak_mb']:.0f} | {r['seconds']:.2f} | "
                  f"{r['peak_mb'] / res['naive']['peak_mb']:.2f} | {r['seconds'] / res['naive']['seconds']:.2f} | "
                  f"{r['loss']:.5f} |")
    print("\nGoal: chunked ≤ 0.25× the naive peak memory at ≤ 1.2× its time.")


if __name__ == "__main__":
    main()
