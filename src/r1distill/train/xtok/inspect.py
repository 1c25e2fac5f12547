"""`r1distill xtok-inspect`: look at a teacher/student tokenizer pair the way cross-tokenizer KD sees it, before
spending a run on it.

For one training row it shows both tokenizations of the completion, the byte-span groups (align.py), for each
group the teacher's most likely tokens at its base position and the student id each maps to (vocab.shared_tokens:
"—" when the vocabularies do not share it), and, with the student model, each group's KD terms (loss.py:
sorted, exact, alm) beside the student's CE there. Over many rows it counts the one-to-one groups (one token on
each side, the same bytes): there the teacher's emitted token must map to the token the student emitted, and a
group where it maps elsewhere is a broken map (a byte-fallback "<0x35>" taken for the student's "5" looked
exactly like this). The same code as training builds the batch (data.py's student tokens, collate.XtokCollator), so
what it shows is what the loss gets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from r1distill.config import UserError
from r1distill.data.traces import decode_topk, parquet_file
from r1distill.models import load_tokenizer
from r1distill.prompts import render_prompt
from r1distill.tokenbytes import ADDED, BYTE_FALLBACK, PIECE, token_bytes, token_kinds
from r1distill.train import data
from r1distill.train.config import TrainConfig, XtokOptions
from r1distill.train.xtok.align import align
from r1distill.train.xtok.data import own_tokens
from r1distill.train.xtok.vocab import shared_tokens, stop_ids

COLUMNS = ["prompt", "completion", "finish_reason", "completion_ids", "token_nbytes", "token_logprobs",
           "token_bytes_ok", "topk_ids", "topk_logprobs", "topk_lp_top1", "topk_lp_q8"]
KIND_NAMES = {ADDED: "added", PIECE: "piece", BYTE_FALLBACK: "byte-fallback"}


@dataclass
class MapCheck:
    """One-to-one groups with the same bytes on both sides, by where the teacher's emitted token maps."""

    rows: int = 0
    groups: int = 0
    one_to_one: int = 0
    to_emitted: int = 0  # mapped to the very token the student emitted: the map is right here
    elsewhere: int = 0  # mapped to another student id with the same bytes: a broken map
    unshared: int = 0  # left out of the exact term (no such student token, or the shared_tokens rule)
    mass: float = 0.0  # the teacher's top-k probability at each group's first token, summed over groups
    mass_shared: float = 0.0  # the part of it on shared tokens: what the exact term sees by identity
    examples: list[str] = field(default_factory=list)  # the first few `elsewhere` cases


def student_tokenizer(cfg: TrainConfig):
    """The student's tokenizer as training gets it (a derived student's: `student.tokenizer` with the source's chat
    template when it has none, as models.derive_student saves it)."""
    s = cfg.student
    source = cfg.teacher if s.derive_from == "teacher" else s.derive_from
    tok = load_tokenizer(s.name or s.tokenizer or source)
    if not s.name and s.tokenizer and not tok.chat_template:
        tok.chat_template = load_tokenizer(source).chat_template
    return tok


def _shards(cfg: TrainConfig) -> list[Path]:
    return data.input_shards(cfg.inp)


def read_row(cfg: TrainConfig, index: int) -> dict:
    """Row `index` of the train input (curated or scored shards, in order) as a python dict, top-k decoded."""
    if index < 0:
        raise UserError(f"--row must be >= 0, got {index}")
    seen = 0
    for shard in _shards(cfg):
        pf = parquet_file(shard)
        n = pf.metadata.num_rows
        if index < seen + n:
            cols = [c for c in COLUMNS if c in pf.schema_arrow.names]
            if "topk_ids" not in cols or "token_nbytes" not in cols:
                raise UserError(f"{shard}: cross-tokenizer KD reads the teacher's top-k and byte spans (topk_ids, "
                                "token_nbytes); these traces have none: generate or score them first")
            table = decode_topk(pa.Table.from_batches([b for b in pf.iter_batches(columns=cols)]))
            row = table.slice(index - seen, 1).to_pylist()[0]
            row["where"] = f"{shard} row {index - seen}"
            return row
        seen += n
    raise UserError(f"--row {index}: the train input {cfg.inp} has {seen} rows")


def iter_rows(cfg: TrainConfig, limit: int):
    """The first `limit` rows of the train input, one dict at a time."""
    left = limit
    for shard in _shards(cfg):
        pf = parquet_file(shard)
        cols = [c for c in COLUMNS if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=256, columns=cols):
            for row in decode_topk(pa.Table.from_batches([batch])).to_pylist():
                if left <= 0:
                    return
                left -= 1
                yield row


def features(row: dict, student_tok, max_length: int) -> dict:
    """The row as XtokCollator's features (what data.py writes for training), from its stored columns."""
    stop = row["finish_reason"] == "stop"
    (s_ids,), (s_w,), (s_ok,) = own_tokens(student_tok, [row["completion"]], [stop])
    prompt = render_prompt(student_tok, row["prompt"])
    ids = (prompt + s_ids)[:max_length]
    return {"input_ids": np.asarray(ids, np.int64), "prompt_len": len(prompt), "s_ids": s_ids,
            "s_nbytes": s_w, "s_ok": s_ok, "t_ids": np.asarray(row["completion_ids"], np.int64),
            "t_nbytes": np.asarray(row["token_nbytes"], np.int64), "t_ok": bool(row["token_bytes_ok"]),
            "t_topk_ids": np.asarray(row["topk_ids"], np.int64),
            "t_topk_lp": np.asarray(row["topk_logprobs"], np.float32),
            "t_lp": np.asarray(row["token_logprobs"], np.float32)}


def check_map(f: dict, shared: np.ndarray, check: MapCheck, t_table: list[bytes], s_table: list[bytes],
              teacher_tok, student_tok) -> list[str]:
    """Add one row's one-to-one groups to `check`; returns the per-group verdicts ("ok", "ELSEWHERE", "unshared",
    "" for groups that are not one-to-one)."""
    check.rows += 1
    if not (f["s_ok"] and f["t_ok"]):
        return []
    a = align(f["t_nbytes"], f["s_nbytes"])
    verdicts = []
    for g in range(a.num_groups):
        t_idx, s_idx = np.flatnonzero(a.t_group == g), np.flatnonzero(a.s_group == g)
        check.groups += 1
        ids, lps = f["t_topk_ids"][t_idx[0]], f["t_topk_lp"][t_idx[0]]
        p = np.where((ids >= 0) & np.isfinite(lps), np.exp(lps), 0.0)
        check.mass += float(p.sum())
        check.mass_shared += float(p[shared[ids.clip(0)] >= 0].sum())
        if len(t_idx) != 1 or len(s_idx) != 1:
            verdicts.append("")
            continue
        t, s = int(f["t_ids"][t_idx[0]]), int(f["s_ids"][s_idx[0]])
        if t_table[t] != s_table[s] and t_table[t]:  # same span, different bytes: cannot happen when spans hold
            verdicts.append("")
            continue
        check.one_to_one += 1
        m = int(shared[t])
        if m == s:
            check.to_emitted += 1
            verdicts.append("ok")
        elif m < 0:
            check.unshared += 1
            verdicts.append("unshared")
        else:
            check.elsewhere += 1
            verdicts.append("ELSEWHERE")
            if len(check.examples) < 5:
                check.examples.append(f"teacher {_tok(teacher_tok, t)} -> student {_tok(student_tok, m)}, but the "
                                      f"student writes {_tok(student_tok, s)}")
    return verdicts


def _tok(tokenizer, i: int) -> str:
    return f"{tokenizer.convert_ids_to_tokens(int(i))!r}({int(i)})"


def vocab_summary(teacher_tok, student_tok, shared: np.ndarray) -> list[str]:
    """What the shared-token map holds: counts by the kind of student token, the stop tokens, the duplicates."""
    kinds = token_kinds(student_tok)
    hit = shared[shared >= 0]
    by_kind = {name: int((kinds[hit] == k).sum()) for k, name in KIND_NAMES.items()}
    s_table = token_bytes(student_tok, "empty")
    dup: dict[bytes, int] = {}
    for b in s_table:
        if b:
            dup[b] = dup.get(b, 0) + 1
    n_dup = sum(1 for v in dup.values() if v > 1)
    stops = ", ".join(f"{_tok(teacher_tok, t)} -> {_tok(student_tok, shared[t])}" for t in stop_ids(teacher_tok))
    t_with_bytes = sum(1 for b in token_bytes(teacher_tok, "empty") if b)
    return [f"teacher vocabulary {len(teacher_tok)} ids ({t_with_bytes} with bytes), student {len(student_tok)}",
            f"shared (exact term): {len(hit)} teacher ids -> student "
            + ", ".join(f"{v} {k}" for k, v in by_kind.items()),
            f"student byte strings with several ids: {n_dup} (the map takes the one the tokenizer writes)",
            f"stop tokens: {stops or '(none)'}"]


def model_terms(model, batch: dict, opts: XtokOptions, alpha: float, divergence: str, beta: float) -> dict:
    """Per group (G,): the KD terms (total, sorted, exact, alm) and the student's CE over the group's tokens."""
    import torch

    from r1distill.train.losses import IGNORE
    from r1distill.train.xtok.loss import group_terms, reduce_rows

    xt = batch["xtok"]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        rows = (labels != IGNORE).nonzero(as_tuple=True)
        log_q = torch.log_softmax(logits[rows], -1)
        mapped = xt["t_mapped"] if opts.method == "gold" else None
        K = min(xt["t_topk_lp"].shape[-1], log_q.shape[-1])
        lab, top, at = reduce_rows(log_q, labels[rows], xt["s_base"], mapped, K, opts.method == "gold")
        terms = lambda o: group_terms(lab, top, at, xt, o, divergence, beta)  # noqa: E731
        total = terms(opts)
        no_alm = terms(dataclasses.replace(opts, alm_weight=0.0)) if opts.method != "alm" else torch.zeros_like(total)
        sorted_ = (terms(dataclasses.replace(opts, alm_weight=0.0, exact_weight=0.0))
                   if opts.method != "alm" else torch.zeros_like(total))
        G = xt["s_base"].shape[0]
        member = xt["s_group"] >= 0
        ce = torch.zeros(G, dtype=lab.dtype).index_add(0, xt["s_group"][member], -lab[member])
    return {"total": total, "sorted": sorted_, "exact": no_alm - sorted_, "alm": total - no_alm, "ce": ce,
            "loss": alpha * ce.sum() + (1 - alpha) * total.sum(), "tokens": int(rows[0].numel())}


def _bytes(b: bytes) -> str:
    return repr(b.decode("utf-8", "backslashreplace"))


def inspect(cfg: TrainConfig, row: int = 0, rows: int = 200, model=None, top: int = 3) -> str:
    """The report (module doc) for the train config `cfg`: row `row` in full, the map check over `rows` rows."""
    from r1distill.train.xtok.collate import XtokCollator

    opts = cfg.xtok or XtokOptions()
    teacher_tok, student_tok = load_tokenizer(cfg.teacher), student_tokenizer(cfg)
    shared = shared_tokens(teacher_tok, student_tok, opts.exact_tokens)
    t_table, s_table = token_bytes(teacher_tok, "empty"), token_bytes(student_tok, "text")
    out = [f"# xtok-inspect: teacher {cfg.teacher}, student tokenizer "
           f"{cfg.student.name or cfg.student.tokenizer or 'the teacher’s'} (method {opts.method}, exact_tokens "
           f"{opts.exact_tokens}, alpha {cfg.loss.alpha})", *vocab_summary(teacher_tok, student_tok, shared), ""]

    check = MapCheck()
    for r in iter_rows(cfg, rows):
        check_map(features(r, student_tok, cfg.max_length), shared, check, t_table, s_table, teacher_tok, student_tok)
    share = lambda n: f"{n} ({n / max(check.one_to_one, 1):.1%})"  # noqa: E731
    out += [f"## Map check over the first {check.rows} rows",
            f"{check.groups} groups, {check.one_to_one} one-to-one with the same bytes on both sides; there the "
            f"teacher's token maps to the student's own token in {share(check.to_emitted)}, to another student id "
            f"in {share(check.elsewhere)} (a broken map), to none in {share(check.unshared)}",
            *[f"  broken: {e}" for e in check.examples],
            f"the teacher's top-k probability at the groups' first tokens: "
            f"{check.mass_shared / max(check.mass, 1e-9):.1%} on shared tokens (the exact term, token by token); the "
            "rest reaches the student only through the sorted term, which does not say which token is which, and CE "
            "(README, Cross-tokenizer KD: on one real pair KD beat re-tokenized SFT, on another it lost; train both "
            "variants on yours)", ""]

    r = read_row(cfg, row)
    f = features(r, student_tok, cfg.max_length)
    verdicts = check_map(f, shared, MapCheck(), t_table, s_table, teacher_tok, student_tok)
    out += [f"## Row {row} ({r['where']}, finish_reason {r['finish_reason']})",
            f"completion: {r['completion']!r}",
            f"teacher: {len(f['t_ids'])} tokens, bytes ok {f['t_ok']}; student: {len(f['s_ids'])} tokens, bytes ok "
            f"{f['s_ok']}"]
    if not (f["s_ok"] and f["t_ok"]):
        out.append("this row's tokens do not make its bytes on one side: it trains on CE only")
        return "\n".join(out)
    a = align(f["t_nbytes"], f["s_nbytes"], opts.merge)
    batch = XtokCollator(student_tok.pad_token_id or 0, _OneRow(f), opts.merge, shared, cfg.loss.topk)([{"idx": 0}])
    terms = model_terms(model, batch, opts, cfg.loss.alpha, cfg.loss.divergence, cfg.loss.beta) if model else None
    kept = batch["xtok"]["s_base"].shape[0]
    if kept < a.num_groups:
        out.append(f"max_length {cfg.max_length} cuts the completion: {kept} of {a.num_groups} groups kept")
    head = "| group | teacher tokens | student tokens | teacher top at base -> student id | map |"
    head += " KD (sorted / exact / alm) | student CE |" if terms else ""
    out += ["", head, "|" + "---|" * (head.count("|") - 1)]
    for g in range(a.num_groups):
        t_idx, s_idx = np.flatnonzero(a.t_group == g), np.flatnonzero(a.s_group == g)
        t_str = " ".join(f"{_bytes(t_table[int(f['t_ids'][i])])}" if t_table[int(f["t_ids"][i])] else
                         teacher_tok.convert_ids_to_tokens(int(f["t_ids"][i])) for i in t_idx)
        s_str = " ".join(student_tok.convert_ids_to_tokens(int(f["s_ids"][i])) for i in s_idx if i < len(f["s_ids"]))
        b = int(a.t_base[g])
        tops = []
        for j in np.argsort(-f["t_topk_lp"][b])[:top]:
            tid, lp = int(f["t_topk_ids"][b, j]), float(f["t_topk_lp"][b, j])
            if tid < 0 or not np.isfinite(lp):
                continue
            m = int(shared[tid])
            target = student_tok.convert_ids_to_tokens(m) if m >= 0 else "—"
            tops.append(f"{_bytes(t_table[tid]) if t_table[tid] else teacher_tok.convert_ids_to_tokens(tid)} "
                        f"{np.exp(lp):.2f} -> {target}")
        line = f"| {g} | {t_str} | {s_str} | {'; '.join(tops)} | {verdicts[g] if g < len(verdicts) else ''} |"
        if terms and g < kept:
            line += (f" {terms['total'][g]:.3f} ({terms['sorted'][g]:.3f} / {terms['exact'][g]:.3f} / "
                     f"{terms['alm'][g]:.3f}) | {terms['ce'][g]:.3f} |")
        out.append(line)
    if terms:
        n = max(terms["tokens"], 1)
        out += ["", f"row totals over {terms['tokens']} student tokens: KD {float(terms['total'].sum()) / n:.4f}, "
                f"CE {float(terms['ce'].sum()) / n:.4f}, loss {float(terms['loss']) / n:.4f} (per token, as train "
                "logs them)"]
    return "\n".join(out)


class _OneRow:
    """XtokCollator's `rows` for one features dict."""

    def __init__(self, f: dict):
        self.f = f

    def row(self, _r: int) -> dict:
        return self.f


def load_student(cfg: TrainConfig, path: str | None):
    """The student model whose terms are shown: `path`, else the run's starting point (derived if needed)."""
    from r1distill.models import load_model
    from r1distill.train.run import prepare_student

    return load_model(path or prepare_student(cfg), dtype="float32", device="cpu")
