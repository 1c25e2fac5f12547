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
A large student vocabulary (`--variants sft-262k,xtok-262k`): the same layers with Qwen3.5/3.6's published
248k-token byte-level BPE (data.real_tokenizers "qwen3.6", embeddings by vocabulary transfer), its embedding
matrix (tied head) padded to 262,144 rows, Gemma-3's size, so the model's vocabulary exceeds len(tokenizer):
  sft-262k        objective sft, retokenize: true: CE on the completion text in the student's tokens;
  xtok-262k       kd through train.xtok (gold + ALM 0.5), as xtok-same;
  xtok-262k-full  xtok-262k on the model's full logits (chunk_size 0), for the memory of the unchunked path.
Timed: optimizer steps after the first (warm-up) one, median; peak: the process's peak RSS during
`Trainer.train` (VmHWM after resetting it through /proc/self/clear_refs; Linux), and over the whole process.

    python scripts/bench_xtok.py [--layers 4] [--batch 8] [--steps 4] [--repeats 2] [--problems 16]
                                 [--variants same,xtok-same,xtok-bpe] [--chunk-size 1024]
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
VARIANTS = ("same", "xtok-same", "xtok-bpe", "sft-262k", "xtok-262k", "xtok-262k-full")
DEFAULT_VARIANTS = ("same", "xtok-same", "xtok-bpe")
PADDED_VOCAB = 262_144  # Gemma-3's vocabulary


def student_dir(work: Path, layers: int, variant: str) -> Path:
    if variant == "xtok-bpe":
        return work / f"student-{layers}-bpe"
    if variant.endswith("-262k") or variant.endswith("-262k-full"):
        return work / f"student-{layers}-262k"
    return work / f"student-{layers}"


def derive_262k(teacher: str, out: Path, layers: int) -> None:
    """The teacher's first layers with Qwen3.6's tokenizer, its vocabulary padded to PADDED_VOCAB rows."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1distill.data.real_tokenizers import cached
    from r1distill.models import derive_student

    tmp = out.with_name(out.name + ".unpadded")
    derive_student(teacher, tmp, num_layers=layers, tokenizer=str(cached("qwen3.6")))
    model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(tmp)
    before = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(PADDED_VOCAB, mean_resizing=False)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] == head.shape[0] == model.config.vocab_size == PADDED_VOCAB, (emb.shape, head.shape)
    assert (emb.data_ptr() == head.data_ptr()) == bool(model.config.tie_word_embeddings)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    shutil.rmtree(tmp)
    print(f"student {out.name}: len(tokenizer) {len(tok)}, embedding rows {before} -> {PADDED_VOCAB} "
          f"(tied head: {model.config.tie_word_embeddings})", flush=True)


def prepare(work: Path, args, variants) -> dict:
    """Traces, curated traces and the students the variants need (made once under `work`)."""
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
    for d in {student_dir(work, args.layers, v) for v in variants}:
        if (d / "config.json").exists():
            continue
        if d.name.endswith("-bpe"):
            derive_student(teacher, d, num_layers=args.layers, tokenizer=str(train_bpe_tokenizer(work / "bpe")))
        elif d.name.endswith("-262k"):
            derive_262k(teacher, d, args.layers)
        else:
            derive_student(teacher, d, num_layers=args.layers)
    return {"traces": work / "traces", "curated": work / "curated"}


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

    work, v = args.work, args.child
    student = student_dir(work, args.layers, v)
    sft = v.startswith("sft")
    xtok = XtokOptions(method="gold", alm_weight=0.5) if v.startswith("xtok") else None
    chunk = 0 if v.endswith("-full") else args.chunk_size
    cfg = TrainConfig(run_dir=str(work), student=StudentConfig(name=str(student)), teacher="smollm2-135m-instruct",
                      input_dir=str(work / "curated"), output_dir=str(work / f"out-{v}"),
                      objective="sft" if sft else "kd", retokenize=True if sft else None,
                      loss=LossConfig(alpha=0.5, chunk_size=chunk), xtok=xtok, epochs=100.0, batch_size=args.batch,
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
    key = "ce" if sft else "kd"
    print("RESULT " + json.dumps({"variant": v, "step_s": statistics.median(steps), "steps": steps,
                                  "train_peak": hwm,
                                  "proc_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                                  "term": key, "first": logs[0][key], "last": logs[-1][key],
                                  "vocab": int(trainer.vocab_size or 0),
                                  "rows": int(trainer.model.get_output_embeddings().weight.shape[0]),
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
    ap.add_argument("--chunk-size", type=int, default=1024, help="train.loss.chunk_size (the -full variant: 0)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench_xtok")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if not variants or set(variants) - set(VARIANTS):
        ap.error(f"--variants: choose from {', '.join(VARIANTS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    paths = prepare(args.work, args, variants)

    import pyarrow.parquet as pq

    from r1distill.data.traces import shard_paths

    tokens = sum(sum(pq.read_table(p, columns=["num_tokens"])["num_tokens"].to_pylist())
                 for p in shard_paths(paths["traces"]))
    sizes = column_bytes(paths["traces"])
    got: dict[str, list[dict]] = {v: [] for v in variants}
    base = [sys.executable, __file__, "--work", str(args.work), "--layers", str(args.layers), "--batch",
            str(args.batch), "--steps", str(args.steps), "--max-length", str(args.max_length), "--chunk-size",
            str(args.chunk_size)]
    for r in range(args.repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            proc = subprocess.run([*base, "--child", v], capture_output=True, text=True, cwd=REPO)
            if proc.returncode:
                sys.exit(f"variant {v} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
            res = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
            got[v].append(res)
            print(f"repeat {r} {v}: {res['step_s']:.2f} s/step (steps {', '.join(f'{t:.2f}' for t in res['steps'])}), "
                  f"train peak {res['train_peak'] / 2**30:.2f} GiB, {res['term']} {res['first']:.3f} -> "
                  f"{res['last']:.3f}, head rows {res['rows']}, loss vocabulary {res['vocab']}", flush=True)
    med = {v: {k: statistics.median(x[k] for x in got[v]) for k in ("step_s", "train_peak", "proc_peak", "tokens")}
           for v in variants}
    print(f"\n`python scripts/bench_xtok.py --variants {','.join(variants)} --layers {args.layers} --batch "
          f"{args.batch} --steps {args.steps} --repeats {args.repeats} --problems {args.problems}"
          + (f" --chunk-size {args.chunk_size}" if args.chunk_size != 1024 else "") + "`\n")
    print("| variant | s/step (median) | runs | peak RSS in train, GiB | process peak, GiB | completion tokens/step |")
    print("|---|---:|---|---:|---:|---:|")
    for v in variants:
        runs = ", ".join(f"{x['step_s']:.2f}" for x in got[v])
        print(f"| {v} | {med[v]['step_s']:.2f} | {runs} | "
              f"{med[v]['train_peak'] / 2**30:.2f} | {med[v]['proc_peak'] / 2**30:.2f} | {med[v]['tokens']:.0f} |")
    for v, ref in (("xtok-same", "same"), ("xtok-bpe", "same"), ("xtok-262k", "sft-262k"),
                   ("xtok-262k-full", "xtok-262k")):
        if v in med and ref in med:
            print(f"\n{v} / {ref}: step time {med[v]['step_s'] / med[ref]['step_s']:.2f}x, train peak "
                  f"{med[v]['train_peak'] / med[ref]['train_peak']:.2f}x")
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
