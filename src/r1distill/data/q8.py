"""The q8 top-k codec: 8-bit log-prob codes on a logarithmic grid below each token's top-1 (the format is
described in r1distill.data.traces, which re-exports these names)."""

from __future__ import annotations

import numpy as np

Q8_MAX_DELTA = 20.0  # nats below the top-1 that the q8 grid spans
Q8_LEVELS = 254  # codes 0..254 on the grid; Q8_NEG_INF for -inf entries (unmapped tokens, masked ones)
Q8_NEG_INF = 255
Q8_LOG_SPAN = float(np.log1p(Q8_MAX_DELTA))  # the grid is uniform in log1p(delta)


def quantize_q8(logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) log-probs -> ((N,) float16 top-1 log-probs, (N, k) uint8 grid codes); see the module doc.

    Entries need not be sorted; -inf entries (and rows whose entries are all -inf) keep -inf."""
    lp = np.asarray(logprobs, dtype=np.float32)
    top1 = lp.max(axis=-1) if lp.shape[-1] else np.zeros(lp.shape[:-1], np.float32)
    finite = np.isfinite(lp) & np.isfinite(top1)[:, None]
    with np.errstate(invalid="ignore"):  # -inf - -inf: masked out by `finite`
        delta = np.clip(np.where(finite, top1[:, None] - lp, 0.0), 0.0, Q8_MAX_DELTA)
    codes = np.rint(np.log1p(delta) / Q8_LOG_SPAN * Q8_LEVELS)
    codes = np.where(finite, codes, Q8_NEG_INF).astype(np.uint8)
    return top1.astype(np.float16), codes


def dequantize_q8(top1: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The inverse of `quantize_q8`, as (N, k) float32."""
    grid = np.expm1(np.arange(256, dtype=np.float64) / Q8_LEVELS * Q8_LOG_SPAN).astype(np.float32)
    grid[Q8_NEG_INF] = np.inf
    return np.asarray(top1, dtype=np.float32)[:, None] - grid[codes]


def q8_error_bound(logprobs: np.ndarray) -> np.ndarray:
    """Per-entry bound on |dequantize_q8(quantize_q8(lp)) - lp| for finite entries at most Q8_MAX_DELTA below
    the top-1: half a grid step in log1p(delta) is a factor exp(h) on (delta + 1), plus the float16 rounding
    of the top-1 (2^-11 relative) and float32 slack."""
    lp = np.asarray(logprobs, dtype=np.float32)
    top1 = lp.max(axis=-1, keepdims=True)
    delta = np.clip(top1 - lp, 0.0, Q8_MAX_DELTA)
    half_step = Q8_LOG_SPAN / Q8_LEVELS / 2
    return (delta + 1) * np.expm1(half_step) + np.abs(top1) * 2.0 ** -11 + 1e-5


def row_diff(codes: np.ndarray) -> np.ndarray:
    """Codes -> differences mod 256 along each row (the first entry against 0)."""
    return np.diff(codes, axis=-1, prepend=np.zeros_like(codes[..., :1]))  # uint8 arithmetic wraps mod 256


def row_undiff(diffs: np.ndarray) -> np.ndarray:
    return np.cumsum(diffs, axis=-1, dtype=np.uint8)  # mod 256 again
