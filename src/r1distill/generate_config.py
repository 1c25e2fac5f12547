"""The generate stage's config (`GenerateConfig`) and what its hash leaves out (`UNHASHED`).

Separate from r1distill.generate, the stage, and from r1distill.generate_dir, the state of its output dir, which
both read it: what a recipe's `generate` section may say, and which settings stamp the traces, read on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from r1distill.backends import BACKENDS, check_options
from r1distill.config import LAYOUT, ConfigError, config_hash, parse_worker
from r1distill.data import traces as store
from r1distill.data.problems import SourceConfig
from r1distill.data.traces import TOPK_FORMATS, Location
from r1distill.models import DTYPES
from r1distill.prompts import PromptConfig

# Settings that do not change what is generated: left out of the hash, so they may change on resume (and workers,
# which differ only in `shard`, share one output dir). shard_size is not one of them: it sets which problems share
# a shard, and so each problem's sampling seed (r1distill.generate's `_seeds`).
UNHASHED = ("overwrite", "output_dir", "run_dir", "batch_size", "shard", "device", "backend_options")
DEFAULT_SHARD_SIZE = 256


@dataclass
class GenerateConfig:
    run_dir: str = "runs/default"  # the run's directory: each stage's default input and output dirs are under it
    teacher: str = "smollm2-135m-instruct"  # built-in name, hub id or local model dir
    source: SourceConfig = field(default_factory=SourceConfig)  # the problems
    output_dir: str | None = None  # default: {run_dir}/traces
    backend: str = "hf"  # hf | vllm | openai
    backend_options: dict = field(default_factory=dict)  # settings of the chosen backend (see its module)
    num_samples: int = 4  # completions per problem
    max_new_tokens: int = 256  # the most tokens a completion may take; longer ones are cut (finish_reason length)
    temperature: float = 0.6  # 0 = greedy
    top_p: float = 0.95  # nucleus sampling: the smallest set of tokens holding this much probability (1: off)
    topk_logprobs: int = 20  # top-k log-probs stored per token for offline KD (0 = none)
    topk_format: str = "exact"  # exact (float16 log-probs) | q8 (8-bit: 0.65x the top-k bytes; see data/traces.py)
    # The teacher's prompt: system line, instruction (R1's by default), few-shot examples. The trace keeps what the
    # teacher saw (`teacher_prompt`) and what the student trains on (`prompt`: the same chat without the examples).
    prompt: PromptConfig = field(default_factory=PromptConfig)
    batch_size: int = 32  # sequences per forward batch
    shard_size: int = DEFAULT_SHARD_SIZE  # rows per Parquet shard (it sets the problems' seeds: in the hash)
    shard: str | None = None  # "i/N": this worker's part of the problems (prompt_id hash mod N == i)
    # auto (bf16 on a GPU that has it or a CPU with native bf16, else fp32) | float32 | bfloat16 | float16
    dtype: str = "auto"
    device: str = "auto"  # auto (CUDA if present, else CPU) | cpu | cuda | cuda:N
    trust_remote_code: bool = False  # run a model's own Python from the hub: off unless you trust that code
    seed: int = 0  # the sampling seed (each problem's stream derives from it and its position)
    # delete this stage's earlier outputs (after the input is checked) instead of resuming or moving aside
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("num_samples", "max_new_tokens", "batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"generate.{name} must be >= 1, got {getattr(self, name)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"generate.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.topk_logprobs < 0:
            raise ConfigError("generate.topk_logprobs must be >= 0 (0 stores no log-probs)")
        if self.topk_format not in TOPK_FORMATS:
            raise ConfigError(f"generate.topk_format must be one of {', '.join(TOPK_FORMATS)}, "
                              f"got {self.topk_format!r}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"generate.top_p must be in (0, 1], got {self.top_p}")
        # Every backend's options are checked here, before run() creates the output dir or its config.yaml.
        options = check_options(self.backend, self.backend_options)
        if self.backend == "vllm":  # vLLM refuses every request above max_logprobs: say so before it starts
            options.check_topk(self.topk_logprobs, "generate.topk_logprobs")
        if self.dtype not in DTYPES:
            raise ConfigError(f"generate.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.worker and self.overwrite:
            raise ConfigError("generate.overwrite would delete the other workers' shards too: delete the output "
                              "dir once before starting the workers instead")

    @property
    def worker(self) -> tuple[int, int] | None:
        """(i, N) parsed from `shard`, or None when this run covers every problem."""
        return parse_worker(self.shard, "generate.shard")

    @property
    def tag(self) -> str:
        """The worker's part of its file names ("" without `shard`)."""
        return f"-w{self.worker[0]}of{self.worker[1]}" if self.worker else ""

    @property
    def out(self) -> Location:
        """The output dir: a Path, or the URL string when output_dir is an fsspec URL."""
        return store.as_location(self.output_dir or Path(self.run_dir) / LAYOUT["traces"])

    def hash(self) -> str:
        """The traces' stamp: every setting but the UNHASHED ones, which do not change what is generated."""
        return config_hash(self, exclude=UNHASHED)
