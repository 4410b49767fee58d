"""When to stop warming up and when to stop timing: warm-up ends when successive steps agree, timing when the
median's confidence interval is narrow enough (as nvbench stops on relative noise), or at its cap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.results.interval import CONFIDENCE, median_interval

# The relative half-width of the median's 95 % interval a case is timed to, by device. On these shared CPUs
# separate runs of the same code differ by 20-67 % (shared/DESIGN.md) and a whole quick sweep must fit in
# minutes, so +-2 % is as far as a run's own precision is worth buying; a GPU's rounds spread ~0.1-1 %, and
# nvbench's default (0.5 % relative noise) is the GPU gate's resolution at 5 %.
TARGETS = {"cpu": 0.02, "cuda": 0.005}
MIN_TIME_S = {"cpu": 0.1, "cuda": 0.05}  # timed at least this long, so one quiet burst does not decide a case
# Warm-up: steps until one is within this share of the one before (the first pays for compiling, autotuning,
# cuDNN's search and first-touch allocations), and at most this many steps.
WARM_TOLERANCE = 0.10
MAX_WARMUP_STEPS = 20


def warm(steps_s: Sequence[float], tolerance: float = WARM_TOLERANCE) -> bool:
    """Whether the step is warm: the last of two or more steps within `tolerance` of the step before it."""
    if len(steps_s) < 2:
        return False
    last, before = steps_s[-1], steps_s[-2]
    return abs(last - before) <= tolerance * min(last, before)


@dataclass(frozen=True)
class StopRule:
    """Time until the median's interval is within `target` (relative half-width at `confidence`) after
    `min_rounds` rounds and `min_time_s` seconds, or until `max_time_s` seconds or `max_rounds` rounds
    (then the case did not converge). A target of 0 times to the cap."""

    target: float
    min_rounds: int
    max_rounds: int
    min_time_s: float
    max_time_s: float
    confidence: float = CONFIDENCE

    def converged(self, rounds_s: Sequence[float]) -> bool:
        """Whether these rounds pin the median down to the target at the stated confidence."""
        if self.target <= 0 or not rounds_s:
            return False
        interval = median_interval(rounds_s, self.confidence)
        return interval.coverage >= self.confidence and interval.relative_halfwidth <= self.target

    def capped(self, rounds: int, elapsed_s: float) -> bool:
        """Whether the rounds reached the cap (the minimum rounds done)."""
        return rounds >= self.max_rounds or (rounds >= self.min_rounds and elapsed_s >= self.max_time_s)

    def done(self, rounds_s: Sequence[float], elapsed_s: float) -> bool:
        """Whether to stop after these rounds, `elapsed_s` seconds into the timing."""
        n = len(rounds_s)
        if self.capped(n, elapsed_s):
            return True
        return n >= self.min_rounds and elapsed_s >= self.min_time_s and self.converged(rounds_s)


class Stopper:
    """A StopRule applied round by round: the cap after every round, the interval only each time the rounds
    have grown by half (as a group-sequential design looks a few times): checking after every round would
    stop on the first narrow-by-chance interval, and the stated 95 % would cover the median 92 % of the time
    (tests/test_stopping.py simulates it)."""

    GROWTH = 1.5

    def __init__(self, rule: StopRule):
        self.rule = rule
        self.next_check = rule.min_rounds

    def done(self, rounds_s: Sequence[float], elapsed_s: float) -> bool:
        n = len(rounds_s)
        if self.rule.capped(n, elapsed_s):
            return True
        if n < self.next_check:
            return False
        self.next_check = max(n + 1, math.ceil(n * self.GROWTH))
        return self.rule.done(rounds_s, elapsed_s)
