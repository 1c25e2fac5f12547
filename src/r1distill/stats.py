"""Statistics shared by eval (pass@1's interval) and the report (paired intervals): nearest-rank percentiles and
the seeded percentile bootstrap of a mean."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank q-th percentile (0 < q <= 100): the smallest value with at least q% of the values <= it."""
    if not values:
        raise ValueError("percentile of an empty list")
    ranked = sorted(values)
    # round off float noise first: 100 * (1 - 0.95) / 2 is 2.5000000000000022, whose rank of 1000 must stay 25
    return ranked[max(1, math.ceil(round(q * len(ranked) / 100, 9))) - 1]


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, level: float = 0.95, seed: int = 0) -> list[float]:
    """Percentile-bootstrap confidence interval [lo, hi] for the mean of ``values``: resample them with
    replacement ``resamples`` times and take the nearest-rank (1 - level)/2 and (1 + level)/2 percentiles
    of the resampled means. Seeded, so the same values always give the same interval."""
    if not values:
        raise ValueError("bootstrap of an empty list")
    rng = random.Random(seed)
    means = [sum(rng.choices(values, k=len(values))) / len(values) for _ in range(resamples)]
    tail = 100 * (1 - level) / 2
    return [percentile(means, tail), percentile(means, 100 - tail)]


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of ``values`` (sample standard deviation / sqrt(n)); 0.0 below two values,
    where it is undefined (and JSON has no NaN)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) >= 2 else 0.0
