"""A toy second tokenizer for cross-tokenizer KD, made offline in about a second.

The model hubs are unreachable in CI and on many laptops, yet cross-tokenizer KD needs a student whose tokenizer
differs from the teacher's. This trains a small byte-level BPE on the synthetic problems, with Llama-3's
pre-tokenizer split (numbers in groups of up to three digits, where the built-in teacher writes one token per
digit: the case the issue's multi-digit risk is about), ChatML specials and the built-in teacher's chat template.
Used by the tests (tests/train_fixtures.py) and scripts/bench_xtok.py.
"""

from __future__ import annotations

from pathlib import Path

DIGITS_UP_TO_3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # Llama-3's split: numbers in groups of up to three digits


def train_bpe_tokenizer(out: Path, vocab_size: int = 700) -> Path:
    """Train the toy BPE (module doc) and save it as a transformers tokenizer dir at `out`; eos <|im_end|>.
    An existing dir is reused."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from r1distill.data.synthetic import generate_problems
    from r1distill.models import load_tokenizer

    if (out / "tokenizer.json").exists():
        return out
    texts = [p["problem"] for p in generate_problems(300, "train", "mixed", 0)]
    texts += [" ".join(str(i) for i in range(j, 1000, 7)) for j in range(7)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(DIGITS_UP_TO_3), "isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None)
    fast.chat_template = load_tokenizer("smollm2-135m-instruct").chat_template
    fast.save_pretrained(out)
    return out


if __name__ == "__main__":  # python -m r1distill.data.toy_tokenizer OUT_DIR (recipes/cpu-xtok.yaml)
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m r1distill.data.toy_tokenizer OUT_DIR")
    print(train_bpe_tokenizer(Path(sys.argv[1])))
