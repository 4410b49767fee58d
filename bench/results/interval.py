"""The distribution-free confidence interval of a median (from order statistics, as a sign test gives it):
it assumes nothing about the shape of timing noise, only that rounds are independent draws."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95  # the interval every row states


@dataclass(frozen=True)
class Interval:
    """[low, high] around a median, and the probability it covers the true median (below `confidence`
    when there were too few rounds for it: with n rounds [min, max] covers 1 - 2**(1 - n) at best)."""

    median: float
    low: float
    high: float
    coverage: float

    @property
    def relative_halfwidth(self) -> float:
        """Half the interval's width as a share of the median: 0.02 is "median +- 2 %"."""
        return (self.high - self.low) / 2 / self.median if self.median > 0 else math.inf


def _log_binomial_pmf(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)


def rank_bounds(n: int, confidence: float = CONFIDENCE) -> tuple[int, float]:
    """The largest 1-based rank j (the narrowest interval) whose order statistics [x_(j), x_(n+1-j)] still
    cover the median with at least `confidence`, and their coverage 1 - 2 P(B <= j - 1), B ~ Binomial(n, 1/2);
    j = 1 (the range) with its lower coverage when n is too small for `confidence`."""
    tail_allowed = (1 - confidence) / 2
    tail, j = 0.0, 0  # tail = P(B <= j - 1)
    while j < n // 2:
        step = math.exp(_log_binomial_pmf(n, j))
        if tail + step > tail_allowed:
            break
        tail += step
        j += 1
    if j == 0:
        return 1, 1 - 2 * math.exp(_log_binomial_pmf(n, 0)) if n > 0 else 0.0
    return j, 1 - 2 * tail


def median_interval(samples: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The median of `samples` and its confidence interval."""
    data = np.sort(np.asarray(samples, dtype=float))
    n = data.size
    if n == 0:
        raise ValueError("no samples: a median needs at least one")
    j, coverage = rank_bounds(n, confidence)
    return Interval(float(np.median(data)), float(data[j - 1]), float(data[n - j]), max(coverage, 0.0))
