"""Stage `eval`: models x benchmarks -> per-sample results, a summary, and a Markdown table.

Output dir (default `{run_dir}/eval`): `<model>/<benchmark>.jsonl` (one line per sample: benchmark,
id, sample_idx, output, pred_answer, correct, num_tokens, finish_reason), `summary.json`
({model: {benchmark: metrics}}), `results.md` and `config.yaml`. Samples are appended after each
batch, so a killed run resumes without redoing finished problems.

Model names `teacher`, `student_init` and `student` are aliases for the recipe's teacher and the
run dir's students; anything else is a model name or path.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from r1distill.backends import SamplingConfig, get_backend
from r1distill.config import LAYOUT, ConfigError, UserError, to_dict, write_resolved
from r1distill.console import console, progress
from r1distill.data.problems import SourceConfig, load_problems
from r1distill.prompts import r1_messages
from r1distill.verify import is_equivalent, verify_answer

ALIASES = ("teacher", "student_init", "student")


@dataclass
class EvalConfig:
    run_dir: str = "runs/default"
    teacher: str = "smollm2-135m-instruct"  # what the alias `teacher` means
    models: list[str] = field(default_factory=lambda: ["teacher"])  # names, paths or aliases
    benchmarks: list[SourceConfig] = field(
        default_factory=lambda: [SourceConfig(name="synthetic", split="test", level="easy")])
    output_dir: str | None = None  # default: {run_dir}/eval
    backend: str = "hf"
    num_samples: int = 1  # k samples per problem; pass@1 is their mean
    temperature: float = 0.0  # 0 = greedy; R1's protocol is 0.6 with k samples
    top_p: float = 0.95
    max_new_tokens: int = 512
    think_prefix: bool = False  # force responses to begin with "<think>\n"
    system_prompt: str | None = None
    batch_size: int = 32
    dtype: str = "auto"
    device: str = "auto"
    last_number: bool = True  # fall back to the last number in the output as the answer
    seed: int = 0
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("eval.models is empty: name at least one model")
        if self.num_samples < 1:
            raise ConfigError("eval.num_samples must be >= 1")

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path(self.run_dir) / LAYOUT["eval"])

    def resolve(self, model: str) -> str:
        if model == "teacher":
            return self.teacher
        if model in ("student_init", "student"):
            path = Path(self.run_dir) / LAYOUT[model]
            if not (path / "config.json").exists():
                raise UserError(f"eval: model alias {model!r} means {path}, which does not exist yet: run train first")
            return str(path)
        return model


def majority_correct(answers: list[str | None], correct: list[bool], timeout: float = 5.0) -> bool:
    """maj@k: group equivalent answers (by the verifier), take the largest group (first seen on a tie),
    and return whether its answer is correct. No answer at all counts as wrong."""
    groups: list[list[int]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for g in groups:
            if is_equivalent(a, answers[g[0]], timeout=timeout):
                g.append(i)
                break
        else:
            groups.append([i])
    if not groups:
        return False
    best = max(groups, key=len)  # max keeps the first of equal-size groups
    return bool(correct[best[0]])


def summarize(samples: list[dict]) -> dict:
    """Metrics for one model on one benchmark from its per-sample rows."""
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        by_problem[s["id"]].append(s)
    pass1 = [sum(s["correct"] for s in v) / len(v) for v in by_problem.values()]
    maj = [majority_correct([s["pred_answer"] for s in v], [s["correct"] for s in v]) for v in by_problem.values()]
    n = max(len(samples), 1)
    return {
        "problems": len(by_problem),
        "samples": len(samples),
        "k": max((len(v) for v in by_problem.values()), default=0),
        "pass@1": sum(pass1) / max(len(pass1), 1),
        "maj@k": sum(maj) / max(len(maj), 1),
        "answered": sum(s["pred_answer"] is not None for s in samples) / n,  # outputs that state an answer
        "mean_tokens": sum(s["num_tokens"] for s in samples) / n,
        "truncated": sum(s["finish_reason"] == "length" for s in samples) / n,
    }


def _read_samples(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill: drop it and everything after, they are redone
    return rows


def _fingerprint(cfg: EvalConfig, model: str, bench: SourceConfig) -> str:
    """What the samples depend on: the model (its weights' size and mtime when local), the benchmark
    and the generation settings. Samples made under another fingerprint are discarded, not resumed."""
    weights = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(model).glob("*.safetensors"))
    keys = ("backend", "num_samples", "temperature", "top_p", "max_new_tokens", "think_prefix", "system_prompt",
            "dtype", "seed", "last_number")
    blob = json.dumps([model, weights, to_dict(bench), {k: getattr(cfg, k) for k in keys}], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _eval_one(cfg: EvalConfig, model: str, label: str, bench: SourceConfig, backend_box: dict) -> list[dict]:
    path = cfg.out / label / f"{bench.label}.jsonl"
    meta = path.with_suffix(".meta.json")
    fp = _fingerprint(cfg, model, bench)
    if cfg.overwrite or not meta.exists() or json.loads(meta.read_text()).get("fingerprint") != fp:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"fingerprint": fp, "model": model}))
    samples = _read_samples(path)
    counts = Counter(s["id"] for s in samples)
    done = {i for i, c in counts.items() if c >= cfg.num_samples}
    problems = [p for p in load_problems(bench) if p["id"] not in done]
    samples = [s for s in samples if s["id"] in done]
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    if not problems:
        return samples
    if "backend" not in backend_box:  # load each model once, and only if something is left to do
        backend_box["backend"] = get_backend(cfg.backend, model, dtype=cfg.dtype, device=cfg.device,
                                             batch_size=cfg.batch_size)
    backend = backend_box["backend"]
    sampling = SamplingConfig(n=cfg.num_samples, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=cfg.top_p, think_prefix=cfg.think_prefix, seed=cfg.seed)
    chunk = max(1, cfg.batch_size // cfg.num_samples)
    with progress() as bar, open(path, "a") as f:
        task = bar.add_task(f"eval {label} {bench.label}", total=len(problems) * cfg.num_samples, info="")
        for start in range(0, len(problems), chunk):
            batch = problems[start:start + chunk]
            outs = backend.generate([r1_messages(p["problem"], cfg.system_prompt) for p in batch], sampling,
                                    progress=lambda s, t: bar.update(task, advance=s))
            for p, completions in zip(batch, outs):
                for i, c in enumerate(completions):
                    v = verify_answer(c.text, p["answer"], last_number=cfg.last_number)
                    row = {"benchmark": bench.label, "id": p["id"], "sample_idx": i, "output": c.text,
                           "answer": p["answer"], "pred_answer": v.pred_answer, "correct": v.correct,
                           "num_tokens": len(c.token_ids), "finish_reason": c.finish_reason}
                    samples.append(row)
                    f.write(json.dumps(row) + "\n")
            f.flush()
    return samples


def run(cfg: EvalConfig) -> Path:
    out = cfg.out
    write_resolved(cfg, out)
    summary: dict[str, dict] = {}
    for model in cfg.models:
        name = cfg.resolve(model)
        t0 = time.time()
        box: dict = {}
        summary[model] = {}
        for bench in cfg.benchmarks:
            samples = _eval_one(cfg, name, model.replace("/", "_"), bench, box)
            summary[model][bench.label] = {**summarize(samples), "model_path": name}
        summary[model]["_seconds"] = round(time.time() - t0, 2)
        box.clear()
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = results_markdown(summary)
    (out / "results.md").write_text(table)
    console.print(table)
    return out


def results_markdown(summary: dict) -> str:
    benches = sorted({b for m in summary.values() for b in m if not b.startswith("_")})
    head = "| model | " + " | ".join(f"{b} pass@1 | {b} maj@k | {b} mean tokens" for b in benches) + " |"
    lines = [head, "|---|" + "---:|" * (3 * len(benches))]
    for model, res in summary.items():
        cells = []
        for b in benches:
            r = res.get(b)
            cells += [f"{r['pass@1']:.3f}", f"{r['maj@k']:.3f}", f"{r['mean_tokens']:.0f}"] if r else ["", "", ""]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
