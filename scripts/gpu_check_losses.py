"""CUDA check of the KD losses at R1-distillation scale: our chunked loss vs the naive full-logit loss (and
Liger-Kernel's fused distillation losses when `liger_kernel` is importable), bf16, one forward + backward.

For each teacher (its stored top-k: offline KD; a full-vocabulary teacher given as hidden states + head:
online KD) and method: peak CUDA memory above the inputs (torch.cuda.max_memory_allocated), the median step
time, the loss, and for ours the difference from the naive loss and gradient. Prints one JSON object.

    python scripts/gpu_check_losses.py                  # T=8192, V=152,064, H=1536 (a Qwen2.5-1.5B student)
    python scripts/gpu_check_losses.py --small          # a tiny self-check that also runs on CPU
    python scripts/gpu_check_losses.py --tokens 16384 --hidden 3584 --teacher-hidden 5120

Without CUDA (and without --small) it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from r1distill.train.losses import chunked_distill_loss, distill_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(args, device: torch.device, dtype: torch.dtype) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    T, V, H, Ht = args.tokens, args.vocab, args.hidden, args.teacher_hidden

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    labels = torch.randint(0, V, (1, T), generator=g)
    labels[:, : args.prompt] = -100
    lps, ids = torch.log_softmax(torch.randn(1, T, V // 64, generator=g) * 2, -1).topk(args.topk, dim=-1)
    return {
        "hidden": randn(1, T, H).requires_grad_(), "weight": randn(V, H, scale=H**-0.5).requires_grad_(),
        "labels": labels.to(device), "topk_ids": (ids * 64).to(device), "topk_logprobs": lps.to(device),
        "t_hidden": randn(1, T, Ht), "t_weight": randn(V, Ht, scale=Ht**-0.5),
    }


def _step(method: str, teacher: str, x: dict, args) -> tuple[float, torch.Tensor]:
    """One forward + backward; returns (loss, grad of hidden)."""
    kw = {"alpha": 0.5, "divergence": "jsd" if teacher == "full" else "forward_kl", "beta": 0.5}
    if teacher == "topk":
        kw.update(topk_ids=x["topk_ids"], topk_logprobs=x["topk_logprobs"])
    if method == "naive":
        if teacher == "full":
            with torch.no_grad():
                kw["teacher_logits"] = x["t_hidden"] @ x["t_weight"].T
        loss = distill_loss(x["hidden"] @ x["weight"].T, x["labels"], **kw)["loss"]
    elif method == "chunked":
        if teacher == "full":
            kw.update(teacher_hidden=x["t_hidden"], teacher_lm_head_weight=x["t_weight"])
        loss = chunked_distill_loss(x["hidden"], x["weight"], x["labels"], chunk_size=args.chunk_size, **kw)["loss"]
    else:
        loss = _liger(method, x)
    loss.backward()
    grad = x["hidden"].grad
    x["hidden"].grad = x["weight"].grad = None
    return loss.item(), grad


def _liger(method: str, x: dict) -> torch.Tensor:
    """Liger-Kernel's fused linear JSD (β = 0.5, symmetric, so its β convention does not matter), on the valid rows."""
    mask = x["labels"][0] != -100
    s_in, t_in, y = x["hidden"][0][mask], x["t_hidden"][0][mask], x["labels"][0][mask]
    if method == "liger_chunked":  # liger_kernel.chunked_loss: 0.5·CE + 0.5·JSD, like ours
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

        fn = LigerFusedLinearJSDLoss(weight_hard_loss=0.5, weight_soft_loss=0.5, beta=0.5)
        try:
            return fn(s_in, x["weight"], t_in, x["t_weight"], y)
        except TypeError:  # versions whose forward takes the biases positionally
            return fn(s_in, x["weight"], t_in, x["t_weight"], y, None, None)
    from liger_kernel.transformers import LigerFusedLinearJSD  # Triton kernel: JSD only (no CE term)

    return LigerFusedLinearJSD(jsd_beta=0.5)(s_in, x["weight"], t_in, x["t_weight"])


def measure(method: str, teacher: str, x: dict, args, device: torch.device) -> dict:
    try:
        loss, grad = _step(method, teacher, x, args)  # warm-up (Triton / torch.compile / allocator)
        del grad
        _sync(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            loss, grad = _step(method, teacher, x, args)
            _sync(device)
            times.append(time.perf_counter() - t0)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
        return {"peak_mb": peak, "seconds": statistics.median(times), "loss": loss, "grad": grad}
    except torch.OutOfMemoryError:
        return {"error": "out of memory"}
    except Exception as e:  # a Liger version with another API: report it, keep the other figures
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=152064)
    ap.add_argument("--hidden", type=int, default=1536, help="student hidden size")
    ap.add_argument("--teacher-hidden", type=int, default=1536, help="online teacher's hidden size")
    ap.add_argument("--topk", type=int, default=20)
    ap.add_argument("--prompt", type=int, default=256, help="leading positions with label -100")
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--small", action="store_true", help="T=512, V=8192, H=64: a quick self-check, CPU or GPU")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.small:
        args.tokens, args.vocab, args.hidden, args.teacher_hidden, args.prompt = 512, 8192, 64, 96, 32
        args.chunk_size, args.reps = 128, 1
    elif not cuda:
        print(json.dumps({"error": "CUDA is not available: this check needs a GPU (use --small for a CPU "
                                   "self-check, or scripts/bench_losses.py for the CPU benchmark)"}))
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, args.dtype)
    try:
        import liger_kernel  # noqa: F401

        liger = ["liger_chunked", "liger_triton"] if cuda else ["liger_chunked"]
        liger_note = "installed"
    except ImportError:
        liger, liger_note = [], "not installed"
    report = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
              "dtype": args.dtype, "tokens": args.tokens, "vocab": args.vocab, "hidden": args.hidden,
              "teacher_hidden": args.teacher_hidden, "topk": args.topk, "chunk_size": args.chunk_size,
              "liger_kernel": liger_note, "results": {}}
    x = _inputs(args, device, dtype)
    for teacher in ("topk", "full"):
        methods = ["naive", "chunked"] + (liger if teacher == "full" else [])
        res = {m: measure(m, teacher, x, args, device) for m in methods}
        naive = res["naive"]
        for m, r in res.items():
            if "error" in r or "error" in naive:
                continue
            if m != "naive" and naive.get("peak_mb"):
                r["memory_x_naive"] = round(r["peak_mb"] / naive["peak_mb"], 3)
            if m != "naive":
                r["time_x_naive"] = round(r["seconds"] / naive["seconds"], 3)
            if m == "chunked":
                r["loss_abs_diff"] = abs(r["loss"] - naive["loss"])
                g, gn = r["grad"].float(), naive["grad"].float()
                r["grad_rel_diff"] = ((g - gn).norm() / gn.norm()).item()
        for r in res.values():
            r.pop("grad", None)
        report["results"][teacher] = res
    print(json.dumps(report, indent=1))
    ok = all("error" not in report["results"][t][m] for t in ("topk", "full") for m in ("naive", "chunked"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
