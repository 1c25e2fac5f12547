"""The compact top-k format (q8) on real teacher top-k: error bounds, KL error, bytes, and the reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r1distill.backends import SamplingConfig
from r1distill.backends.hf import HFBackend
from r1distill.data import traces
from r1distill.data.problems import SourceConfig, load_problems
from r1distill.data.traces import (
    Q8_MAX_DELTA,
    TRACE_SCHEMA,
    check_schema,
    decode_topk,
    dequantize_q8,
    q8_error_bound,
    quantize_q8,
    read_table,
    rows_to_table,
    write_table_atomic,
)
from r1distill.generate_dir import disk_usage
from r1distill.prompts import r1_messages

K = 20


@pytest.fixture(scope="module")
def rows(teacher_dir) -> list[dict]:
    """Completions of the built-in teacher with its float32 top-20 (2 problems x 2 samples)."""
    backend = HFBackend(str(teacher_dir), device="cpu", batch_size=4)
    problems = load_problems(SourceConfig(num_problems=2))
    outs = backend.generate([r1_messages(p["problem"]) for p in problems],
                            SamplingConfig(n=2, max_new_tokens=24, temperature=1.0, logprobs=K, seed=3))
    return [{"prompt_id": f"p{i}", "sample_idx": s, "completion_ids": c.token_ids, "num_tokens": len(c.token_ids),
             "topk_ids": c.topk_ids, "topk_logprobs": c.topk_logprobs}
            for i, cs in enumerate(outs) for s, c in enumerate(cs)]


def _renorm_kl(ref: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(N, k) -> (N,) KL(softmax(ref) || softmax(other)) over the k entries, in float64."""
    lp = torch.log_softmax(torch.as_tensor(ref, dtype=torch.float64), -1)
    lq = torch.log_softmax(torch.as_tensor(other, dtype=torch.float64), -1)
    return (lp.exp() * (lp - lq)).sum(-1).numpy()


def test_q8_round_trip_error_is_within_its_bound(rows):
    lp = np.concatenate([r["topk_logprobs"] for r in rows])  # (N, 20) float32, sorted by rank
    assert lp.shape[0] > 40 and (np.diff(lp, axis=1) <= 0).all()
    top1, codes = quantize_q8(lp)
    back = dequantize_q8(top1, codes)
    inside = lp.max(1, keepdims=True) - lp <= Q8_MAX_DELTA
    assert inside.mean() > 0.95
    err = np.abs(back - lp)
    assert (err[inside] <= q8_error_bound(lp)[inside]).all()
    assert (back[~inside] >= lp[~inside]).all()  # clipped at 20 nats below the top-1: probability ratio < 2e-9
    # Top-1 entries are exact up to float16; the 2nd..5th, where most of the mass is, within 0.006 * (delta + 1).
    np.testing.assert_allclose(back[:, 0], lp[:, 0], rtol=2.0 ** -11, atol=0)
    delta = lp[:, :1] - lp[:, 1:5]
    assert (err[:, 1:5] <= 0.0062 * (delta + 1) + np.abs(lp[:, :1]) * 2.0 ** -11 + 1e-5).all()


def test_q8_kl_error_against_the_exact_topk(rows):
    lp = np.concatenate([r["topk_logprobs"] for r in rows])
    q8 = dequantize_q8(*quantize_q8(lp))
    kl = _renorm_kl(lp, q8)
    # Hoeffding's lemma: KL(p || q) = log E_p[e^eps] - E_p[eps] <= (max eps - min eps)^2 / 8 for q ∝ p e^eps;
    # the renormalised q8 errors eps are within +-bound (the top-1's float16 error cancels out).
    inside = (lp.max(1, keepdims=True) - lp <= Q8_MAX_DELTA).all(1)
    grid = q8_error_bound(lp) - np.abs(lp.max(1, keepdims=True)) * 2.0 ** -11
    assert (kl[inside] <= (2 * grid.max(1)[inside]) ** 2 / 8 + 1e-9).all()
    # Measured on the teacher (scripts/bench_generate.py: about 2e-5 nats mean, 6e-5 max per token).
    assert kl.mean() < 5e-5 and kl.max() < 3e-4
    fp16 = _renorm_kl(lp, lp.astype(np.float16).astype(np.float32))
    assert fp16.mean() < kl.mean()  # the exact format is more precise, as it should be


def test_q8_shards_read_back_as_float_logprobs_and_are_smaller(rows, tmp_path):
    sizes = {}
    for fmt in ("exact", "q8"):
        table = rows_to_table(rows, topk_format=fmt)
        assert ("topk_lp_q8" in table.column_names) == (fmt == "q8")
        path = write_table_atomic(table, tmp_path / fmt / "shard-00000.parquet")
        assert traces.file_metadata(path)["r1distill.topk_format"] == fmt
        sizes[fmt] = disk_usage([path])[1]  # compressed bytes of the top-k columns
    exact, q8 = read_table(tmp_path / "exact"), read_table(tmp_path / "q8")
    assert q8.schema.field("topk_logprobs").type == TRACE_SCHEMA.field("topk_logprobs").type
    assert q8.column_names == exact.column_names
    assert q8.column("topk_ids").equals(exact.column("topk_ids"))
    for r, e, q in zip(rows, exact.column("topk_logprobs").to_pylist(), q8.column("topk_logprobs").to_pylist()):
        e, q, ref = np.asarray(e, np.float32), np.asarray(q, np.float32), r["topk_logprobs"]
        # Both went through float16 at the end; q8 adds at most its bound.
        assert (np.abs(q - ref) <= q8_error_bound(ref) + np.abs(ref) * 2.0 ** -11).all()
        assert (np.abs(e - ref) <= np.abs(ref) * 2.0 ** -11 + 1e-7).all()
    assert sizes["q8"] < 0.8 * sizes["exact"]  # 43.3 / 66.7 B per token at k=20 on 2k tokens (bench_generate.py)
    # Column selection works per format, in the order asked.
    sub = read_table(tmp_path / "q8", columns=["topk_logprobs", "prompt_id"])
    assert sub.column_names == ["topk_logprobs", "prompt_id"] and sub.column("topk_logprobs").equals(
        q8.column("topk_logprobs"))


def test_decode_keeps_nulls_and_minus_infinity():
    lp = np.array([[-0.1, -2.0, -np.inf], [-np.inf, -np.inf, -np.inf]], np.float32)
    rows = [{"prompt_id": "a", "topk_ids": np.array([[1, 2, -1], [-1, -1, -1]]), "topk_logprobs": lp},
            {"prompt_id": "b", "topk_ids": np.zeros((0, 3)), "topk_logprobs": np.zeros((0, 3))}]
    table = decode_topk(rows_to_table(rows, topk_format="q8"))
    got = table.column("topk_logprobs").to_pylist()
    assert got[1] == [] and np.isneginf(got[0][0][2]) and all(np.isneginf(x) for x in got[0][1])
    assert abs(got[0][0][1] + 2.0) <= q8_error_bound(lp[:1, :2])[0, 1] + 2.0 * 2.0 ** -11
    nulls = decode_topk(rows_to_table([{"prompt_id": "c"}, {"prompt_id": "d"}], topk_format="q8"))
    assert nulls.column("topk_logprobs").to_pylist() == [None, None]
    check_schema(nulls, TRACE_SCHEMA, "decoded")


def test_list_offsets_past_int32_raise_instead_of_wrapping():
    from r1distill.data.traces import INT32_MAX, list_offsets

    # The old arithmetic (int32 throughout) wrapped without a word: 2^31 values became a negative offset.
    lengths = np.array([2**30, 2**30, 5], dtype=np.int64)
    old = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    assert old[2] < 0
    with pytest.raises(OverflowError, match="more than int32 offsets hold"):
        list_offsets(lengths)
    # Top-k: 107,374,183 tokens x k = 20 is one value past the limit; a token fewer fits exactly below it.
    with pytest.raises(OverflowError):
        list_offsets(np.ones(1, np.int64) * 107_374_183, width=20)
    assert list_offsets(np.array([107_374_182]), width=20)[-1] == 2_147_483_640 <= INT32_MAX
    edge = list_offsets(np.array([2**30, 2**30 - 1]))
    assert edge.dtype == np.int32 and edge.tolist() == [0, 2**30, INT32_MAX]
