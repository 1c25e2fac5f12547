"""Stage `eval`: models x benchmarks -> per-sample results, a summary, and a Markdown table.

Output dir (default `{run_dir}/eval`): `<model>/<benchmark>.jsonl` (one line per sample: benchmark, id, problem
(its text: the per-sample files and the report need no benchmark source), sample_idx, output, pred_answer, correct,
num_tokens, finish_reason), `summary.json` ({model: {benchmark: metrics}}), `results.md`, `config.yaml` (a recipe:
`r1distill eval eval/config.yaml`) and `maj_cache.json` (maj@k's answer comparisons, which can take seconds each:
a rerun reads them).
Samples are appended after each batch, so a killed run (or one batch that fails) resumes without redoing
finished problems.

Reruns follow `r1distill.rerun`: every benchmark is read and checked, and every model name, before any output
is touched, so a broken input line leaves the last samples and summary as they were. A result file whose
fingerprint (the model, the generation settings and a hash of the benchmark's problems, so an edited file
counts, wherever it lies) differs from this run's is moved aside to `<benchmark>.old-<fingerprint>.jsonl`. When only
the grading changed (gold answers edited, `last_number`, or the verifier's `VERSION`) and the outputs would be the
same (the model, its prompt and sampling settings, the problems' ids and texts: the "generation" fingerprint), the
stored outputs are graded again in seconds, without loading the model; the old verdicts are still kept aside.
Problems whose prompt plus `max_new_tokens` exceed the model's context are skipped and named, as generate
does (`skipped`/`skipped_ids` in the summary), and so are the bad rows a benchmark with `skip_bad_rows` left out.

Model names `teacher`, `student_init` and `student` are aliases for the recipe's teacher and the
run dir's students; `student:<name>` is the student of the recipe's variant `<name>` (`{run_dir}/students/<name>`)
and `student_init:<name>` its derived starting point (`{run_dir}/students_init/<name>` when the variant derives
another student, else `student_init`; a named student's start is that model: `student_inits`); `students` in a
recipe's eval.models stands for every variant's student.
Anything else is a model name or path. Per-sample files go to `<model dir>/`, the label made file-safe
(`config.model_dirname`).

The defaults are DeepSeek-R1's protocol: k samples per problem at temperature 0.6 and top-p 0.95, pass@1 their
mean, no system prompt and the R1 instruction after the problem. Greedy decoding (temperature 0, k = 1) is one
override away.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

from r1distill import layout, rerun
from r1distill.backends import SamplingConfig, close, derive_seed, fits_context, get_backend
from r1distill.config import UserError, model_dirname, to_dict, write_resolved
from r1distill.console import console, progress
from r1distill.data.problems import Problems, SourceConfig, fingerprint, load_problems
from r1distill.data.traces import write_text_atomic
from r1distill.eval_config import (
    DEFAULT_K,
    EvalConfig,
    check_model_name,
    is_alias,  # noqa: F401 (re-exported: pipeline checks eval's model names by it)
)
from r1distill.eval_metrics import AnswerComparer, read_maj_cache, score_outputs, summarize, write_maj_cache
from r1distill.prompts import PromptConfig
from r1distill.tables import results_markdown, skipped_notes
from r1distill.verify import VERSION as VERIFY_VERSION


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


def _fingerprint(cfg: EvalConfig, model: str, bench: SourceConfig, k: int, problems: list[dict],
                 prompt: PromptConfig | None = None) -> str:
    """What the samples depend on: the model (its weights' size and mtime when local), the benchmark's label (its
    seeds) and problems' content (not its path), and the generation settings, k included. Samples made under
    another fingerprint are moved aside, not resumed."""
    keys = ("backend", "num_samples", "temperature", "top_p", "max_new_tokens", "think_prefix", "dtype", "seed",
            "last_number")
    blob = json.dumps([model, _weights(model), bench.label, fingerprint(problems), _settings(cfg, keys, k, prompt)],
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _weights(model: str) -> list:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(model).glob("*.safetensors"))


def _settings(cfg: EvalConfig, keys: tuple[str, ...], k: int, prompt: PromptConfig | None) -> dict:
    # k in num_samples' place: a run that set num_samples keeps the fingerprint it had before k was per benchmark
    # "seeding": samples drawn per (problem, sample) since v2; v1 runs' samples came from per-chunk streams
    return {name: getattr(cfg, name) for name in keys} | {"num_samples": k, "seeding": 2,
                                                          "prompt": to_dict(prompt or cfg.prompt)}


def _generation_fingerprint(cfg: EvalConfig, model: str, bench: SourceConfig, k: int, problems: list[dict],
                            prompt: PromptConfig | None = None) -> str:
    """What the outputs alone depend on: `_fingerprint` less the gold answers and the grading settings."""
    keys = ("backend", "temperature", "top_p", "max_new_tokens", "think_prefix", "dtype", "seed")
    texts = [(p["id"], p["problem"]) for p in problems]
    blob = json.dumps([model, _weights(model), bench.label, texts, _settings(cfg, keys, k, prompt)], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _regrade(cfg: EvalConfig, path: Path, loaded: Problems) -> list[dict]:
    """The stored samples of `path` graded again against the problems' current gold answers (samples of problems
    no longer in the benchmark are dropped)."""
    answers = {p["id"]: p["answer"] for p in loaded}
    rows = [{**s, "answer": answers[s["id"]]} for s in _read_samples(path) if s["id"] in answers]
    return score_outputs(rows, last_number=cfg.last_number, timeout=cfg.verify_timeout) if rows else []


def _read_meta(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fit_context(cfg: EvalConfig, backend, problems: list[dict], prompt: PromptConfig
                 ) -> tuple[list[dict], list[str]]:
    """(the problems whose prompt leaves room for max_new_tokens in the model's context, the ids of the others)."""
    ctx = getattr(backend, "context_length", None)
    if ctx is None or not hasattr(backend, "prompt_lengths"):  # test doubles without a context
        return problems, []
    if cfg.max_new_tokens >= ctx:
        raise UserError(f"eval.max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt in the context of "
                        f"{backend.model_name} ({ctx} tokens): set eval.max_new_tokens below it (e.g. {ctx // 2})")
    fits = fits_context(backend, [prompt.messages(p["problem"]) for p in problems], cfg.max_new_tokens,
                        cfg.think_prefix)
    too_long = [p["id"] for p, ok in zip(problems, fits) if not ok]
    if too_long:
        console.print(f"[yellow]warning[/]: eval: {len(too_long)} problems skipped: prompt + max_new_tokens "
                      f"({cfg.max_new_tokens}) exceed the context of {backend.model_name} ({ctx} tokens): "
                      f"{', '.join(too_long[:10])}{' ...' if len(too_long) > 10 else ''}")
    return [p for p, ok in zip(problems, fits) if ok], too_long


def _eval_one(cfg: EvalConfig, model: str, label: str, bench: SourceConfig, loaded: Problems,
              backend_box: dict, prompt: PromptConfig) -> tuple[list[dict], dict]:
    """(samples of ``model`` on ``bench``: those a run with the same fingerprint finished, plus new ones for the
    problems that lack any of their k samples, appended to the JSONL after each batch; what was skipped).
    ``loaded``: the benchmark's problems, read and checked by ``run`` before any output was touched."""
    k = cfg.k_for(bench)
    path = cfg.out / label / f"{bench.label}.jsonl"
    meta = path.with_suffix(layout.RESULT_META)
    fp = _fingerprint(cfg, model, bench, k, loaded, prompt)
    gen_fp = _generation_fingerprint(cfg, model, bench, k, loaded, prompt)
    old = _read_meta(meta)
    same_outputs = old.get("generation") == gen_fp or old.get("fingerprint") == fp
    if cfg.overwrite:
        path.unlink(missing_ok=True)
    elif path.exists() and same_outputs and (old.get("fingerprint") != fp
                                             or old.get("verifier", VERIFY_VERSION) != VERIFY_VERSION):
        t0 = time.time()  # only the grading changed: grade the stored outputs again, do not generate them again
        regraded = _regrade(cfg, path, loaded)
        moved = rerun.set_aside(path, old.get("fingerprint") or "unstamped")
        rerun.set_aside(meta, old.get("fingerprint") or "unstamped")
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in regraded))
        console.print(f"eval: {label} on {bench.label}: the gold answers or the grading changed, not the outputs: "
                      f"re-graded {len(regraded)} stored samples in {time.time() - t0:.1f}s without running the model "
                      f"(the old verdicts: {moved})")
    elif path.exists() and old.get("fingerprint") != fp:  # another model, settings or benchmark content
        tag = old.get("fingerprint") or "unstamped"
        moved = rerun.set_aside(path, tag)
        if meta.exists():
            rerun.set_aside(meta, tag)
        console.print(f"[yellow]eval[/]: {path} held samples of another model, settings or benchmark content; "
                      f"moved them to {moved}")
    # Problems too long for the context are remembered, so that a finished run does not load the model again.
    too_long = set(old.get("skipped_ids", {}).get("prompt_too_long", [])) if same_outputs else set()
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_meta(meta, fp, model, too_long, gen_fp)
    samples = _read_samples(path)
    counts = Counter(s["id"] for s in samples)
    done = {i for i, c in counts.items() if c >= k}  # a problem with fewer samples is redone whole
    problems = [p for p in loaded if p["id"] not in done and p["id"] not in too_long]
    samples = [s for s in samples if s["id"] in done]
    write_text_atomic(path, "".join(json.dumps(s) + "\n" for s in samples))  # never half a file of finished ones
    if problems and "backend" not in backend_box:  # load each model once, and only if something is left to do
        backend_box["backend"] = get_backend(cfg.backend, model, cfg.backend_options, dtype=cfg.dtype,
                                             device=cfg.device, batch_size=cfg.batch_size)
    if problems:
        problems, new_long = _fit_context(cfg, backend_box["backend"], problems, prompt)
        if new_long:
            too_long |= set(new_long)
            _write_meta(meta, fp, model, too_long, gen_fp)
    skipped = {**loaded.skipped, **({"prompt_too_long": len(too_long)} if too_long else {})}
    info = {"skipped": skipped, "skipped_ids": {"prompt_too_long": [p["id"] for p in loaded if p["id"] in too_long]}}
    if not problems:
        return samples, info if skipped else {}
    backend = backend_box["backend"]
    sampling = SamplingConfig(n=k, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=cfg.top_p, think_prefix=cfg.think_prefix, seed=cfg.seed)
    chunk = max(1, cfg.batch_size // k)
    with progress() as bar, open(path, "a") as f:
        task = bar.add_task(f"eval {label} {bench.label}", total=len(problems) * k, info="")
        t0, tokens = time.time(), 0

        def tick(seqs: int, toks: int) -> None:
            nonlocal tokens
            tokens += toks
            bar.update(task, advance=seqs, info=f"{tokens / max(time.time() - t0, 1e-9):.0f} tok/s")

        for start in range(0, len(problems), chunk):
            batch = problems[start:start + chunk]
            # A stream per (problem, sample), from the problem's identity: chunks never share one (the bootstrap
            # CI treats problems as independent), and a resumed run redraws the same samples.
            sampling.seeds = [derive_seed(cfg.seed, bench.label, p["id"]) for p in batch]
            outs = backend.generate([prompt.messages(p["problem"]) for p in batch], sampling,
                                    progress=tick)
            raw = [{"benchmark": bench.label, "id": p["id"], "problem": p["problem"], "sample_idx": i, "output": c.text,
                    "answer": p["answer"], "num_tokens": len(c.token_ids), "finish_reason": c.finish_reason}
                   for p, completions in zip(batch, outs) for i, c in enumerate(completions)]
            scored = score_outputs(raw, last_number=cfg.last_number, timeout=cfg.verify_timeout)
            samples += scored
            f.write("".join(json.dumps(row) + "\n" for row in scored))
            f.flush()
    return samples, info if skipped else {}


def _write_meta(meta: Path, fp: str, model: str, too_long: set[str], generation: str) -> None:
    write_text_atomic(meta, json.dumps({"fingerprint": fp, "generation": generation, "verifier": VERIFY_VERSION,
                                        "model": model, "skipped_ids": {"prompt_too_long": sorted(too_long)}}))


def _warn_greedy(cfg: EvalConfig) -> None:
    """Say when greedy decoding departs from the per-benchmark k, or makes k > 1 samples identical."""
    if cfg.temperature > 0:
        return
    if cfg.num_samples is None:
        forced = [f"{b.label} (default k {DEFAULT_K[b.name]})" for b in cfg.benchmarks if DEFAULT_K.get(b.name, 1) > 1]
        if forced:
            console.print(f"[yellow]warning[/]: temperature 0 is greedy, so 1 sample per problem on "
                          f"{', '.join(forced)}; set temperature (R1: 0.6) for pass@1 over k samples")
    elif cfg.num_samples > 1:
        console.print(f"[yellow]warning[/]: temperature 0 is greedy: the {cfg.num_samples} samples of each problem "
                      "will be the same")


MAJ_CACHE = layout.MAJ_CACHE  # maj@k's answer comparisons, so that a rerun does not pay for them again


def run(cfg: EvalConfig) -> Path:
    out = cfg.out
    # Every input is read and checked before any output is touched (the rerun rule): a broken benchmark line or a
    # misspelt model name leaves the last samples and summary as they were, and fails before any model loads.
    problems = {b.label: load_problems(b) for b in cfg.benchmarks}
    names = {model: cfg.resolve(model) for model in cfg.models}
    if cfg.backend != "openai":  # a server's model names are its own
        for name in names.values():
            check_model_name(name)
    write_resolved(cfg, out, "eval")
    _warn_greedy(cfg)
    summary: dict[str, dict] = {}
    maj_cache = read_maj_cache(out / MAJ_CACHE)
    for model in cfg.models:
        name = names[model]
        t0 = time.time()
        box: dict = {}
        summary[model] = {}
        try:
            for bench in cfg.benchmarks:
                samples, skipped = _eval_one(cfg, name, model_dirname(model), bench, problems[bench.label], box,
                                             cfg.prompt_for(model))
                # a worker per summary, ended after it: a fork that outlived close() would hold the model's memory
                known = len(maj_cache)
                with AnswerComparer(cfg.verify_timeout, maj_cache) as same:
                    metrics = summarize(samples, ks=cfg.pass_at_k, bootstrap=cfg.bootstrap, same=same)
                if len(maj_cache) > known:
                    write_maj_cache(out / MAJ_CACHE, maj_cache)
                summary[model][bench.label] = {**metrics, **skipped, "model_path": name}
        finally:
            if "backend" in box:
                close(box["backend"])  # the next model's engine needs the memory
        summary[model]["_seconds"] = round(time.time() - t0, 2)
        summary[model]["_prompt"] = cfg.prompt_for(model).describe()  # which prompt this model had
        box.clear()
    write_text_atomic(out / layout.SUMMARY, json.dumps(summary, indent=1))
    table = results_markdown(summary) + skipped_notes(summary)
    write_text_atomic(out / layout.RESULTS, table)
    console.print(table)
    return out
