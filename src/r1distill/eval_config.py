"""The eval stage's config (`EvalConfig`, with `DEFAULT_K`, the samples per problem R1 used) and the checks of its
model names: the run dir's aliases (`teacher`, `student`, `student_init`, `student:<variant>`, ...), the labels that
name result dirs, and the hint for a typo or a built-in model's hub id.

Separate from r1distill.evaluate, the stage itself, so that what a recipe's `eval` section may say, and how its
model names resolve, read on their own (the pipeline checks them before any stage runs) without the generation,
grading and resume logic.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from r1distill.backends import BACKENDS
from r1distill.config import LAYOUT, VARIANT_NAME, ConfigError, UserError, model_dirname
from r1distill.data.problems import SourceConfig
from r1distill.models import BUILTIN_MODELS, check_model
from r1distill.prompts import PromptConfig

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
