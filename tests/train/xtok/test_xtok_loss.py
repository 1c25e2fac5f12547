"""The cross-tokenizer loss (train/xtok/loss.py) on made-up vocabularies, against the independent reference in
tests/xtok_oracle.py: stored top-k with k = the vocabulary equals the full-distribution (online) loss, chunked
equals unchunked in values and gradients, the merge arithmetic on a hand-made case, and the numeral risk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xtok_oracle as oracle
from r1distill.train.config import XtokOptions
from r1distill.train.losses import IGNORE
from r1distill.train.xtok.collate import XtokCollator, teacher_groups
from r1distill.train.xtok.loss import chunked_xtok_loss, group_terms, reduce_rows, xtok_loss
from r1distill.train.xtok.vocab import shared_ids

# Teacher: digits one by one, "ab" as one token, 中 split into two byte tokens; id 0 is its eos (0 bytes).
T_BYTES = [b"", b"1", b"2", b"3", b" ", b"a", b"b", b"ab", b"\xe4\xb8", b"\xad", b"+", b"=", b"x"]
# Student: "123" as one token (and the digits alone), " a", 中 whole, "+=" as one token; id 0 its eos.
S_BYTES = [b"", b"123", b"1", b"2", b"3", b" a", b"a", b"b", "中".encode(), b" ", b"+=", b"+", b"=", b"x"]
# (teacher ids, student ids) of two completions: "123 ab中+=" and "x1 b=", the second with a special token
# (0 bytes) at its start and in the middle on the teacher's side, and no student eos (a cut-off completion).
ROWS = [([1, 2, 3, 4, 7, 8, 9, 10, 11, 0], [1, 5, 7, 8, 10, 0]),  # "123 ab中+="
        ([0, 12, 1, 0, 4, 6, 11], [13, 2, 9, 7, 12])]  # "x1 b="
VT, VS = len(T_BYTES), len(S_BYTES)


def _widths(ids, table):
    return np.array([len(table[i]) for i in ids], np.int32)


def test_the_hand_made_rows_spell_the_same_text():
    for t_ids, s_ids in ROWS:
        assert b"".join(T_BYTES[i] for i in t_ids) == b"".join(S_BYTES[i] for i in s_ids)


class _Rows:
    """A stand-in for data.TokenData: the xtok cache's row fields, a 1-token prompt before each completion."""

    def __init__(self, teacher_lp: list[torch.Tensor], k: int):
        self.feats = []
        for (t_ids, s_ids), lp in zip(ROWS, teacher_lp):
            vals, idx = lp.topk(k, -1)
            self.feats.append({"input_ids": np.array([3] + s_ids, np.int32), "prompt_len": 1,
                               "s_nbytes": _widths(s_ids, S_BYTES), "s_ok": True,
                               "t_nbytes": _widths(t_ids, T_BYTES), "t_ok": True,
                               "t_topk_ids": idx.numpy().astype(np.int32), "t_topk_lp": vals.numpy(),
                               "t_lp": lp.gather(-1, torch.tensor(t_ids)[:, None]).squeeze(-1).numpy()})

    def row(self, i):
        return self.feats[i]


def _setup(seed=0, k=VT, rule="all", merge="first"):
    g = torch.Generator().manual_seed(seed)
    teacher_lp = [torch.log_softmax(2 * torch.randn(len(t), VT, generator=g), -1) for t, _ in ROWS]
    shared = shared_ids(T_BYTES, S_BYTES, 0, 0, rule)
    batch = XtokCollator(0, _Rows(teacher_lp, k), merge=merge, shared=shared)([{"idx": 0}, {"idx": 1}])
    T = batch["input_ids"].shape[1]
    logits = 2 * torch.randn(2, T - 1, VS, generator=g)
    return teacher_lp, shared, batch, logits


def _oracle(teacher_lp, shared, logits, labels, opts):
    total = 0.0
    mapping = {i: int(j) for i, j in enumerate(shared) if j >= 0}
    for b, (t_ids, s_ids) in enumerate(ROWS):
        pos = (labels[b] != IGNORE).nonzero().squeeze(-1)
        s_lp = torch.log_softmax(logits[b, pos].double(), -1)
        total = total + oracle.row_kd(teacher_lp[b], t_ids, _widths(t_ids, T_BYTES).tolist(), s_lp, s_ids,
                                      _widths(s_ids, S_BYTES).tolist(), opts.method, opts.merge, mapping,
                                      opts.exact_weight, opts.alm_weight, opts.alm_temperature)
    return total


METHODS = [XtokOptions(method="uld"), XtokOptions(method="uld", merge="last", alm_weight=0.5),
           XtokOptions(method="gold", exact_tokens="all"), XtokOptions(method="gold", alm_weight=1.0, exact_weight=2.0),
           XtokOptions(method="alm", alm_temperature=2.0)]


def test_the_collator_groups_the_hand_made_rows():
    _, _, batch, _ = _setup()
    xt = batch["xtok"]
    # Row 0: "123" | " ab" | 中 | "+=" | eos; row 1: "x" | "1" | " " | "b" | "=" (the student has no eos, so the
    # teacher's trailing one is a factor of "="; its leading and middle special tokens join "x" and "1").
    assert xt["s_group"].tolist() == [0, 1, 1, 2, 3, 4] + [5, 6, 7, 8, 9]
    assert xt["s_base"].tolist() == [0, 1, 3, 4, 5] + [6, 7, 8, 9, 10]
    assert bool(xt["g_valid"].all())


@pytest.mark.parametrize("opts", METHODS, ids=lambda o: f"{o.method}-{o.merge}-alm{o.alm_weight}")
def test_stored_topk_at_k_equal_vocab_is_the_full_distribution_loss(opts):
    """Offline (the stored top-k, k = V_teacher) equals the loss on the teacher's full distributions, which is
    what kd_online computes (atol 1e-5)."""
    teacher_lp, shared, batch, logits = _setup(rule="all", merge=opts.merge)
    labels = batch["labels"][:, 1:]
    out = xtok_loss(logits, labels, batch["xtok"], opts, alpha=0.0)
    n = int((labels != IGNORE).sum())
    ref = _oracle(teacher_lp, shared, logits, labels, opts) / n
    assert float(out["kd"]) == pytest.approx(float(ref), abs=1e-5)
    # and the gradient w.r.t. the student's logits
    x = logits.clone().requires_grad_()
    xtok_loss(x, labels, batch["xtok"], opts, alpha=0.0)["loss"].backward()
    y = logits.clone().double().requires_grad_()
    (_oracle(teacher_lp, shared, y, labels, opts) / n).backward()
    torch.testing.assert_close(x.grad.double(), y.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("opts", METHODS[:4], ids=lambda o: f"{o.method}-{o.merge}-alm{o.alm_weight}")
def test_chunked_equals_unchunked(opts):
    _, _, batch, _ = _setup(seed=1, k=5, rule="runs", merge=opts.merge)
    labels = batch["labels"][:, 1:]
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(*labels.shape, 6, generator=g, requires_grad=True)
    weight = torch.randn(VS, 6, generator=g, requires_grad=True)
    full = xtok_loss(hidden @ weight.t(), labels, batch["xtok"], opts, alpha=0.3, num_items=9)
    gh, gw = torch.autograd.grad(full["loss"], [hidden, weight])
    for chunk in (1, 3, 100):
        got = chunked_xtok_loss(hidden, weight, labels, batch["xtok"], opts, alpha=0.3, num_items=9, chunk_size=chunk)
        for key in ("loss", "ce", "kd"):
            want = float(full[key].detach())
            assert float(got[key].detach()) == pytest.approx(want, rel=1e-6, abs=1e-7), (chunk, key)
        ch, cw = torch.autograd.grad(got["loss"], [hidden, weight])
        torch.testing.assert_close(ch, gh, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(cw, gw, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        assert float(chunked_xtok_loss(hidden, weight, labels, batch["xtok"], opts, alpha=0.3, num_items=9,
                                       chunk_size=2)["loss"]) == pytest.approx(float(full["loss"].detach()), rel=1e-6)


def _hand_case(student_q, rule="all", method="uld"):
    """Teacher "1","2","3" (p(1) = .6, p(2) = .3, p(x) = .1 at the start; then p(2|1) = .5, p(3|12) = .8), a
    student with one token "123" whose distribution is `student_q` over ("123", "1", "x")."""
    t_bytes, s_bytes = [b"", b"1", b"2", b"3", b"x"], [b"", b"123", b"1", b"x"]
    t_ids, s_ids = [1, 2, 3], [1]
    start = torch.tensor([[0.0, 0.6, 0.3, 0.0, 0.1]])
    lp = torch.log(torch.cat([start, torch.tensor([[0, 0.2, 0.5, 0.2, 0.1], [0, 0.1, 0.05, 0.8, 0.05]])]))
    vals, idx = lp.topk(4, -1)
    shared = torch.as_tensor(shared_ids(t_bytes, s_bytes, 0, 0, rule))
    t_group, t_base = torch.zeros(3, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    xt = {"s_group": torch.zeros(1, dtype=torch.long), "s_base": torch.zeros(1, dtype=torch.long),
          **teacher_groups(idx, vals, lp.gather(-1, torch.tensor(t_ids)[:, None]).squeeze(-1), t_group, t_base,
                           shared)}
    logq = torch.log(torch.tensor([[1e-12, *student_q]])).requires_grad_()
    lab, top, at = reduce_rows(logq, torch.tensor(s_ids), torch.zeros(1, dtype=torch.long), xt["t_mapped"], 4,
                           method == "gold")
    return logq, group_terms(lab, top, at, xt, XtokOptions(method=method, exact_tokens=rule), "forward_kl", 0.5)


def test_merge_arithmetic_on_a_hand_made_case():
    # Teacher merged: [.6, .3, .1] x (.5 x .8) = [.24, .12, .04], tail 0; student [.5, .3, .2], one token, no
    # factor. Sorted L1 = |.5 − .24| + |.3 − .12| + |.2 − .04| = 0.60.
    _, terms = _hand_case([0.5, 0.3, 0.2])
    assert float(terms[0].detach()) == pytest.approx(0.60, abs=1e-6)


def test_the_numeral_risk_and_the_runs_rule():
    """With every shared token matched ("all"), the exact term pulls the student's "1" towards the teacher's
    p("1") = 0.6 at the start of "123": it raises the student's digit-by-digit spelling. "runs" leaves "1" out
    (the student's "123" extends it), and the term is then 0."""
    logq, terms = _hand_case([0.5, 0.3, 0.2], rule="all", method="gold")
    (grad,) = torch.autograd.grad(terms.sum(), logq)
    assert float(grad[0, 2]) < 0  # descending the loss raises log q("1")
    shared = shared_ids([b"", b"1", b"2", b"3", b"x"], [b"", b"123", b"1", b"x"], 0, 0, "runs")
    assert shared.tolist() == [0, -1, -1, -1, 3]  # eos and "x" stay shared; the digit "1" does not
    # Left with eos and "x" shared: sorted L1 over the rest, |.5 − .24| + |.3 − .12| = .44, plus the exact term
    # over ("x", everything else): .1·ln(.1/.2) + .9·ln(.9/.8).
    _, terms_runs = _hand_case([0.5, 0.3, 0.2], rule="runs", method="gold")
    assert float(terms_runs[0]) == pytest.approx(0.44 + 0.1 * np.log(0.5) + 0.9 * np.log(0.9 / 0.8), abs=1e-6)
    assert shared_ids([b"", b"1", b"a"], [b"", b"1", b"a", b"ab"], 0, 0, "prefix_closed").tolist() == [0, 1, -1]
    assert shared_ids([b"", b"1", b"a"], [b"", b"1", b"a", b"ab"], 0, 0, "runs").tolist() == [0, 1, 2]


def test_same_vocabulary_and_identical_model_gives_zero():
    """One tokenizer on both sides, the student's distributions the teacher's: every term is 0."""
    lp = torch.log_softmax(torch.randn(4, 6), -1)
    ids = [1, 2, 3, 0]
    t_group, t_base = torch.arange(4), torch.arange(4)
    vals, idx = lp.topk(6, -1)
    shared = torch.arange(6)
    xt = {"s_group": torch.arange(4), "s_base": torch.arange(4),
          **teacher_groups(idx, vals, lp.gather(-1, torch.tensor(ids)[:, None]).squeeze(-1), t_group, t_base, shared)}
    for opts in METHODS:
        lab = lp.gather(-1, torch.tensor(ids)[:, None]).squeeze(-1)
        mapped = xt["t_mapped"]
        keep = lp.masked_fill(torch.zeros_like(lp).scatter_add_(-1, mapped.clamp_min(0), (mapped >= 0).float()) > 0,
                              -torch.inf) if opts.method == "gold" else lp
        terms = group_terms(lab, keep.topk(6, -1).values, lp.gather(-1, mapped.clamp_min(0)), xt, opts, "forward_kl",
                            0.5)
        assert float(terms.abs().max()) < 1e-5, opts


def test_offline_at_k_equal_vocab_equals_the_online_teacher_path():
    """The same tiny teacher model, two ways: its log-probs stored as a full top-k (k = V_teacher, float32:
    offline kd) and computed per batch by `online_teacher` over its own tokens (kd_online, k = 0: the whole
    vocabulary). The collated teacher tensors and the loss agree (atol 1e-5)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from r1distill.train.xtok.collate import online_teacher

    torch.manual_seed(0)
    teacher = LlamaForCausalLM(LlamaConfig(vocab_size=VT, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, num_key_value_heads=1)).eval()
    prompt = [5]
    online_rows, teacher_lp = [], []
    for t_ids, s_ids in ROWS:
        x = torch.tensor([prompt + t_ids])
        with torch.no_grad():
            teacher_lp.append(torch.log_softmax(teacher(x).logits[0, len(prompt) - 1:-1].float(), -1))  # (n, VT)
        online_rows.append({"input_ids": np.array([3] + s_ids, np.int32), "prompt_len": 1,
                            "s_nbytes": _widths(s_ids, S_BYTES), "s_ok": True, "t_nbytes": _widths(t_ids, T_BYTES),
                            "t_ok": True, "t_input_ids": np.array(prompt + t_ids, np.int32),
                            "t_prompt_len": len(prompt)})
    shared = shared_ids(T_BYTES, S_BYTES, 0, 0, "all")
    offline = XtokCollator(0, _Rows(teacher_lp, VT), shared=shared)([{"idx": 0}, {"idx": 1}])
    rows = _Rows(teacher_lp, VT)
    rows.feats = online_rows
    online = XtokCollator(0, rows, shared=shared, teacher_pad=0)([{"idx": 0}, {"idx": 1}])
    xt = dict(online["xtok"])
    xt.update(online_teacher(teacher, teacher.get_output_embeddings().weight.detach(), xt.pop("online"), 0, 3,
                             torch.as_tensor(shared)))
    for key in ("t_topk_lp", "t_rest", "t_chunk"):
        torch.testing.assert_close(xt[key], offline["xtok"][key], atol=1e-5, rtol=1e-5)
    assert torch.equal(xt["g_valid"], offline["xtok"]["g_valid"])
    labels = offline["labels"][:, 1:]
    logits = 2 * torch.randn(2, labels.shape[1], VS, generator=torch.Generator().manual_seed(3))
    for opts in METHODS:
        want = xtok_loss(logits, labels, offline["xtok"], opts, alpha=0.3)
        got = xtok_loss(logits, labels, xt, opts, alpha=0.3)
        assert float(got["kd"]) == pytest.approx(float(want["kd"]), abs=1e-5), opts
        assert float(got["loss"]) == pytest.approx(float(want["loss"]), abs=1e-5), opts
