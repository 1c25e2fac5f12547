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

import difflib
import hashlib
import json
import multiprocessing as mp
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from r1distill import layout, rerun
from r1distill.backends import BACKENDS, SamplingConfig, close, derive_seed, fits_context, get_backend
from r1distill.config import (
    LAYOUT,
    VARIANT_NAME,
    ConfigError,
    UserError,
    model_dirname,
    to_dict,
    write_resolved,
)
from r1distill.console import console, progress
from r1distill.data.problems import Problems, SourceConfig, fingerprint, load_problems
from r1distill.data.traces import write_text_atomic
from r1distill.models import BUILTIN_MODELS, check_model
from r1distill.prompts import PromptConfig
from r1distill.stats import bootstrap_ci, percentile, standard_error
from r1distill.tables import results_markdown, skipped_notes
from r1distill.verify import VERSION as VERIFY_VERSION
from r1distill.verify import hard_limit, is_equivalent, normalize_answer, verify_many
from r1distill.verify import worker_context as verify_context

ALIASES = ("teacher", "student_init", "student")


def is_alias(model: str) -> bool:
    """Whether `model` names one of the run dir's students (`student`, `student_init`, `student:<variant>`, ...)."""
    return model.partition(":")[0] in ("student_init", "student")


LABEL_RE = re.compile(r"[A-Za-z0-9_.:~-]+")  # what a label's result dir name (`model_dirname`) may hold


def check_label(model: str) -> None:
    """A model label names its result dir, `eval/<model_dirname(label)>`: refuse one that would not be a plain name
    inside `eval/` ("..", or characters a dir name should not have)."""
    name = model_dirname(model)
    variant = model.partition(":")[2] if is_alias(model) else ""  # student:<variant> reads students/<variant>
    if not LABEL_RE.fullmatch(name) or name in (".", "..") or (variant and not VARIANT_NAME.match(variant)):
        raise ConfigError(f"eval.models: {model!r} cannot label results (they go to eval/{name}/): a model name or "
                          "path may hold letters, digits, '_', '.', '-', ':', '~' and '/' (not '.' or '..' alone); "
                          "for a path with other characters, give a symlink to it")


def near_alias(model: str) -> str | None:
    """The alias or built-in name that `model` looks like a typo of ("studnet" -> "student", "studnet:kd" ->
    "student:kd"), when it names nothing else: no local path, no hub owner ("org/name")."""
    if model in ("teacher", "students", *BUILTIN_MODELS) or is_alias(model) or "/" in model:
        return None
    if Path(model).expanduser().exists():
        return None
    kind, sep, variant = model.partition(":")
    known = ["student", "student_init"] if sep else [*ALIASES, "students", *BUILTIN_MODELS]
    close = difflib.get_close_matches(kind.lower(), known, n=1, cutoff=0.75)
    return close[0] + sep + variant if close else None


def check_model_name(name: str) -> str:
    """`check_model`, with a hint when an offline hub id is a built-in model's (HuggingFaceTB/SmolLM2-135M-Instruct
    is `smollm2-135m-instruct`, which needs no hub)."""
    try:
        return check_model(name)
    except UserError as e:
        builtin = next((b for b in BUILTIN_MODELS if name.rsplit("/", 1)[-1].lower() == b and name != b), None)
        if builtin is None:
            raise
        raise type(e)(f"{e}; use the built-in name {builtin}, which is that model (its GGUF ships in a Python "
                      "package: no hub needed)") from None

# Samples per problem when num_samples is unset. DeepSeek-R1 (arXiv:2501.12948, sec. 3.1 "Evaluation Setup")
# samples "k responses (typically between 4 and 64, depending on the test set size)" and reports cons@64 on AIME:
# small sets get many samples so that pass@1 is stable. Every other benchmark gets 1.
DEFAULT_K = {"aime24": 64, "aime25": 64, "amc23": 64, "math500": 4, "gsm8k": 1}


@dataclass
class EvalConfig:
    run_dir: str = "runs/default"  # the run's directory: each stage's default input and output dirs are under it
    teacher: str = "smollm2-135m-instruct"  # what the alias `teacher` means
    # `student_init` / `student_init:<variant>` of a named (not derived) student: the model it starts as. `run` fills
    # it from the train sections; an alias not in it is the run dir's derived student
    student_inits: dict[str, str] | None = None  # {alias: model} (named students)
    models: list[str] = field(default_factory=lambda: ["teacher"])  # names, paths or aliases
    # the benchmarks: names (gsm8k, math500, aime24, ...) or sources, as generate.source
    benchmarks: list[SourceConfig] = field(
        default_factory=lambda: [SourceConfig(name="synthetic", split="test", level="easy")])
    output_dir: str | None = None  # default: {run_dir}/eval
    backend: str = "hf"  # hf | vllm | openai
    backend_options: dict = field(default_factory=dict)  # settings of the chosen backend (see its module)
    num_samples: int | None = None  # k samples per problem (pass@1 is their mean); unset: DEFAULT_K per benchmark
    temperature: float = 0.6  # 0 = greedy, which makes k 1 unless num_samples is set
    top_p: float = 0.95  # nucleus sampling: the smallest set of tokens holding this much probability (1: off)
    max_new_tokens: int = 32768  # R1's generous 32,768 for long reasoning; the quickstart overrides it (128, CPU)
    think_prefix: bool = False  # force responses to begin with "<think>\n"
    # R1's protocol: no system turn, the R1 instruction after the problem, no examples. model_prompts gives a
    # model its own (by its entry in `models`, e.g. {teacher: {system: ..., examples: [...]}} for a small teacher
    # that needs worked examples, while the students are asked plainly)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    model_prompts: dict[str, PromptConfig] = field(default_factory=dict)  # a model's own prompt, by its entry in models
    batch_size: int = 32  # sequences per forward batch (hf)
    # auto (bf16 on a GPU that has it or a CPU with native bf16, else fp32) | float32 | bfloat16 | float16
    dtype: str = "auto"
    device: str = "auto"  # auto (CUDA if present, else CPU) | cpu | cuda | cuda:N
    last_number: bool = False  # true: an output stating no answer is graded by its last number (cut-off ones too)
    verify_timeout: float = 5.0  # seconds per Math-Verify call; a row is abandoned (wrong) after ~3x
    pass_at_k: list[int] = field(default_factory=list)  # ks for pass@k; empty = powers of two up to each k
    bootstrap: int = 1000  # resamples of problems for the pass@1 confidence interval
    seed: int = 0  # the sampling seed (each problem's stream derives from it)
    # delete this stage's earlier outputs (after the input is checked) instead of resuming or moving aside
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("eval.models is empty: name at least one model")
        for model in self.models:  # before any check that names the models (model_prompts)
            check_label(model)
            if model == "students":
                raise ConfigError("eval.models: `students` (every variant's student) needs a recipe with variants "
                                  "(r1distill run or eval); else name each one as student:<variant>")
            if close := near_alias(model):
                raise ConfigError(f"eval.models: {model!r} is not a model alias (teacher, student, student_init, "
                                  f"students, student:<variant>), built-in name or local path. Did you mean {close!r}?")
        if bad := [k for k in self.student_inits or {} if k.partition(":")[0] != "student_init"]:
            raise ConfigError(f"eval.student_inits: {bad[0]!r} is not student_init or student_init:<variant>")
        if self.backend not in BACKENDS:
            raise ConfigError(f"eval.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.num_samples is not None and self.num_samples < 1:
            raise ConfigError("eval.num_samples must be >= 1 (or unset for the per-benchmark default)")
        if any(k < 1 for k in self.pass_at_k):
            raise ConfigError(f"eval.pass_at_k must hold ks >= 1, got {self.pass_at_k}")
        if self.bootstrap < 1:
            raise ConfigError("eval.bootstrap must be >= 1")
        if unknown := sorted(set(self.model_prompts) - set(self.models)):
            raise ConfigError(f"eval.model_prompts names {', '.join(unknown)}, not in eval.models "
                              f"({', '.join(self.models)})")
        if not self.verify_timeout > 0:
            raise ConfigError(f"eval.verify_timeout must be > 0 seconds, got {self.verify_timeout}")

    def prompt_for(self, model: str) -> PromptConfig:
        """The prompt `model` (an entry of `models`) is asked with."""
        return self.model_prompts.get(model, self.prompt)

    def k_for(self, bench: SourceConfig) -> int:
        """Samples per problem on ``bench``: num_samples when set, else DEFAULT_K (1 when greedy, as greedy
        samples would all be the same)."""
        if self.num_samples is not None:
            return self.num_samples
        return 1 if self.temperature <= 0 else DEFAULT_K.get(bench.name, 1)

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path(self.run_dir) / LAYOUT["eval"])

    def resolve(self, model: str) -> str:
        if model == "teacher":
            return self.teacher
        if model in (self.student_inits or {}):
            return self.student_inits[model]
        if is_alias(model):
            kind, _, variant = model.partition(":")
            path = Path(self.run_dir) / LAYOUT[kind]
            if variant and kind == "student":
                path = Path(self.run_dir) / LAYOUT["students"] / variant
            elif variant and (Path(self.run_dir) / LAYOUT["students_init"] / variant / "config.json").exists():
                path = Path(self.run_dir) / LAYOUT["students_init"] / variant
            if not (path / "config.json").exists():
                built = Path(self.run_dir) / LAYOUT["students"]
                names = sorted(d.name for d in built.iterdir() if d.is_dir()) if variant and built.is_dir() else []
                close = difflib.get_close_matches(variant, names, n=1)
                hint = f" Did you mean '{kind}:{close[0]}'?" if close else ""
                raise UserError(f"eval: model alias {model!r} means {path}, which does not exist yet: run train "
                                f"first.{hint}")
            return str(path)
        return model


class AnswerComparer:
    """Whether two extracted answers are the same, for maj@k: ``is_equivalent`` in a worker process with the hard
    limit grading has (``hard_limit(timeout)`` per comparison, so Math-Verify cannot hang the main process, nor run
    unlimited off its main thread), after exact equality of the answers and of their normalised forms. Verdicts are
    cached by (normalised answer, normalised answer, timeout): `cache` may be loaded from and saved to a file, so a
    rerun does not pay again for pathological pairs (8 distinct ``9^{9^{9^{9^{n}}}}`` cost 28 x 5 s).
    Use as a context manager; the worker starts on the first comparison that needs it."""

    def __init__(self, timeout: float = 5.0, cache: dict[tuple[str, str, float], bool] | None = None):
        self.timeout = timeout
        self.cache = {} if cache is None else cache
        self._pool = None

    def __call__(self, a: str, b: str) -> bool:
        if a == b:
            return True
        key = (normalize_answer(a), normalize_answer(b), self.timeout)
        if key[0] and key[0] == key[1]:
            return True  # what is_equivalent's first check would say
        if key not in self.cache:
            self.cache[key] = self._compare(a, b)
        return self.cache[key]

    def _compare(self, a: str, b: str) -> bool:
        if self._pool is None:
            self._pool = verify_context().Pool(1)
        try:
            return bool(self._pool.apply_async(_equivalent, (a, b, self.timeout)).get(hard_limit(self.timeout)))
        except mp.TimeoutError:  # stuck where Math-Verify's alarm cannot reach: undecided, not the same answer
            self.close()
            return False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def __enter__(self) -> AnswerComparer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _equivalent(a: str, b: str, timeout: float) -> bool:
    return is_equivalent(a, b, timeout=timeout)  # in the worker, where Math-Verify's alarm works


def majority_correct(answers: list[str | None], correct: list[bool], timeout: float = 5.0,
                     same: AnswerComparer | None = None) -> bool:
    """maj@k: group equivalent answers (by ``same``, default an ``AnswerComparer(timeout)``), take the largest
    group (first seen on a tie), and return whether its answer is correct. No answer at all counts as wrong."""
    if same is None:
        with AnswerComparer(timeout) as own:
            return majority_correct(answers, correct, timeout, own)
    groups: list[list[int]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for g in groups:
            if same(a, answers[g[0]]):
                g.append(i)
                break
        else:
            groups.append([i])
    if not groups:
        return False
    best = max(groups, key=len)  # max keeps the first of equal-size groups
    return bool(correct[best[0]])


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): the chance that k samples
    drawn without replacement include a correct one, 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i): the Codex paper's form, free of huge binomials
    all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        all_wrong *= 1.0 - k / i
    return 1.0 - all_wrong


def default_ks(max_k: int) -> list[int]:
    """The ks reported when none are configured: powers of two up to ``max_k``, plus ``max_k`` itself."""
    ks, k = [], 1
    while k <= max_k:
        ks.append(k)
        k *= 2
    if ks and ks[-1] != max_k:
        ks.append(max_k)
    return ks


def summarize(samples: list[dict], ks: Sequence[int] = (), bootstrap: int = 1000,
              same: AnswerComparer | None = None) -> dict:
    """Metrics for one model on one benchmark from its per-sample rows.

    pass@1 is the mean over problems of each problem's share of correct samples, with a bootstrap 95% CI
    over problems and its standard error; pass@k (for ``ks``, default ``default_ks(k)``) is the unbiased
    estimator averaged over problems; maj@k is majority voting over the extracted answers; tokens_p50/p90
    are nearest-rank percentiles of the completion lengths. ``same`` compares answers for maj@k (default: a fresh
    ``AnswerComparer``).
    """
    if same is None:
        with AnswerComparer() as own:
            return summarize(samples, ks, bootstrap, own)
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        by_problem[s["id"]].append(s)
    groups = list(by_problem.values())
    pass1 = [sum(s["correct"] for s in v) / len(v) for v in groups]
    maj = [majority_correct([s["pred_answer"] for s in v], [s["correct"] for s in v], same=same) for v in groups]
    max_k = max((len(v) for v in groups), default=0)
    min_k = min((len(v) for v in groups), default=0)
    n = max(len(samples), 1)
    tokens = [s["num_tokens"] for s in samples]
    metrics = {
        "problems": len(groups),
        "samples": len(samples),
        "k": max_k,
        "pass@1": sum(pass1) / max(len(pass1), 1),
        "pass@1_ci95": bootstrap_ci(pass1, bootstrap) if pass1 else [0.0, 0.0],
        "pass@1_stderr": standard_error(pass1),
    }
    # pass@1 above is already pass_at_k(n, c, 1) = c / n. A k above some problem's sample count is skipped for
    # the whole benchmark: averaging it over only the problems with enough samples would change what it measures.
    for k in sorted(set(ks or default_ks(max_k))):
        if 1 < k <= min_k:
            metrics[f"pass@{k}"] = sum(pass_at_k(len(v), sum(s["correct"] for s in v), k) for v in groups) / len(groups)
    return metrics | {
        "maj@k": sum(maj) / max(len(maj), 1),
        "answered": sum(s["pred_answer"] is not None for s in samples) / n,  # outputs that state an answer
        "mean_tokens": sum(tokens) / n,
        "tokens_p50": percentile(tokens, 50) if tokens else 0,
        "tokens_p90": percentile(tokens, 90) if tokens else 0,
        "truncated": sum(s["finish_reason"] == "length" for s in samples) / n,
    }


def score_outputs(rows: list[dict], last_number: bool = True, timeout: float = 5.0) -> list[dict]:
    """Grade each row's ``output`` against its gold ``answer`` with the shared verifier, in worker processes
    with a hard time limit per row (``verify_many(hard_limit=True)``, as curate does): an output that would
    hang Math-Verify is abandoned after ``hard_limit(timeout)`` seconds and counted wrong.

    Each row needs benchmark, id, sample_idx, output, answer, num_tokens and finish_reason (and may hold the
    problem's text); the result rows hold those plus pred_answer and correct (recomputed), in the order the eval
    stage writes them.
    """
    verdicts = verify_many([r["output"] for r in rows], [r["answer"] for r in rows], last_number=last_number,
                           timeout=timeout, hard_limit=True)
    scored = []
    for r, v in zip(rows, verdicts):
        scored.append({"benchmark": r["benchmark"], "id": r["id"], **({"problem": r["problem"]} if "problem" in r
                                                                      else {}), "sample_idx": r["sample_idx"],
                       "output": r["output"], "answer": r["answer"], "pred_answer": v.pred_answer,
                       "correct": v.correct, "num_tokens": r["num_tokens"], "finish_reason": r["finish_reason"]})
    return scored


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


def _read_maj_cache(path: Path) -> dict[tuple[str, str, float], bool]:
    data = _read_meta(path)
    if data.get("verifier") != VERIFY_VERSION:
        return {}  # another verifier may judge the pairs otherwise (or no cache yet)
    try:
        return {(str(a), str(b), float(t)): bool(v) for a, b, t, v in data.get("pairs", [])}
    except (TypeError, ValueError):
        return {}  # a damaged cache is only a lost speed-up


def _write_maj_cache(path: Path, cache: dict[tuple[str, str, float], bool]) -> None:
    pairs = [[a, b, t, v] for (a, b, t), v in cache.items()]
    write_text_atomic(path, json.dumps({"verifier": VERIFY_VERSION, "pairs": pairs}))


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
    maj_cache = _read_maj_cache(out / MAJ_CACHE)
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
                    _write_maj_cache(out / MAJ_CACHE, maj_cache)
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
