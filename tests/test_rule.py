"""The one verdict rule the gate and ab share: each branch, and the edges between them."""

import pytest

from bench.verdicts.rule import tally, verdict


@pytest.mark.parametrize(("ratio", "interval", "resolution", "expected"), [
    (1.2, (1.1, 1.3), 0.01, "slower"),
    (1 / 1.2, (0.8, 0.9), 0.01, "faster"),
    (1.2, (0.9, 1.5), 0.01, "unchanged"),  # large, but the interval holds 1: not called
    (1.2, (0.9, 1.5), 0.2, "inconclusive"),  # ... and the measurement could not see 10 %
    (1.05, (1.04, 1.06), 0.01, "unchanged"),  # certain, but within the threshold
    (1.1, (1.1, 1.1), 0.1, "unchanged"),  # exactly at the bar and at the resolution: neither is beyond
    (1.1001, (1.1001, 1.1001), 0.1001, "slower"),
    (1 / 1.1, (1 / 1.1, 1 / 1.1), 0.0, "unchanged"),
    (1.2, (1.0, 1.4), 0.01, "unchanged"),  # an interval that reaches 1 does not exclude no change
    (1 / 1.2, (0.7, 1.0), 0.01, "unchanged"),
    (1 / 1.2, (0.7, 1.2), 0.01, "unchanged"),
])
def test_a_change_is_called_beyond_the_bar_with_an_interval_clear_of_one(ratio, interval, resolution, expected):
    assert verdict(ratio, interval, resolution, threshold=0.1) == expected


def test_the_bar_may_be_lower_than_the_threshold_and_a_change_needs_significance():
    assert verdict(1.06, (1.01, 1.1), 0.02, threshold=0.1, bar=1.05) == "slower"
    assert verdict(1 / 1.06, (0.9, 0.99), 0.02, threshold=0.1, bar=1.05) == "faster"
    assert verdict(1.06, (1.01, 1.1), 0.02, threshold=0.1, bar=1.05, significant=False) == "unchanged"
    assert verdict(1.06, (1.01, 1.1), 0.02, threshold=0.1) == "unchanged"  # the default bar: 1 + threshold


def test_the_tally_counts_each_verdict_in_order():
    assert tally(["slower", "unchanged", "slower"]) == "2 slower, 0 faster, 1 unchanged, 0 inconclusive"
