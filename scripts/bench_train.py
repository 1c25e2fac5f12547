"""Training speed: our `sft` vs a plain TRL SFTTrainer script, and our `kd` step vs our `sft` step.

One student (a derived N-layer student of the built-in teacher), one dataset (R real teacher traces
with top-20 log-probs), one batch size, learning rate, schedule and number of steps, fp32 on CPU (bf16
on a GPU). Three variants run in this one process, alternating (the order rotates every repeat):

- `ours sft`:  `r1distill train` with objective sft, called as a user would (through the CLI entry point);
- `TRL sft`:   the obvious alternative, written inline below: TRL's SFTTrainer on a prompt/completion
               dataset (completion-only loss), no packing;
- `ours kd`:   `r1distill train` with objective kd (α = 0.5, top-20 forward KL).

Time is `Trainer.train` only (no model loading, tokenization or save), as wall seconds and as CPU
seconds of this process (all its threads). On a CPU shared with other jobs both stretch with the load
(CPU time tracked wall time within 5% on the 2-core dev machine), so compare the ratios of the
alternating runs rather than absolute figures. tokens/s counts the completion
tokens each variant trains on. Prints the medians over the repeats, the ratios (goals: ours/TRL
tokens/s ≥ 1.0, kd/sft step time ≤ 1.25) and the git commit, as Markdown.

    python scripts/bench_train.py [--traces DIR] [--rows 64] [--layers 4] [--batch-size 8] [--max-length 512]
                                  [--repeats 3] [--work runs/bench_train]

Without --traces, 64 traces (32 easy synthetic problems x 2 samples, 128 new tokens, top-20) are generated
once with the built-in teacher into {work}/traces (minutes on CPU) and reused afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEACHER = "smollm2-135m-instruct"


_LAST_TRAIN: dict = {}


def _time_trainer_train() -> None:
    """Wrap transformers' Trainer.train (shared by SFTTrainer and our DistillTrainer) to record its wall
    and process CPU seconds: the same scope for every variant, whoever calls it."""
    from transformers import Trainer

    original = Trainer.train

    def train(self, *args, **kwargs):
        w0, c0 = time.perf_counter(), time.process_time()
        result = original(self, *args, **kwargs)
        _LAST_TRAIN.update(wall=time.perf_counter() - w0, cpu=time.process_time() - c0)
        return result

    Trainer.train = train


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "src/r1distill/train"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    return head.strip() + (" + uncommitted changes in src/r1distill/train" if dirty else "")


def ensure_traces(args: argparse.Namespace) -> Path:
    from r1distill.cli import main

    if args.traces:
        return Path(args.traces)
    d = Path(args.work) / "traces"
    if not (d / "summary.json").exists():
        print(f"generating 64 teacher traces into {d} (once)", file=sys.stderr)
        assert main(["generate", str(REPO / "recipes" / "quickstart.yaml"), f"run_dir={args.work}",
                     "generate.source.num_problems=32", "generate.num_samples=2",
                     "generate.max_new_tokens=128"]) == 0
    return d


def subset(traces: Path, rows: int, out: Path) -> list[dict]:
    """The first `rows` traces as their own dataset dir (so every variant reads exactly these)."""
    from r1distill.data.traces import read_table, write_table_atomic

    table = read_table(traces).slice(0, rows)
    if table.num_rows < rows:
        sys.exit(f"{traces} holds {table.num_rows} traces; --rows {rows} needs more")
    write_table_atomic(table, out / "data-00000.parquet")
    return table.to_pylist()


def ours(args: argparse.Namespace, objective: str, student: Path, data: Path, run: int) -> dict:
    """`r1distill train` in this process; train_runtime and steps from what it wrote."""
    from r1distill.cli import main
    from r1distill.train import TrainConfig

    out = Path(args.work) / f"out-{objective}-{run}"
    overrides = [f"run_dir={args.work}", f"train.student={{name: {student}}}", f"train.input_dir={data}",
                 f"train.output_dir={out}", f"train.objective={objective}", "train.epochs=1",
                 f"train.batch_size={args.batch_size}", f"train.max_length={args.max_length}",
                 f"train.learning_rate={args.lr}", "train.logging_steps=1", "train.loss.alpha=0.5", "--overwrite"]
    if "report_to" in {f.name for f in dataclasses.fields(TrainConfig)}:
        overrides.insert(-1, "train.report_to=[]")  # measure the loop, not the tensorboard writer
    assert main(["train", *overrides]) == 0
    summary = json.loads((out / "summary.json").read_text())
    return {**_LAST_TRAIN, "steps": summary["steps"], "tokens": summary["completion_tokens_seen"]}


def trl_sft(args: argparse.Namespace, student: Path, rows: list[dict], run: int) -> dict:
    """The plain TRL script a user would write: prompt/completion chat data, SFTTrainer, completion-only loss."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["completion"]}]}
                              for r in rows])
    on_gpu = torch.cuda.is_available()
    config = SFTConfig(
        output_dir=str(Path(args.work) / f"trl-{run}"), num_train_epochs=1, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=1, save_strategy="no",
        report_to="none", seed=0, bf16=on_gpu, use_cpu=not on_gpu, activation_checkpointing=False,
        max_length=args.max_length, dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data,
                         processing_class=AutoTokenizer.from_pretrained(student))
    tokens = sum(sum(t != -100 for t in labels) for labels in trainer.train_dataset["labels"])
    trainer.train()
    return {**_LAST_TRAIN, "steps": trainer.state.global_step, "tokens": tokens}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--traces", help="a trace dir with top-k columns (default: generate 64 into {work}/traces)")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--layers", type=int, default=4, help="decoder layers of the derived student")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default=str(REPO / "runs" / "bench_train"))
    args = p.parse_args()

    from r1distill.models import derive_student, pick_layers, resolve_model

    work = Path(args.work)
    traces = ensure_traces(args)
    data = work / f"data-{args.rows}"
    rows = subset(traces, args.rows, data)
    student = work / f"student-{args.layers}l"
    if not (student / "model.safetensors").exists():
        from transformers import AutoConfig

        total = AutoConfig.from_pretrained(resolve_model(TEACHER)).num_hidden_layers
        derive_student(TEACHER, student, layers=pick_layers(total, args.layers))
    commit = git_commit()
    _time_trainer_train()

    variants = {"ours sft": lambda i: ours(args, "sft", student, data, i),
                "TRL sft": lambda i: trl_sft(args, student, rows, i),
                "ours kd": lambda i: ours(args, "kd", student, data, i)}
    names = list(variants)
    results: dict[str, list[dict]] = {n: [] for n in names}
    for i in range(args.repeats):
        for name in names[i % 3:] + names[: i % 3]:  # rotate so no variant always runs first
            t0 = time.time()
            r = variants[name](i)
            for clock in ("wall", "cpu"):
                r[f"{clock}_s_per_step"] = r[clock] / r["steps"]
                r[f"{clock}_tok_per_s"] = r["tokens"] / r[clock]
            results[name].append(r)
            print(f"repeat {i} {name}: {r['steps']} steps, {r['wall_s_per_step']:.2f} s/step wall, "
                  f"{r['cpu_s_per_step']:.2f} CPU-s/step, {r['wall_tok_per_s']:.0f} tok/s wall "
                  f"({time.time() - t0:.0f}s with loading)", file=sys.stderr, flush=True)
            gc.collect()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    def med_ratio(a: str, b: str, key: str) -> float:
        return statistics.median(x[key] / y[key] for x, y in zip(results[a], results[b]))

    tok = {n: int(results[n][0]["tokens"]) for n in names}
    print(f"\nbench_train at commit {commit}: {args.rows} traces, {args.layers}-layer student of {TEACHER}, "
          f"batch {args.batch_size}, max_length {args.max_length}, {results['ours sft'][0]['steps']} steps, "
          f"{args.repeats} alternating repeats (medians)\n")
    print("| variant | s/step (wall) | CPU-s/step | completion tokens/s (wall) | tokens/CPU-s | completion tokens |")
    print("|---|---:|---:|---:|---:|---:|")
    for n in names:
        print(f"| {n} | {med(n, 'wall_s_per_step'):.2f} | {med(n, 'cpu_s_per_step'):.2f} | "
              f"{med(n, 'wall_tok_per_s'):.0f} | {med(n, 'cpu_tok_per_s'):.0f} | {tok[n]} |")
    print("\n| ratio | wall (median of medians) | CPU (median of medians) | CPU (median of per-repeat ratios) | goal |")
    print("|---|---:|---:|---:|---|")
    for label, a, b, key, goal in (("ours sft / TRL sft tokens/s", "ours sft", "TRL sft", "tok_per_s", ">= 1.0x"),
                                   ("ours kd / ours sft s/step", "ours kd", "ours sft", "s_per_step", "<= 1.25x")):
        wall = med(a, f"wall_{key}") / med(b, f"wall_{key}")
        cpu = med(a, f"cpu_{key}") / med(b, f"cpu_{key}")
        print(f"| {label} | {wall:.2f}x | {cpu:.2f}x | {med_ratio(a, b, f'cpu_{key}'):.2f}x | {goal} |")
    print(f"\ncommand: python scripts/bench_train.py {shlex.join(sys.argv[1:])}")
    (work / "bench_train.json").write_text(json.dumps({"commit": commit, "args": vars(args), "results": results},
                                                      indent=1))


if __name__ == "__main__":
    main()
