"""The regression gate: baseline vs candidate, case by case, one figure per case and run.

Rounds of one run are not independent samples of what another run would give: they share the host's speed,
the GPU's clocks and the process's placement, so a test over rounds calls two runs of the same code
different (a U test put p = 6e-39 on an H200 A/A pair). The gate compares per-run summaries instead: each
case's median in each run, on the device's own time where both runs measured it the same way
(bench/run/devicetime.py) and on the host's otherwise, against a threshold no larger than the drift that same
machine's A/A runs show.
A case is `slower` when its ratio exceeds 1 + threshold and `faster` below the reciprocal; within them,
`inconclusive` when a run's own rounds spread (IQR over the median) by more than the threshold, else
`unchanged`. A case that ran in the baseline and errored or ran out of memory in the candidate is `broken`,
which fails like `slower`. Paired, repeated processes (`python -m bench ab`) resolve smaller changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.results.row import timing_stats
from bench.results.rundir import (
    REPORTS_DIR,
    RunDir,
    RunError,
    load_device_rounds,
    load_results,
    load_rounds,
    resolve,
)
from bench.verdicts.rule import tally, verdict

METRICS = ("device", "host")
# Default threshold by device and metric, from A/A runs (the same code twice) on these machines. CPU: 10 A/A
# pairs of quick runs on the idle 2-core machines moved per-case medians by up to 45 % (p90 13 %); 50 % failed
# none. GPU host time: two H200 A/A pairs moved launch-bound model cases by up to 65 % and sub-millisecond
# attention by 20 % (the VM's CPU speed); 25 % passed the first pair and not the second. GPU device time:
# the GPU-bound cases, whose host time is their device time, agreed within 0.35-1.6 % over three H200 runs;
# 5 % is three times the worst (validate's trust stage measures device-time A/A itself: docs/validate.md).
DEFAULT_THRESHOLD = {("cpu", "host"): 0.5, ("cuda", "host"): 0.25, ("cuda", "device"): 0.05}
# What two runs must share to be compared (from their results.csv): the device, the software, the sizes.
ENVIRONMENT = ("device_name", "torch", "size")


@dataclass(frozen=True)
class Verdict:
    case: str
    metric: str  # device or host: which time the medians are of
    baseline_median: float
    candidate_median: float
    ratio: float  # candidate median / baseline median: above 1 is slower
    spread: float  # the larger of the two runs' IQR / median of the rounds compared
    threshold: float
    verdict: str  # slower, faster, unchanged or inconclusive


def judge(case: str, baseline: np.ndarray, candidate: np.ndarray, threshold: float, metric: str = "host") -> Verdict:
    """Slower or faster when the ratio of the runs' medians is beyond the threshold; else inconclusive when
    either run's rounds spread by more than the threshold, unchanged when not."""
    base, cand = float(np.median(baseline)), float(np.median(candidate))
    ratio = cand / base
    spread = max(relative_iqr(baseline), relative_iqr(candidate))
    called = verdict(ratio, (ratio, ratio), spread, threshold)  # a ratio of medians: its own interval
    return Verdict(case, metric, base, cand, ratio, spread, threshold, called)


def relative_iqr(rounds: np.ndarray) -> float:
    """Interquartile range over the median, as a Row's figures give them."""
    stats = timing_stats(rounds)
    return stats["iqr_s"] / stats["median_s"]


@dataclass(frozen=True)
class GateResult:
    verdicts: list[Verdict]
    new: list[str]
    vanished: list[str]
    broken: dict[str, str] = field(default_factory=dict)  # case -> the candidate's status and reason
    differences: list[str] = field(default_factory=list)  # environment the runs differ in, when allowed
    strict: bool = False  # vanished cases fail too

    @property
    def regressions(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.verdict == "slower"]

    @property
    def failed(self) -> bool:
        return bool(self.regressions or self.broken or (self.strict and self.vanished))

    def markdown(self, baseline: str, candidate: str) -> str:
        """The table a person (or a CI step summary) reads: slowest changes first."""
        counts = tally([v.verdict for v in self.verdicts])
        thresholds = sorted({(v.metric, v.threshold) for v in self.verdicts})
        how = ", ".join(f"{threshold:.0%} on {metric} time" for metric, threshold in thresholds)
        lines = [f"### archbench gate: {candidate} vs {baseline}", ""]
        lines += [f"Environments differ (compared as asked): {'; '.join(self.differences)}", ""] \
            if self.differences else []
        lines += [
            f"{counts} of {len(self.verdicts)} cases; {len(self.broken)} broken (each run's median per case "
            f"against the threshold: {how or 'none'}).",
            "",
            "| case | verdict | time | baseline median | candidate median | ratio | threshold | within-run spread |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for v in sorted(self.verdicts, key=lambda v: -v.ratio):
            lines.append(f"| `{v.case}` | {v.verdict} | {v.metric} | {v.baseline_median * 1e3:.3f} ms | "
                         f"{v.candidate_median * 1e3:.3f} ms | {v.ratio:.3f} | {v.threshold:.0%} | {v.spread:.1%} |")
        if self.broken:
            lines += ["", "Broken in the candidate (ok in the baseline; fails the gate):"]
            lines += [f"- `{case}`: {what}" for case, what in self.broken.items()]
        vanished = "Vanished cases (fail with --strict)" if self.strict else "Vanished cases (not gated)"
        for title, names in (("New cases (not gated)", self.new), (vanished, self.vanished)):
            if names:
                lines += ["", f"{title}: " + ", ".join(f"`{name}`" for name in names)]
        return "\n".join(lines) + "\n"


def _results(run: str, reports_dir: Path):
    """The run's results.csv, where it has one (a pytest-benchmark JSON file has none)."""
    path = resolve(run, reports_dir)
    return load_results(path) if RunDir(path).results_csv.is_file() else None


def environment_differences(base, cand) -> list[str]:
    """What the two runs' results differ in among ENVIRONMENT, as 'column: a vs b'."""
    differences = []
    for column in ENVIRONMENT:
        if base is None or cand is None or column not in base or column not in cand:
            continue
        a, b = (sorted(map(str, frame[column].dropna().unique())) for frame in (base, cand))
        if a != b:
            differences.append(f"{column}: {', '.join(a)} vs {', '.join(b)}")
    return differences


def broken_cases(ran_before: Iterable[str], after: pd.DataFrame) -> dict[str, str]:
    """The cases that ran before and errored or ran out of memory after (a results frame): case -> status
    and reason."""
    ran_before = set(ran_before)
    failed = after[after["status"].isin(["error", "oom"])]
    return {row.case_id: f"{row.status}: {row.reason}" for row in failed.itertuples() if row.case_id in ran_before}


def gate(baseline: str, candidate: str, threshold: float | None = None, metric: str = "device",
         reports_dir: Path = REPORTS_DIR, allow_different_env: bool = False, strict: bool = False) -> GateResult:
    """Judge every case present in both, on `metric` (device: the device's time where both runs have it,
    the host's otherwise; host: the host's); raises RunError for unusable input or, unless allowed, runs
    from different environments."""
    if metric not in METRICS:
        raise RunError(f"--metric must be one of {', '.join(METRICS)}, got {metric}")
    if threshold is not None and threshold < 0:
        raise RunError(f"--threshold must not be negative, got {threshold}")
    base, base_device = load_rounds(baseline, reports_dir)
    cand, cand_device = load_rounds(candidate, reports_dir)
    base_results, cand_results = _results(baseline, reports_dir), _results(candidate, reports_dir)
    differences = environment_differences(base_results, cand_results)
    if differences and not allow_different_env:
        raise RunError(f"{baseline} and {candidate} come from different environments ({'; '.join(differences)}); "
                       "compare them anyway with --allow-different-env")
    broken = broken_cases(base, cand_results) if cand_results is not None else {}
    common = [name for name in base if name in cand]
    if not common and not broken:
        raise RunError(f"{baseline} and {candidate} share no benchmark: nothing to compare")
    base_dev, cand_dev = (_device_rounds(run, reports_dir) if metric == "device" else {}
                          for run in (baseline, candidate))
    device = "cpu" if "cpu" in (base_device, cand_device) else "cuda"  # mixed: the looser, CPU's
    verdicts = []
    for name in common:  # a graph's replays and the profiler's busy time are not one quantity
        on_device = name in base_dev and name in cand_dev and base_dev[name][1] == cand_dev[name][1]
        pair = (base_dev[name][0], cand_dev[name][0]) if on_device else (base[name], cand[name])
        used = "device" if on_device else "host"
        limit = DEFAULT_THRESHOLD[(device, used)] if threshold is None else threshold
        verdicts.append(judge(name, *pair, limit, used))
    return GateResult(verdicts, [n for n in cand if n not in base],
                      [n for n in base if n not in cand and n not in broken], broken, differences, strict)


def _device_rounds(run: str, reports_dir: Path) -> dict[str, tuple[np.ndarray, str]]:
    """A run folder's device rounds and their method per case (none from a pytest-benchmark JSON file)."""
    path = resolve(run, reports_dir)
    return load_device_rounds(path) if path.is_dir() else {}


def write_step_summary(markdown: str) -> None:
    """Append to GitHub Actions' job summary when running there."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(markdown)
