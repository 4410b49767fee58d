"""The median's confidence interval from order statistics, against the sign test's table and by hand."""

import numpy as np
import pytest

from bench.results.interval import median_interval, rank_bounds


def test_rank_bounds_give_the_narrowest_ranks_with_the_coverage():
    assert rank_bounds(5) == (1, 1 - 2**-4)  # too few: the range, below 95 %
    j, coverage = rank_bounds(100)
    assert coverage >= 0.95 and rank_bounds(100, 0.999)[0] < j  # a higher confidence widens it
    assert j == 40  # the sign test's table: x_(40) to x_(61) for n = 100


def test_the_interval_is_of_the_median_and_within_the_samples():
    data = [5.0, 1.0, 3.0, 2.0, 4.0, 9.0, 7.0, 6.0, 8.0, 10.0]
    interval = median_interval(data)
    assert interval.median == 5.5 and (interval.low, interval.high) == (2.0, 9.0)  # ranks 2 and 9 of 10
    assert interval.relative_halfwidth == pytest.approx(3.5 / 5.5)


@pytest.mark.parametrize("n", [6, 10, 30, 101])
def test_the_interval_covers_the_true_median_at_its_stated_coverage(n):
    """Skewed noise, true median 1: the sign test's interval covers it at its exact coverage (binomial, not an
    approximation), here within the simulation's +-1.5 %."""
    rng = np.random.default_rng(n)
    intervals = [median_interval(rng.lognormal(0.0, 0.3, n)) for _ in range(4000)]
    covered = np.mean([iv.low <= 1.0 <= iv.high for iv in intervals])
    assert intervals[0].coverage >= 0.95 and abs(covered - intervals[0].coverage) < 0.015


def test_no_samples_is_an_error_and_one_is_its_own_interval():
    with pytest.raises(ValueError, match="no samples"):
        median_interval([])
    one = median_interval([2.0])
    assert (one.median, one.low, one.high, one.coverage) == (2.0, 2.0, 2.0, 0.0)


def test_rank_bounds_at_the_edges():
    assert rank_bounds(0) == (1, 0.0)  # nothing covers anything
    assert rank_bounds(11, confidence=0.0) == (5, pytest.approx(1 - 2 * 562 / 2048))  # never past the middle
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], confidence=0.5).low == 3.0  # the confidence is used


def test_no_samples_is_an_error_in_one_line():
    with pytest.raises(ValueError, match=r"^no samples: a median needs at least one$"):
        median_interval([])
