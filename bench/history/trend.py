"""Each series of the history as a trend: one point a commit in first-parent order, its fitted levels and its
steps (bench/verdicts/steps.py), each step judged: an open regression, suspected, accepted, recovered, or
faster; labelled with any change of environment at it. Cases whose latest run failed after an ok one are
failing. show prints them as Markdown."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.history.record import ENVIRONMENT
from bench.results.rundir import RunError
from bench.verdicts.steps import find_steps

# The smallest step worth an alarm, per metric: times move by noise (GPU ~0.5 %, this CPU far more), while
# instruction counts repeat to ~0.07 % (docs/gating.md).
DEFAULT_THRESHOLDS = {"host": 0.05, "device": 0.05, "instructions": 0.01}
UNITS = {"host": "ms", "device": "ms", "instructions": "M instr"}
SCALE = {"host": 1e3, "device": 1e3, "instructions": 1e-6}  # from seconds and counts to UNITS
FAILED = ("error", "oom")  # a case's statuses that count as failing (skipped is not)


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


@dataclass(frozen=True)
class Failure:
    """A case (machine/size/case) whose latest run failed, and since which commit."""

    case: str
    commit: str  # the first failing run's after the last ok one
    subject: str
    order: int
    status: str
    reason: str
    last_ok: str


def _per_commit(points: pd.DataFrame) -> pd.DataFrame:
    """The runs of each commit as one point: the median of their medians and of their intervals' relative
    half-widths (its weight), from the lowest interval's low to the highest's high (what is drawn); the
    environment of the last."""
    points = points.assign(halfwidth=(points["high"] - points["low"]) / 2 / points["value"],
                           low=points["low"].fillna(points["value"]), high=points["high"].fillna(points["value"]),
                           environment=points[list(ENVIRONMENT)].astype(str).agg("\t".join, axis=1))
    grouped = points.groupby(["order", "commit"], sort=True)
    return grouped.agg(subject=("subject", "first"), commit_time=("commit_time", "first"), value=("value", "median"),
                       halfwidth=("halfwidth", "median"), low=("low", "min"), high=("high", "max"),
                       runs=("run_id", "count"), environment=("environment", "last")).reset_index()


def _environment_change(before: str, after: str) -> str:
    return "; ".join(f"{key} {old or '-'} -> {new or '-'}" for key, old, new
                     in zip(ENVIRONMENT, before.split("\t"), after.split("\t"), strict=True) if old != new)


def trend(series: str, points: pd.DataFrame, threshold: float, accepted: set[tuple[str, str]]) -> Trend:
    """The trend of one series' ok points (any order: sorted here)."""
    metric = points["metric"].iloc[0]
    commits = _per_commit(points)
    found = find_steps(commits["value"].to_numpy(float), threshold, commits["halfwidth"].to_numpy(float))
    levels = np.asarray(found.levels)
    commits = commits.assign(level=levels, outlier=commits.index.isin(found.outliers))
    # The level now: the last confirmed one (only the last step can be suspected, and it moves nothing yet).
    last = found.steps[-1] if found.steps else None
    now = float(levels[last.index - 1] if last and last.status == "suspected" else levels[-1])
    changes = []
    for step in found.steps:
        at = commits.iloc[step.index]
        before = float(levels[step.index - 1])
        if (series, at["commit"]) in accepted:
            state = "accepted"
        elif step.status == "suspected":
            state = "suspected"
        elif step.ratio < 1:
            state = "faster"
        else:
            state = "open" if now / before >= 1 + threshold else "recovered"
        changes.append(Change(series, at["commit"], at["subject"], int(at["order"]), step.ratio, before, now,
                              state, _environment_change(commits["environment"].iloc[step.index - 1],
                                                         at["environment"])))
    return Trend(series, metric, threshold, found.sigma, commits, changes)


def select(points: pd.DataFrame, case: str | None = None, branch: str | None = None) -> pd.DataFrame:
    """The points of the cases matching `case` (re.search) on `branch`, which may be left out only when the
    history holds one branch: first-parent orders of two branches do not interleave."""
    branches = sorted(points["branch"].unique())
    if branch is None and len(branches) > 1:
        raise RunError(f"--branch: the history holds runs of several branches ({', '.join(branches)}); choose one")
    kept = points if branch is None else points[points["branch"] == branch]
    if case:
        kept = kept[kept["case"].map(lambda name: re.search(case, name) is not None)]
    return kept


def trends(points: pd.DataFrame, thresholds: Thresholds, accepted: set[tuple[str, str]]) -> list[Trend]:
    """A trend per series, from its ok points."""
    kept = points[(points["status"] == "ok") & (points["value"] > 0)]
    return [trend(series, group, thresholds.of(group["case"].iloc[0], group["metric"].iloc[0]), accepted)
            for series, group in kept.groupby("series", sort=True)]


def failing(points: pd.DataFrame, since: int | None = None) -> list[Failure]:
    """The cases whose latest run failed (FAILED) after an ok run, from `since` on."""
    failures = []
    runs = points.drop_duplicates(["machine", "size", "case", "run_id"])  # a row a metric: one a run here
    for (machine, size, case), group in runs.groupby(["machine", "size", "case"], sort=True):
        ok = np.flatnonzero(group["status"].to_numpy() == "ok")
        if ok.size == 0 or group["status"].iloc[-1] not in FAILED or ok[-1] == len(group) - 1:
            continue
        first, latest = group.iloc[ok[-1] + 1], group.iloc[-1]
        if since is None or first["order"] >= since:
            failures.append(Failure(f"{machine}/{size or '-'}/{case}", first["commit"], first["subject"],
                                    int(first["order"]), latest["status"], latest["reason"],
                                    group.iloc[ok[-1]]["commit"]))
    return failures


def open_regressions(found: list[Trend], since: int | None = None) -> list[Change]:
    return [c for t in found for c in t.changes if c.state == "open" and (since is None or c.order >= since)]


def _level(value: float, metric: str) -> str:
    return f"{value * SCALE[metric]:.4g}"


def _cell(text: str, width: int = 60) -> str:
    """Text for a Markdown table cell: cut to `width`, its pipes escaped."""
    return text[:width].replace("|", "\\|")


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


def markdown(found: list[Trend], failures: list[Failure], since: int | None = None) -> str:
    """The history as the step summary shows it: open regressions first, then every other step, then the
    cases failing now."""
    changes = _changes(found, since)
    opened = len(open_regressions(found, since))
    lines = [f"### archbench history: {opened} open regression{'s' if opened != 1 else ''}, "
             f"{len(failures)} case{'s' if len(failures) != 1 else ''} failing", "", summary(found, since), ""]
    if changes:
        lines += ["| state | series | commit | subject | ratio | before -> now | threshold | environment |",
                  "| --- | --- | --- | --- | ---: | --- | ---: | --- |"]
        order = {"open": 0, "suspected": 1, "recovered": 2, "accepted": 3, "faster": 4}
        for t, c in sorted(changes, key=lambda tc: (order[tc[1].state], -tc[1].ratio)):
            lines.append(f"| {c.state} | `{c.series}` | {c.commit[:10]} | {_cell(c.subject)} | {c.ratio:.3f} | "
                         f"{_level(c.before, t.metric)} -> {_level(c.now, t.metric)} {UNITS[t.metric]} | "
                         f"{t.threshold:.0%} | {c.environment} |")
    if failures:
        lines += ["", "| failing | case | since commit | subject | last ok | reason |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {f.status} | `{f.case}` | {f.commit[:10]} | {_cell(f.subject)} | {f.last_ok[:10]} | "
                  f"{_cell(f.reason, 80)} |" for f in failures]
    return "\n".join(lines) + "\n"
