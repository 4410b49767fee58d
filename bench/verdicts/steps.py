"""Steps in a series of one case's medians across commits (first-parent order): where its level changed, by how
much, and whether that is confirmed yet. Binary segmentation on log medians, each candidate kept only when
significant against the series' own noise and above a threshold, then re-tested between its neighbours (as Otava
merges E-divisive's candidates); a point that leaves its level and comes back is an outlier, and a change in the
last few points is only suspected until enough points follow it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

MIN_SIZE = 3  # points on each side of a step: fewer, and a change at the end is only suspected
ALPHA = 1e-6  # a step's significance, Bonferroni-corrected over the splits a segment scan tries. Series of 60 that
# jump between two host speeds 30 % apart (30 % of runs slow): 1e-4 alarmed in 4 of 5,000, 1e-5 in 2, 1e-6 in none of
# 10,000; it costs power only where noise is large (a 10 % step at 5 % noise: found in 61 % of series, now 56 %).
OUTLIER_Z = 4.0  # a point this many sigmas from its level (and beyond the threshold) is an outlier


@dataclass(frozen=True)
class Step:
    """A change of level before point `index` (the first point at the new level): new level over old as
    `ratio`, its z statistic, and `status`: confirmed (MIN_SIZE points after it) or suspected."""

    index: int
    ratio: float
    z: float
    status: str = "confirmed"


@dataclass(frozen=True)
class Steps:
    """What a series holds: its steps, its outliers (indices), its noise (sigma of a log median) and each
    point's fitted level (its segment's weighted geometric mean, in the medians' unit)."""

    steps: tuple[Step, ...]
    outliers: tuple[int, ...]
    sigma: float
    levels: tuple[float, ...]


def noise(y: np.ndarray) -> float:
    """The spread of one log median from the spread of successive differences (von Neumann's estimator: a
    level that drifts or steps adds little, and a series that jumps between two host speeds adds all of it)."""
    if y.size < 2:
        return 0.0
    return float(np.sqrt(np.mean(np.diff(y) ** 2) / 2))


def _critical_z(splits: int) -> float:
    return float(norm.isf(ALPHA / 2 / max(splits, 1)))


def _best_split(y: np.ndarray, w: np.ndarray, lo: int, hi: int, n: int) -> tuple[int, float] | None:
    """The split of y[lo:hi] with the largest weighted mean difference over its standard error, as (index, z),
    with at least MIN_SIZE points a side, except after it at the series' end (`hi == n`: a step there has
    fewer points yet, and is suspected); None when the segment is too short."""
    after = 1 if hi == n else MIN_SIZE
    if hi - lo < MIN_SIZE + after:
        return None
    cw, cwy = np.cumsum(w[lo:hi]), np.cumsum(w[lo:hi] * y[lo:hi])
    k = np.arange(MIN_SIZE, hi - lo - after + 1)  # points on the left
    left_w, right_w = cw[k - 1], cw[-1] - cw[k - 1]
    diff = (cwy[-1] - cwy[k - 1]) / right_w - cwy[k - 1] / left_w
    z = np.abs(diff) / np.sqrt(1 / left_w + 1 / right_w)
    best = int(np.argmax(z))
    return lo + int(k[best]), float(z[best])


def _level(y: np.ndarray, w: np.ndarray, lo: int, hi: int) -> float:
    return float(np.sum(w[lo:hi] * y[lo:hi]) / np.sum(w[lo:hi]))


def _test(y: np.ndarray, w: np.ndarray, lo: int, at: int, hi: int) -> tuple[float, float]:
    """(ratio, z) of the level y[at:hi] against y[lo:at]."""
    left, right = _level(y, w, lo, at), _level(y, w, at, hi)
    z = abs(right - left) / math.sqrt(1 / np.sum(w[lo:at]) + 1 / np.sum(w[at:hi]))
    return math.exp(right - left), z


def find_steps(medians: Sequence[float], threshold: float, interval_halfwidths: Sequence[float] | None = None) -> Steps:
    """The steps of a series of medians (any unit: only ratios count) larger than `threshold` (0.05: 5 %),
    each point weighted by the larger of the series' noise and its own 95 % interval (half-widths as shares of
    the median, when given)."""
    y = np.log(np.asarray(medians, dtype=float))
    n = y.size
    sigma = noise(y)
    own = np.asarray(interval_halfwidths, dtype=float) / norm.isf(0.025) if interval_halfwidths is not None else 0.0
    variance = np.maximum(sigma**2, np.nan_to_num(np.asarray(own) ** 2, nan=0.0)) if sigma > 0 else None
    if variance is None or n < 2 * MIN_SIZE:
        return Steps((), (), sigma, tuple(np.exp(np.full(n, y.mean() if n else 0.0))))
    w = 1 / np.broadcast_to(variance, y.shape)
    cuts = _merge(y, w, sorted(_segment(y, w, 0, n, threshold)), threshold, n)
    bounds = [0, *cuts, n]
    steps = tuple(Step(at, *_test(y, w, lo, at, hi), "confirmed" if hi - at >= MIN_SIZE else "suspected")
                  for lo, at, hi in zip(bounds, cuts, bounds[2:], strict=False))
    levels = np.concatenate([np.full(hi - lo, math.exp(_level(y, w, lo, hi))) for lo, hi in zip(bounds, bounds[1:],
                                                                                                 strict=False)])
    return Steps(steps, _outliers(y, w, bounds, sigma, threshold), sigma, tuple(levels.tolist()))


def _significant(ratio: float, z: float, splits: int, threshold: float) -> bool:
    return z > _critical_z(splits) and abs(math.log(ratio)) >= math.log1p(threshold)


def _segment(y: np.ndarray, w: np.ndarray, lo: int, hi: int, threshold: float) -> list[int]:
    """Binary segmentation: the best split of y[lo:hi] when it is a step, then the best of each side."""
    found = _best_split(y, w, lo, hi, len(y))
    if found is None:
        return []
    at, _ = found
    ratio, z = _test(y, w, lo, at, hi)
    if not _significant(ratio, z, hi - lo, threshold):
        return []
    return [*_segment(y, w, lo, at, threshold), at, *_segment(y, w, at, hi, threshold)]


def _merge(y: np.ndarray, w: np.ndarray, cuts: list[int], threshold: float, n: int) -> list[int]:
    """Re-test each step between its neighbours and drop the weakest that fails, until all pass."""
    while cuts:
        bounds = [0, *cuts, n]
        tests = [_test(y, w, bounds[i], bounds[i + 1], bounds[i + 2]) for i in range(len(cuts))]
        passing = [_significant(ratio, z, bounds[i + 2] - bounds[i], threshold)
                   for i, (ratio, z) in enumerate(tests)]
        if all(passing):
            return cuts
        weakest = min((i for i, ok in enumerate(passing) if not ok), key=lambda i: tests[i][1])
        cuts = cuts[:weakest] + cuts[weakest + 1:]
    return cuts


def _outliers(y: np.ndarray, w: np.ndarray, bounds: list[int], sigma: float, threshold: float) -> tuple[int, ...]:
    """Points far from their segment's level (OUTLIER_Z sigmas and the threshold): spikes that came back."""
    far = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        level = _level(y, w, lo, hi)
        far += [i for i in range(lo, hi)
                if abs(y[i] - level) > max(OUTLIER_Z * sigma, math.log1p(threshold))]
    return tuple(far)
