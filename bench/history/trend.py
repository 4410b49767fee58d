"""Each series of the history as a trend: one point a commit in first-parent order, its fitted levels and its
steps (bench/verdicts/steps.py), each step judged: an open regression, suspected, accepted, recovered, or
faster; labelled with any change of environment at it. show prints them as Markdown."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.history.record import ENVIRONMENT
from bench.verdicts.steps import find_steps

# The smallest step worth an alarm, per metric: times move by noise (GPU ~0.5 %, this CPU far more), while
# instruction counts repeat to ~0.02 %.
DEFAULT_THRESHOLDS = {"host": 0.05, "device": 0.05, "instructions": 0.01}


@dataclass(frozen=True)
class Thresholds:
    """The threshold of a case on a metric: the first case pattern (re.search) that matches it, else the
    metric's."""

    metric: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    cases: tuple[tuple[str, float], ...] = ()

    def of(self, case: str, metric: str) -> float:
        return next((value for pattern, value in self.cases if re.search(pattern, case)), self.metric[metric])


@dataclass(frozen=True)
class Change:
    """A step of a series at `commit` (the first commit at the new level)."""

    series: str
    commit: str
    subject: str
    order: int
    ratio: float  # new level over old
    z: float
    before: float  # the level before it, in the metric's unit
    now: float  # the series' level at its last commit
    state: str  # open, suspected, accepted, recovered or faster
    environment: str  # what changed in the environment at this commit, e.g. "torch 2.13.1 -> 2.14.1"


@dataclass(frozen=True)
class Trend:
    """One series: its points a commit (commit, order, subject, commit_time, value, low, high, runs, level,
    outlier, environment), its steps, its noise and threshold."""

    series: str
    metric: str
    threshold: float
    sigma: float
    points: pd.DataFrame
    changes: list[Change]


def _per_commit(points: pd.DataFrame) -> pd.DataFrame:
    """The runs of each commit as one point: the median of their medians and of their intervals' relative
    half-widths; the environment of the last."""
    points = points.assign(halfwidth=(points["high"] - points["low"]) / 2 / points["value"],
                           environment=points[list(ENVIRONMENT)].astype(str).agg("\t".join, axis=1))
    grouped = points.groupby(["order", "commit"], sort=True)
    return grouped.agg(subject=("subject", "first"), commit_time=("commit_time", "first"), value=("value", "median"),
                       halfwidth=("halfwidth", "median"), runs=("run_id", "count"),
                       environment=("environment", "last")).reset_index()


def _environment_change(before: str, after: str) -> str:
    return "; ".join(f"{key} {old or '-'} -> {new or '-'}" for key, old, new
                     in zip(ENVIRONMENT, before.split("\t"), after.split("\t"), strict=True) if old != new)


def trend(series: str, points: pd.DataFrame, threshold: float, accepted: set[tuple[str, str]]) -> Trend:
    """The trend of one series' ok points (any order: sorted here)."""
    metric = points["metric"].iloc[0]
    commits = _per_commit(points)
    found = find_steps(commits["value"].to_numpy(float), threshold, commits["halfwidth"].to_numpy(float))
    levels = np.asarray(found.levels)
    commits = commits.assign(level=levels, outlier=commits.index.isin(found.outliers),
                             low=commits["value"] * (1 - commits["halfwidth"]),
                             high=commits["value"] * (1 + commits["halfwidth"]))
    changes = []
    now = float(levels[-1]) if levels.size else math.nan
    for step in found.steps:
        at = commits.iloc[step.index]
        before = float(levels[step.index - 1])
        if (series, at["commit"]) in accepted:
            state = "accepted"
        elif step.ratio < 1:
            state = "faster"
        elif step.status == "suspected":
            state = "suspected"
        else:
            state = "open" if now / before >= 1 + threshold else "recovered"
        changes.append(Change(series, at["commit"], at["subject"], int(at["order"]), step.ratio, step.z, before, now,
                              state, _environment_change(commits["environment"].iloc[step.index - 1],
                                                         at["environment"])))
    return Trend(series, metric, threshold, found.sigma, commits, changes)


def trends(points: pd.DataFrame, thresholds: Thresholds, accepted: set[tuple[str, str]], case: str | None = None,
           branch: str | None = None) -> list[Trend]:
    """A trend per series, from the ok points of the cases matching `case` (re.search) on `branch`."""
    kept = points[(points["status"] == "ok") & (points["value"] > 0)]
    if case:
        kept = kept[kept["case"].map(lambda name: re.search(case, name) is not None)]
    if branch:
        kept = kept[kept["branch"] == branch]
    return [trend(series, group, thresholds.of(group["case"].iloc[0], group["metric"].iloc[0]), accepted)
            for series, group in kept.groupby("series", sort=True)]


def open_regressions(found: list[Trend], since: int | None = None) -> list[Change]:
    return [c for t in found for c in t.changes if c.state == "open" and (since is None or c.order >= since)]


UNITS = {"host": "ms", "device": "ms", "instructions": "M instr"}


def _level(value: float, metric: str) -> str:
    return f"{value * (1e3 if metric != 'instructions' else 1e-6):.4g}"


def _changes(found: list[Trend], since: int | None) -> list[tuple[Trend, Change]]:
    return [(t, c) for t in found for c in t.changes if since is None or c.order >= since]


def summary(found: list[Trend], since: int | None = None) -> str:
    """One line: how many series, commits, steps by state and outliers."""
    changes = _changes(found, since)
    states = pd.Series([c.state for _, c in changes], dtype=object).value_counts()
    counted = ", ".join(f"{n} {state}" for state, n in states.items()) or "none"
    commits = {commit for t in found for commit in t.points["commit"]}
    outliers = sum(int(t.points["outlier"].sum()) for t in found)
    return (f"{len(found)} series over {len(commits)} commits; {len(changes)} steps ({counted}); "
            f"{outliers} outlier points.")


def markdown(found: list[Trend], since: int | None = None) -> str:
    """The history as the step summary shows it: open regressions first, then every other step."""
    changes = _changes(found, since)
    opened = len(open_regressions(found, since))
    lines = [f"### archbench history: {opened} open regression{'s' if opened != 1 else ''}", "",
             summary(found, since), ""]
    if changes:
        lines += ["| state | series | commit | subject | ratio | before -> now | threshold | environment |",
                  "| --- | --- | --- | --- | ---: | --- | ---: | --- |"]
        order = {"open": 0, "suspected": 1, "recovered": 2, "accepted": 3, "faster": 4}
        for t, c in sorted(changes, key=lambda tc: (order[tc[1].state], -tc[1].ratio)):
            subject = c.subject[:60].replace("|", "\\|")
            lines.append(f"| {c.state} | `{c.series}` | {c.commit[:10]} | {subject} | {c.ratio:.3f} | "
                         f"{_level(c.before, t.metric)} -> {_level(c.now, t.metric)} {UNITS[t.metric]} | "
                         f"{t.threshold:.0%} | {c.environment} |")
    return "\n".join(lines) + "\n"
