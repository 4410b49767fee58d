"""A sweep's time budget (`--budget 5m`), shared out case by case: each case may spend what is left over the
cases left, so a fast case leaves its unused share to the ones after it; once it is spent, the cases left are
recorded as not run."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from bench.errors import OptionError

UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
# A case's share pays for its warm-up (capped at its timing cap, stopping.py), its timed rounds (the cap) and
# its build and FLOP count: the timing cap is this fraction of the share.
TIMED_FRACTION = 0.4


def parse_duration(option: str, text: str) -> float:
    """Seconds from '300', '300s', '5m' or '1.5h'; an OptionError naming the forms otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise OptionError(f"--{option}: expected a positive duration such as 300, 300s, 5m or 1.5h, got '{text}'")
    return float(match.group(1)) * UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """4:51 for 291 s."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


class Budget:
    """`seconds` for `cases` cases, measured on `clock` from when it is made."""

    def __init__(self, seconds: float, cases: int, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.cases_left, self.clock = seconds, max(cases, 1), clock
        self.start = clock()
        self.not_run = 0

    @property
    def remaining(self) -> float:
        return self.seconds - (self.clock() - self.start)

    def share(self) -> float:
        """What the next case may spend: the time left over the cases left (0 once it is spent)."""
        return max(0.0, self.remaining) / max(self.cases_left, 1)

    def timing_cap(self, max_time: float) -> float:
        """The next case's cap on timed seconds: its share's TIMED_FRACTION, never above `max_time`."""
        return min(max_time, TIMED_FRACTION * self.share())

    def case_done(self, ran: bool = True) -> None:
        self.cases_left -= 1
        self.not_run += not ran

    def describe(self) -> str:
        """The budget and what it took, for the terminal summary."""
        used = self.clock() - self.start
        over = f", {format_duration(used - self.seconds)} over" if used > self.seconds else ""
        return f"budget {format_duration(self.seconds)}: took {format_duration(used)}{over}"
