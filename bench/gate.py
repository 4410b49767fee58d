"""The regression gate: baseline vs candidate, case by case, from the raw rounds.

A case is `slower` only when three things hold: its median grew by more than the threshold (the minimum
effect worth failing a build), a bootstrap confidence interval of the ratio of medians lies above 1,
and a Mann-Whitney U test rejects equal distributions at `alpha` after Holm's correction over every case
gated (so the chance of any false alarm, not of each, is alpha). `faster` mirrors it. With too few rounds
for the U test ever to reach alpha a case is `inconclusive`. A case that ran in the baseline and errored
or ran out of memory in the candidate is `broken`, which fails like `slower`. The interval's half-width
is only the noise within the two runs: run-to-run drift (large on shared CPUs: the README gives the
figures measured on the 2-core CI machines) is what the threshold must cover.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from bench.rundir import REPORTS_DIR, RunError, load_results, load_rounds, resolve

# Default minimum effect by device. CPU: 10 A/A pairs of quick runs on the idle 2-core machines shifted
# per-case medians by up to 45 % (p90 13 %); 50 % failed none of them, 30 % failed two. GPU: two A/A pairs
# on an H200 moved sub-millisecond attention cases by up to 20 % and launch-bound model cases by up to 65 %
# (GPU-bound ones by 4 %); 25 % passes the first pair and fails one launch-bound case of the second (README).
DEFAULT_THRESHOLD = {"cuda": 0.25, "cpu": 0.5}
BOOTSTRAP_SAMPLES = 2000
# What two runs must share to be compared (from their results.csv): the device, the software, the sizes.
ENVIRONMENT = ("device_name", "torch", "size")


@dataclass(frozen=True)
class Verdict:
    case: str
    baseline_median: float
    candidate_median: float
    ratio: float  # candidate median / baseline median: above 1 is slower
    ci_low: float
    ci_high: float
    p_value: float  # Holm-adjusted over the cases gated together
    verdict: str  # slower, faster, unchanged or inconclusive

    @property
    def ci_half_width(self) -> float:
        """Half-width of the confidence interval, relative to the ratio: the noise within the two runs."""
        return (self.ci_high - self.ci_low) / 2 / self.ratio


def ratio_interval(baseline: np.ndarray, candidate: np.ndarray, alpha: float, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (1 - alpha) of median(candidate) / median(baseline)."""
    rng = np.random.default_rng(seed)
    base = np.median(rng.choice(baseline, (BOOTSTRAP_SAMPLES, baseline.size)), axis=1)
    cand = np.median(rng.choice(candidate, (BOOTSTRAP_SAMPLES, candidate.size)), axis=1)
    low, high = np.quantile(cand / base, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def min_p_value(n_baseline: int, n_candidate: int) -> float:
    """The smallest two-sided p-value the exact U test can give: both samples fully separated."""
    return min(1.0, 2 / math.comb(n_baseline + n_candidate, n_baseline))


def u_test(baseline: np.ndarray, candidate: np.ndarray) -> float:
    return float(mannwhitneyu(candidate, baseline, alternative="two-sided").pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: rejecting where the adjusted p is below alpha keeps the chance of any
    false rejection among all of them at alpha."""
    order = np.argsort(p_values)
    adjusted, running = np.empty(len(p_values)), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def judge(case: str, baseline: np.ndarray, candidate: np.ndarray, threshold: float, alpha: float,
          p_value: float | None = None) -> Verdict:
    """Slower, faster or unchanged: effect beyond the threshold, interval clear of 1, and U test significant
    (`p_value`, adjusted by the caller, else the U test's own); inconclusive when the rounds are too few
    for the test ever to be."""
    ratio = float(np.median(candidate) / np.median(baseline))
    low, high = ratio_interval(baseline, candidate, alpha)
    p_value = u_test(baseline, candidate) if p_value is None else p_value
    significant = p_value < alpha
    if min_p_value(baseline.size, candidate.size) >= alpha:
        verdict = "inconclusive"
    elif ratio > 1 + threshold and low > 1 and significant:
        verdict = "slower"
    elif ratio < 1 / (1 + threshold) and high < 1 and significant:
        verdict = "faster"
    else:
        verdict = "unchanged"
    return Verdict(case, float(np.median(baseline)), float(np.median(candidate)), ratio, low, high, p_value,
                   verdict)


@dataclass(frozen=True)
class GateResult:
    verdicts: list[Verdict]
    new: list[str]
    vanished: list[str]
    threshold: float
    alpha: float
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
        counts = ", ".join(f"{sum(v.verdict == name for v in self.verdicts)} {name}"
                           for name in ("slower", "faster", "unchanged", "inconclusive"))
        lines = [f"### archbench gate: {candidate} vs {baseline}", ""]
        lines += [f"Environments differ (compared as asked): {'; '.join(self.differences)}", ""] \
            if self.differences else []
        lines += [
            f"{counts} of {len(self.verdicts)} cases; {len(self.broken)} broken "
            f"(threshold {self.threshold:.0%}, alpha {self.alpha}, Holm-adjusted over the cases).",
            "",
            "| case | verdict | baseline median | candidate median | ratio | CI of ratio | p (U test, Holm) "
            "| within-run CI half-width |",
            "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
        ]
        for v in sorted(self.verdicts, key=lambda v: -v.ratio):
            lines.append(f"| `{v.case}` | {v.verdict} | {v.baseline_median * 1e3:.3f} ms | "
                         f"{v.candidate_median * 1e3:.3f} ms | {v.ratio:.3f} | {v.ci_low:.3f}-{v.ci_high:.3f} | "
                         f"{v.p_value:.2g} | ±{v.ci_half_width:.1%} |")
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
    return load_results(path) if (path / "results.csv").is_file() else None


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


def gate(baseline: str, candidate: str, threshold: float | None = None, alpha: float = 0.01,
         reports_dir: Path = REPORTS_DIR, allow_different_env: bool = False, strict: bool = False) -> GateResult:
    """Judge every case present in both; raises RunError for unusable input or, unless allowed, runs from
    different environments."""
    if not 0 < alpha < 1:
        raise RunError(f"--alpha must be between 0 and 1, got {alpha}")
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
    if threshold is None:
        threshold = max(DEFAULT_THRESHOLD[base_device], DEFAULT_THRESHOLD[cand_device])
    p_values = holm([u_test(base[name], cand[name]) for name in common])
    verdicts = [judge(name, base[name], cand[name], threshold, alpha, p)
                for name, p in zip(common, p_values, strict=True)]
    return GateResult(verdicts, [n for n in cand if n not in base],
                      [n for n in base if n not in cand and n not in broken], threshold, alpha, broken,
                      differences, strict)


def write_step_summary(markdown: str) -> None:
    """Append to GitHub Actions' job summary when running there."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(markdown)
