"""The one rule behind every verdict (the gate's medians, ab's pairs, ab's instruction counts): a change is
called only when it is large enough and the evidence excludes no change; otherwise a case is inconclusive
when its measurement could not have seen a change of the threshold's size, and unchanged when it could."""

from __future__ import annotations

from collections.abc import Sequence

VERDICTS = ("slower", "faster", "unchanged", "inconclusive")


def verdict(ratio: float, interval: tuple[float, float], resolution: float, threshold: float,
            bar: float | None = None, significant: bool = True) -> str:
    """`ratio` is candidate / baseline (above 1 is slower) and `interval` its uncertainty; slower when the
    ratio is above `bar` (1 + threshold unless given), the interval above 1 and the test significant, faster
    likewise below 1; else inconclusive when `resolution` (the smallest change the measurement could tell
    apart) is above the threshold, unchanged when not."""
    bar = 1 + threshold if bar is None else bar
    low, high = interval
    if significant and ratio > bar and low > 1:
        return "slower"
    if significant and ratio < 1 / bar and high < 1:
        return "faster"
    return "inconclusive" if resolution > threshold else "unchanged"


def tally(called: Sequence[str]) -> str:
    """How many of each verdict, in VERDICTS' order: a table's headline ("1 slower, 0 faster, ...")."""
    return ", ".join(f"{list(called).count(name)} {name}" for name in VERDICTS)
