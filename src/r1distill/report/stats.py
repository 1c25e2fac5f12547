"""Paired bootstrap over problems: the confidence of a difference (or ratio) between two models' accuracies.

Two models scored on the same problems are paired: a problem that is hard for one is usually hard for the
other, so resampling problems (not each model on its own) gives the interval of the difference that the
per-model CIs overstate. The percentiles are nearest-rank, as `r1distill.stats.bootstrap_ci` takes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from r1distill.stats import percentile

CHUNK = 256  # resamples drawn at once (bounds memory at CHUNK x problems indices)


def paired(a: dict[str, float], b: dict[str, float]) -> tuple[list[float], list[float]]:
    """Per-problem values of two models on the problems both have, in `a`'s order."""
    ids = [i for i in a if i in b]
    return [a[i] for i in ids], [b[i] for i in ids]


def _paired_bootstrap(a: Sequence[float], b: Sequence[float], stat: Callable[[np.ndarray, np.ndarray], np.ndarray],
                      resamples: int, level: float, seed: int) -> tuple[list[float], float]:
    """(the statistic on each resample where it is defined, on the data itself)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"a paired bootstrap needs two equally long, non-empty lists, got {len(a)} and {len(b)}")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError("level must be in (0, 1) and resamples >= 1")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    out: list[float] = []
    for start in range(0, resamples, CHUNK):
        idx = rng.integers(0, len(x), size=(min(CHUNK, resamples - start), len(x)))  # (R, n) problem ids
        with np.errstate(divide="ignore", invalid="ignore"):
            v = stat(x[idx].mean(axis=1), y[idx].mean(axis=1))
        out += [float(t) for t in v if math.isfinite(t)]
    with np.errstate(divide="ignore", invalid="ignore"):
        point = float(stat(np.array([x.mean()]), np.array([y.mean()]))[0])
    return out, point


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], resamples: int = 2000, level: float = 0.95,
                          seed: int = 0) -> tuple[float, float, float]:
    """(mean(a) - mean(b), lo, hi): the difference of two models' accuracies with its percentile-bootstrap CI at
    `level`, resampling problems with replacement (a[i] and b[i] are the two models' mean correctness on
    problem i). Seeded: the same lists give the same interval."""
    diffs, point = _paired_bootstrap(a, b, lambda x, y: x - y, resamples, level, seed)
    tail = 100 * (1 - level) / 2
    return point, percentile(diffs, tail), percentile(diffs, 100 - tail)


def paired_bootstrap_ratio(a: Sequence[float], b: Sequence[float], resamples: int = 2000, level: float = 0.95,
                           seed: int = 0) -> tuple[float | None, float | None, float | None]:
    """(mean(a) / mean(b), lo, hi), e.g. the share of the teacher's pass@1 (b) a student (a) recovers, with a
    paired bootstrap CI; resamples where mean(b) is 0 have no ratio and are left out. (None, None, None) when
    mean(b) is 0: there is nothing to recover."""
    if not any(b):
        return None, None, None
    ratios, point = _paired_bootstrap(a, b, lambda x, y: x / y, resamples, level, seed)
    tail = 100 * (1 - level) / 2
    return point, percentile(ratios, tail), percentile(ratios, 100 - tail)
