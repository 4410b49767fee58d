"""The stopping rule on synthetic steps of known noise, and warm-up's end."""

import math

import numpy as np

from bench.results.interval import median_interval
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


def test_warm_up_ends_when_two_steps_agree():
    assert not warm([1.0])
    assert not warm([5.0, 1.0])  # the first paid for compiling
    assert warm([5.0, 1.0, 1.05])
    assert not warm([1.0, 1.2])


def test_warm_up_compares_the_last_two_steps_within_the_tolerance():
    assert warm([1.0, 1.0]) and warm([2.0, 2.1])  # two alike are enough; 5 % of 2 s is within 10 %
    assert warm([5.0, 2.0, 1.0, 1.05])  # the last two, not the second
    assert warm([1.0, 1.125], tolerance=0.125) and not warm([1.0, 1.25], tolerance=0.125)  # the bound is in


def test_the_rule_at_its_boundaries():
    rule = StopRule(target=0.25, min_rounds=8, max_rounds=100, min_time_s=1.0, max_time_s=10.0)
    rounds = [0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.25]  # [min, max] of 8 covers 99.2 %: half-width exactly 25 %
    assert rule.converged(rounds) and rule.done(rounds, 1.0)  # min rounds and min time met exactly
    assert not rule.done(rounds[:7], 1.0) and not rule.done(rounds, 0.99)
    assert rule.capped(8, 10.0) and not rule.capped(7, 10.0) and rule.capped(100, 0.0)
    assert not StopRule(0.0, 1, 100, 0.0, 10.0).converged([0.01] * 8)  # no target: never converged
    exactly = StopRule(0.5, 1, 100, 0.0, 10.0, confidence=1 - 2**-4)
    assert exactly.converged([0.01] * 5)  # five rounds give exactly 1 - 2**-4
    ranks = [float(i) for i in range(1, 11)]  # median 5.5: at 95 % [2, 9] (+-64 %), at 50 % [4, 7] (+-27 %)
    assert StopRule(0.3, 1, 100, 0.0, 10.0, confidence=0.5).converged(ranks)  # its own confidence, not 95 %
    assert not StopRule(0.3, 1, 100, 0.0, 10.0).converged(ranks)
    noisy = [0.01, 0.02, 0.015, 0.03, 0.012]
    assert StopRule(0.01, 5, 5, 0.0, 10.0).done(noisy, 0.0)  # max_rounds stops a case that will not converge


def test_the_stopper_looks_each_time_the_rounds_grow_by_half():
    looked = []

    class Rule:
        min_rounds, max_rounds, max_time_s = 1, 1000, 100.0

        def capped(self, rounds, elapsed_s):
            return False

        def done(self, rounds_s, elapsed_s):
            looked.append(len(rounds_s))
            return False

    stopper = Stopper(Rule())
    for n in range(1, 30):
        stopper.done([0.01] * n, 0.0)
    assert looked == [1, 2, 3, 5, 8, 12, 18, 27]
