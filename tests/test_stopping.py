"""The stopping rule on synthetic steps of known noise, the median's interval, warm-up's end, and the budget."""

import math

import numpy as np
import pytest

from bench.errors import OptionError
from bench.results.interval import median_interval, rank_bounds
from bench.run.budget import Budget, parse_duration
from bench.run.stopping import Stopper, StopRule, warm

ROUND_S = 0.01  # every synthetic round lasts about this long


def rounds_until_done(rule: StopRule, sigma: float, rng: np.random.Generator, median: float = ROUND_S) -> list[float]:
    """Feed a Stopper lognormal rounds around `median` (relative noise ~sigma) until it stops."""
    stopper, rounds = Stopper(rule), []
    while True:
        rounds.append(float(median * rng.lognormal(0.0, sigma)))
        if stopper.done(rounds, sum(rounds)):
            return rounds


RULE = StopRule(target=0.02, min_rounds=5, max_rounds=10_000, min_time_s=0.0, max_time_s=2.0)


def test_a_quiet_step_stops_at_the_first_look_that_can_state_its_interval():
    rounds = rounds_until_done(RULE, 0.002, np.random.default_rng(0))
    assert len(rounds) == 8  # looks at 5 rounds (too few for 95 %: [min, max] covers 1 - 2**-4), then 8
    assert RULE.converged(rounds)


def test_a_noisy_step_runs_to_its_cap_and_does_not_converge():
    rounds = rounds_until_done(RULE, 0.5, np.random.default_rng(1))
    assert sum(rounds) >= RULE.max_time_s and sum(rounds[:-1]) < RULE.max_time_s
    assert not RULE.converged(rounds)


def test_the_rounds_grow_with_the_noise_between_the_two():
    rng = np.random.default_rng(2)
    counts = [len(rounds_until_done(RULE, sigma, rng)) for sigma in (0.01, 0.04, 0.08)]
    assert counts == sorted(counts) and counts[0] < counts[-1] < 200


def test_the_stopped_interval_covers_the_true_median_at_its_stated_rate():
    """Lognormal noise of 5 %: the true median is ROUND_S. Stopping when the interval is narrow enough must
    not make it lie: over 2,000 runs, it covers the truth at about 95 % (binomial error +-1 %)."""
    rng = np.random.default_rng(3)
    rule = StopRule(target=0.02, min_rounds=5, max_rounds=10_000, min_time_s=0.0, max_time_s=math.inf)
    covered = []
    for _ in range(2000):
        interval = median_interval(rounds_until_done(rule, 0.05, rng))
        covered.append(interval.low <= ROUND_S <= interval.high)
    assert 0.93 <= np.mean(covered) <= 0.99


def test_min_time_and_min_rounds_hold_a_converged_step():
    rule = StopRule(target=0.5, min_rounds=12, max_rounds=1000, min_time_s=0.3, max_time_s=5.0)
    rounds = rounds_until_done(rule, 0.001, np.random.default_rng(4))
    assert len(rounds) >= 12 and sum(rounds) >= 0.3
    assert sum(rounds[: len(rounds) * 2 // 3]) < 0.3  # stopped at the first look after both were met


def test_a_target_of_zero_times_to_the_cap():
    rule = StopRule(target=0.0, min_rounds=5, max_rounds=40, min_time_s=0.0, max_time_s=100.0)
    assert len(rounds_until_done(rule, 0.001, np.random.default_rng(5))) == 40


def test_rank_bounds_give_the_smallest_ranks_with_the_coverage():
    assert rank_bounds(5) == (1, 1 - 2**-4)  # too few: the range, below 95 %
    j, coverage = rank_bounds(100)
    assert coverage >= 0.95 and rank_bounds(100, 0.999)[0] < j  # a higher confidence widens it
    assert j == 40  # the sign test's table: x_(40) to x_(61) for n = 100


def test_the_interval_is_of_the_median_and_within_the_samples():
    data = [5.0, 1.0, 3.0, 2.0, 4.0, 9.0, 7.0, 6.0, 8.0, 10.0]
    interval = median_interval(data)
    assert interval.median == 5.5 and (interval.low, interval.high) == (2.0, 9.0)  # ranks 2 and 9 of 10
    assert interval.relative_halfwidth == pytest.approx(3.5 / 5.5)


def test_warm_up_ends_when_two_steps_agree():
    assert not warm([1.0])
    assert not warm([5.0, 1.0])  # the first paid for compiling
    assert warm([5.0, 1.0, 1.05])
    assert not warm([1.0, 1.2])


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_shares_out_what_is_left_and_a_sweep_within_its_shares_ends_in_time():
    clock = Clock()
    budget = Budget(60.0, 10, clock)
    assert budget.share() == 6.0 and budget.timing_cap(1.0) == 1.0 and budget.timing_cap(100.0) == pytest.approx(2.4)
    for cost in (1.0, 1.0, 1.0):  # fast cases leave their share to the rest
        clock.now += cost
        budget.case_done()
    assert budget.share() == pytest.approx(57.0 / 7)
    for _ in range(7):  # every case spends its whole share
        clock.now += budget.share()
        budget.case_done()
    assert clock.now == pytest.approx(60.0) and budget.remaining == pytest.approx(0.0)


def test_a_spent_budget_runs_nothing_more_and_says_by_how_much_it_was_over():
    clock = Clock()
    budget = Budget(10.0, 3, clock)
    clock.now = 12.0  # one case ran long
    budget.case_done()
    assert budget.share() == 0.0 and budget.timing_cap(1.0) == 0.0
    budget.case_done(ran=False)
    assert budget.not_run == 1
    assert budget.describe() == "budget 0:10: took 0:12, 0:02 over"


@pytest.mark.parametrize(("text", "seconds"), [("300", 300), ("45s", 45), ("5m", 300), ("1.5h", 5400), (" 2m ", 120)])
def test_durations_parse(text, seconds):
    assert parse_duration("budget", text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-3m", "0", "m"])
def test_bad_durations_are_one_line_naming_the_forms(text):
    with pytest.raises(OptionError, match=r"^--budget: expected a positive duration such as 300, 300s, 5m or 1.5h"):
        parse_duration("budget", text)
