"""Which commit made a case slower: a binary search over the first-parent commits between a good and a bad
revision, each probed with ab against the good one on that case alone. An inconclusive probe is run once
more; a commit still inconclusive, or where the case fails, is skipped (as git bisect skip does)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.results.rundir import RunError


@dataclass(frozen=True)
class Probe:
    """One measurement of a commit against the good revision: ab's verdict on the case and its ratio."""

    commit: str
    verdict: str  # slower (ab fails it: confirmed by its re-run on host time), unchanged, faster, inconclusive
    # (ab could not tell, or its re-run did not confirm), broken (the case failed at the commit)
    ratio: float


@dataclass(frozen=True)
class Bisection:
    """The commits (oldest first, the last the bad revision), the last good and first slower index found, and
    every probe made; `first` is named when nothing between them was skipped."""

    commits: list[str]
    last_good: int  # -1: the good revision itself
    first_bad: int
    probes: list[Probe]

    @property
    def named(self) -> str | None:
        return self.commits[self.first_bad] if self.first_bad - self.last_good == 1 else None


def decide(probe: Callable[[str], Probe], commit: str) -> list[Probe]:
    """The probes of a commit: one, or two when the first was inconclusive (the second's verdict stands)."""
    first = probe(commit)
    return [first] if first.verdict != "inconclusive" else [first, probe(commit)]


def search(commits: list[str], probe: Callable[[str], Probe]) -> Bisection:
    """The first slower commit of `commits`, whose last is known slower: ceil(log2 len) probes when none is
    inconclusive."""
    last_good, first_bad, skipped, probes = -1, len(commits) - 1, set(), []
    while first_bad - last_good > 1:
        middle = (last_good + first_bad) // 2
        left = [i for i in range(last_good + 1, first_bad) if i not in skipped]
        if not left:
            break
        at = min(left, key=lambda i: (abs(i - middle), i))
        tries = decide(probe, commits[at])
        probes += tries
        found = tries[-1]
        if found.verdict == "slower":
            first_bad = at
        elif found.verdict in ("unchanged", "faster"):
            last_good = at
        else:
            skipped.add(at)
    return Bisection(commits, last_good, first_bad, probes)


def ab_probe(good: str, case: str, sweep: list[str], out: Path, log: Callable[[str], None],
             **options) -> Callable[[str], Probe]:
    """A probe that runs ab GOOD COMMIT on `case` alone into out/NN-<commit>, with ab's options."""
    from bench.verdicts.ab import ab

    made = []

    def probe(commit: str) -> Probe:
        made.append(commit)
        log(f"bisect: probe {len(made)}: {commit[:10]} against {good}")
        result = ab(good, commit, [*sweep, "-k", f"[{case}]"], out / f"{len(made):02d}-{commit[:10]}", log=log,
                    **options)
        if case in result.broken:
            return Probe(commit, "broken", math.nan)
        verdict = next((v for v in result.verdicts if v.case == case), None)
        if verdict is None:
            raise RunError(f"--case {case}: ab measured no such case (the sweep's case ids are its test ids' "
                           "parameters, e.g. cnn-fwd-fp32-b2)")
        if verdict in result.failing:
            return Probe(commit, "slower", verdict.ratio)
        return Probe(commit, "inconclusive" if verdict.verdict == "slower" else verdict.verdict, verdict.ratio)

    return probe


def steps_needed(n: int) -> int:
    """Probes a bisection of n commits needs at most when every probe is conclusive."""
    return math.ceil(math.log2(n)) if n > 1 else 0
