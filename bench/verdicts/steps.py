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
# 10,000; it costs power only where noise is large (a 10 % step at 5 % noise: found in 61 % of series, now 57 %).
OUTLIER_Z = 4.0  # a point this many sigmas from its level (and beyond the threshold) is an outlier
PASSES = 3  # fits at most: the outliers of one left out of the next, until they stay the same


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


def noise(y: np.ndarray, level: np.ndarray) -> float:
    """The spread of one log median from the spread of successive differences (von Neumann's estimator: a
    level that drifts or steps adds little, and a series that jumps between two host speeds adds all of it),
    leaving out those between points on different `level`s (an id a point)."""
    same = np.diff(level) == 0
    if not same.any():
        return 0.0
    return float(np.sqrt(np.mean(np.diff(y)[same] ** 2) / 2))


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
    the median, when given). The series is fitted again without the last fit's outliers, its noise taken
    within the last fit's levels (up to PASSES times): a wild point or a large step would otherwise swell the
    noise and hide a real step."""
    y = np.log(np.asarray(medians, dtype=float))
    n = y.size
    own = np.zeros(n) if interval_halfwidths is None else np.nan_to_num(
        np.asarray(interval_halfwidths, dtype=float) / norm.isf(0.025), nan=0.0)
    keep, starts = np.ones(n, dtype=bool), None
    for _ in range(PASSES):
        steps, outliers, sigma, levels = _fit(y, own, keep, starts, threshold)
        found = tuple(step.index for step in steps)
        if np.array_equal(outliers, ~keep) and found == starts:
            break
        keep, starts = ~outliers, found
    return Steps(steps, tuple(np.flatnonzero(outliers).tolist()), sigma, tuple(np.exp(levels).tolist()))


def _fit(y: np.ndarray, own: np.ndarray, keep: np.ndarray, starts: tuple[int, ...] | None, threshold: float
         ) -> tuple[tuple[Step, ...], np.ndarray, float, np.ndarray]:
    """Steps, outliers (a mask), noise and each point's log level of the series fitted on the points kept,
    its noise from the differences that cross none of `starts` (the last fit's steps; on the first fit, None,
    the largest difference, which a step would be: in a short series a step's own jump would hide it);
    steps are named by their index in the whole series."""
    kept = np.flatnonzero(keep)
    yk = y[kept]
    m = yk.size
    if starts is None:
        level = (np.arange(m) > np.argmax(np.abs(np.diff(yk)))).astype(int) if m > 1 else np.zeros(m, dtype=int)
    else:
        level = np.searchsorted(starts, kept, side="right")  # which of the last fit's levels each point is on
    sigma = noise(yk, level)
    if sigma == 0 or m < 2 * MIN_SIZE:
        return (), np.zeros(y.size, dtype=bool), sigma, np.full(y.size, yk.mean() if m else 0.0)
    w = 1 / np.maximum(sigma**2, own[kept] ** 2)
    cuts = _merge(yk, w, sorted(_segment(yk, w, 0, m, threshold)), threshold, m)
    bounds = [0, *cuts, m]
    steps = tuple(Step(int(kept[at]), *_test(yk, w, lo, at, hi), "confirmed" if hi - at >= MIN_SIZE else "suspected")
                  for lo, at, hi in zip(bounds, cuts, bounds[2:], strict=False))
    segment_levels = np.array([_level(yk, w, lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)])
    levels = segment_levels[np.searchsorted([kept[at] for at in cuts], np.arange(y.size), side="right")]
    outliers = np.abs(y - levels) > max(OUTLIER_Z * sigma, math.log1p(threshold))
    return steps, outliers, sigma, levels


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
