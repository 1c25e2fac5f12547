"""The shared-token map of cross-tokenizer KD (train/xtok/vocab.py `shared_tokens`) on real tokenizer conventions: the
built-in teacher (byte-level BPE, "Ġ" spaces, ChatML ends) against SentencePiece students trained here (BPE and
unigram, byte fallback, "▁" spaces, digits one per token: Llama-2 / Gemma / Mistral) and Qwen's published
vocabulary (byte-level BPE, ChatML). Where the student has two ids for the same bytes ("5" and its byte-fallback
"<0x35>"), the teacher's token must map to the one the student writes; every teacher stop token maps to the
student's eos; and `r1distill xtok-inspect` shows it on the teacher's own traces."""

from __future__ import annotations

import numpy as np
import pytest

from r1distill import curate, generate
from r1distill.cli import main
from r1distill.data.problems import SourceConfig
from r1distill.data.real_tokenizers import cached
from r1distill.models import StudentConfig, derive_student, load_tokenizer
from r1distill.tokenbytes import ADDED, BYTE_FALLBACK, PIECE, spans, token_bytes, token_kinds
from r1distill.train import TrainConfig, XtokOptions
from r1distill.train.xtok.align import align
from r1distill.train.xtok.inspect import MapCheck, check_map, features, inspect, iter_rows, student_tokenizer
from r1distill.train.xtok.vocab import shared_ids, shared_tokens, stop_ids

STUDENTS = ["spm-bpe", "spm-unigram", "qwen2"]
TEXT = "8 - 3 = 5\nThe answer is 5.\n\n17 + 14 = 31\n\\boxed{31}"


@pytest.fixture(scope="module")
def teacher_tok():
    return load_tokenizer("smollm2-135m-instruct")


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("kind", STUDENTS)
def test_one_to_one_groups_map_to_the_token_the_student_writes(kind, teacher_tok):
    """Fails before the fix for SentencePiece: "5" mapped to "<0x35>", "\\n" to "<0x0A>" (the lower ids)."""
    student = load_tokenizer(str(cached(kind)))
    shared = shared_tokens(teacher_tok, student, "all")
    t_ids, s_ids = _ids(teacher_tok, TEXT), _ids(student, TEXT)
    tw, t_ok = spans(t_ids, token_bytes(teacher_tok, "empty"), TEXT)
    sw, s_ok = spans(s_ids, token_bytes(student, "text"), TEXT)
    assert t_ok and s_ok
    a = align(tw, sw)
    one_to_one = 0
    for g in range(a.num_groups):
        ti, si = np.flatnonzero(a.t_group == g), np.flatnonzero(a.s_group == g)
        si = si[sw[si] > 0]  # the zero-width "▁" a dummy prefix puts first
        if len(ti) == 1 and len(si) == 1:  # " answer" against "▁an" "s" "wer" is a group of its own
            t, s = t_ids[ti[0]], s_ids[si[0]]
            assert shared[t] == s, (student.convert_ids_to_tokens(int(shared[t])), student.convert_ids_to_tokens(s))
            one_to_one += 1
    assert one_to_one >= 29  # of the text's 34 teacher tokens: all but " answer" (SentencePiece); Qwen writes
    #                          ".\n\n" and "boxed" as one token each
    kinds = token_kinds(student)
    for digit in "0123456789":
        (t,) = _ids(teacher_tok, digit)
        assert kinds[shared[t]] == PIECE and token_bytes(student, "text")[shared[t]] == digit.encode()
    if kind.startswith("spm"):  # the byte-fallback twins exist, and are not what the map chose
        fallback = student.convert_tokens_to_ids("<0x35>")
        assert kinds[fallback] == BYTE_FALLBACK and shared[_ids(teacher_tok, "5")[0]] != fallback
        # a byte no piece covers still maps to its byte-fallback token: the student writes it
        t_byte = teacher_tok.convert_tokens_to_ids("Ã")  # byte 0xC3 alone in the teacher's byte-level BPE
        assert student.convert_ids_to_tokens(int(shared[t_byte])) == "<0xC3>"


@pytest.mark.parametrize("kind", STUDENTS)
def test_every_teacher_stop_token_maps_to_the_student_eos(kind, teacher_tok):
    student = load_tokenizer(str(cached(kind)))
    shared = shared_tokens(teacher_tok, student)
    stops = stop_ids(teacher_tok)
    assert {teacher_tok.convert_ids_to_tokens(i) for i in stops} == {"<|im_end|>", "<|endoftext|>"}
    assert (shared[stops] == student.eos_token_id).all()
    others = [i for i in range(len(teacher_tok)) if not token_bytes(teacher_tok, "empty")[i] and i not in stops]
    assert (shared[others] == -1).all()  # other specials (<|im_start|>, <repo_name>, ...) are never shared


def test_the_two_end_of_turn_conventions_both_ways(teacher_tok):
    """A Qwen teacher (its eos <|im_end|>, <|endoftext|> between documents) into a SentencePiece student (</s>),
    and the SentencePiece one into Qwen: the stop tokens of each side meet the other's eos."""
    qwen, spm = load_tokenizer(str(cached("qwen2"))), load_tokenizer(str(cached("spm-bpe")))
    q_to_s = shared_tokens(qwen, spm)
    assert q_to_s[qwen.convert_tokens_to_ids("<|im_end|>")] == spm.eos_token_id
    assert q_to_s[qwen.convert_tokens_to_ids("<|endoftext|>")] == spm.eos_token_id
    assert q_to_s[qwen.convert_tokens_to_ids("<|im_start|>")] == -1
    s_to_q = shared_tokens(spm, qwen)
    assert s_to_q[spm.eos_token_id] == qwen.eos_token_id == qwen.convert_tokens_to_ids("<|im_end|>")
    assert s_to_q[spm.convert_tokens_to_ids("<s>")] == -1  # bos is not a stop
    # the byte-fallback twins of the teacher side map by their bytes to Qwen's own token of that byte
    assert qwen.convert_ids_to_tokens(int(s_to_q[spm.convert_tokens_to_ids("<0x35>")])) == "5"
    assert s_to_q[spm.convert_tokens_to_ids("▁is")] == qwen.convert_tokens_to_ids("Ġis")


def test_added_tokens_win_over_pieces_and_specials_are_never_targets(teacher_tok):
    """A non-special added token is split out of the text before the model: the student writes it, so a teacher
    token with its bytes maps to it; a special one is never written from text and is never a target."""
    from tokenizers import AddedToken

    student = load_tokenizer(str(cached("spm-bpe")))
    student.add_tokens([AddedToken("\n\n", normalized=False)])  # as Gemma's tokenizer.json holds its added tokens
    student.add_special_tokens({"additional_special_tokens": ["<tool>"]})
    added = student.convert_tokens_to_ids("\n\n")
    assert token_kinds(student)[added] == ADDED and added in _ids(student, "a\n\nb")
    shared = shared_tokens(teacher_tok, student, "all")
    assert shared[_ids(teacher_tok, "\n\n")[0]] == added
    assert student.convert_tokens_to_ids("<tool>") not in set(shared.tolist())


def test_shared_ids_prefers_by_kind_then_id():
    t = [b"", b"5", b"ab", b"z"]
    s = [b"", b"5", b"ab", b"5", b"ab", b"z"]
    kinds = np.array([3, BYTE_FALLBACK, PIECE, PIECE, ADDED, BYTE_FALLBACK], np.int8)
    assert shared_ids(t, s, [0], 0, "all", kinds).tolist() == [0, 3, 4, 5]
    assert shared_ids(t, s, [0], 0, "all").tolist() == [0, 1, 2, 5]  # no kinds: the lowest id, as before


@pytest.fixture(scope="module")
def traces(tmp_path_factory, teacher_dir):
    """8 traces of the built-in teacher with the quickstart's style of answer (top-8), curated with filters off."""
    d = tmp_path_factory.mktemp("xmap")
    generate.run(generate.GenerateConfig(output_dir=str(d / "traces"), num_samples=2, max_new_tokens=24,
                                         source=SourceConfig(name="synthetic", num_problems=4), temperature=0.8,
                                         topk_logprobs=8, batch_size=8))
    curate.run(curate.CurateConfig(run_dir=str(d), require_correct=False, drop_truncated=False,
                                   require_format=False, decontaminate=[], dedup_completions=False,
                                   max_repeat_ngram_share=None, max_foreign_script_share=None, num_workers=1))
    return d


@pytest.mark.parametrize("kind", STUDENTS)
def test_map_check_on_the_teachers_traces(kind, traces, teacher_tok):
    cfg = TrainConfig(run_dir=str(traces), teacher="smollm2-135m-instruct", xtok=XtokOptions(),
                      student=StudentConfig(derive_from="teacher", layers=[29], tokenizer=str(cached(kind))))
    student = student_tokenizer(cfg)  # with the teacher's chat template, as derive_student saves it
    shared = shared_tokens(teacher_tok, student, "runs")
    check = MapCheck()
    for row in iter_rows(cfg, 100):
        check_map(features(row, student, 256), shared, check, token_bytes(teacher_tok, "empty"),
                  token_bytes(student, "text"), teacher_tok, student)
    assert check.rows == 8 and check.one_to_one >= 40
    assert check.elsewhere == 0 and check.to_emitted >= check.one_to_one // 2
    # the teacher's top-k mass at the groups' first tokens (each at most 1), part of it on shared tokens
    assert 0 < check.mass_shared < check.mass <= check.groups + 1e-6
    same = MapCheck()  # the teacher's own vocabulary, every token shared: all of the mass is the exact term's
    for row in iter_rows(cfg, 100):
        check_map(features(row, teacher_tok, 256), shared_tokens(teacher_tok, teacher_tok, "all"), same,
                  token_bytes(teacher_tok, "empty"), token_bytes(teacher_tok, "text"), teacher_tok, teacher_tok)
    assert same.mass_shared == pytest.approx(same.mass) and same.mass > 0.5 * same.groups
    # without the kinds (the old map) SentencePiece students break where the same bytes have two ids
    old = shared_ids(token_bytes(teacher_tok, "empty"), token_bytes(student, "empty"), teacher_tok.eos_token_id,
                     student.eos_token_id, "runs")
    before = MapCheck()
    for row in iter_rows(cfg, 100):
        check_map(features(row, student, 256), old, before, token_bytes(teacher_tok, "empty"),
                  token_bytes(student, "text"), teacher_tok, student)
    assert (before.elsewhere > 0) == kind.startswith("spm")


def test_xtok_inspect_command(traces, teacher_dir, tmp_path, capsys):
    student = derive_student(str(teacher_dir), tmp_path / "s", layers=[29], tokenizer=str(cached("spm-bpe")))
    cfg = TrainConfig(run_dir=str(traces), teacher="smollm2-135m-instruct", xtok=XtokOptions(),
                      student=StudentConfig(name=str(student)))
    text = inspect(cfg, row=1, rows=8, model=None)
    assert "a broken map" in text and "to another student id in 0 (0.0%)" in text
    assert "'<|im_end|>'(2) -> '</s>'(2)" in text
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"run_dir: {traces}\nteacher: smollm2-135m-instruct\n"
                      f"train: {{student: {{name: {student}}}, objective: kd, xtok: {{method: gold}}}}\n")
    assert main(["xtok-inspect", str(recipe), "--row", "2", "--rows", "8"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| group")]
    assert len(rows) >= 5
    kd = [float(line.split("|")[6].split()[0]) for line in rows]
    assert all(np.isfinite(kd)) and all(x >= 0 for x in kd)
    assert "row totals over" in out
