"""The regression gate: baseline vs candidate, case by case, from the raw rounds.

A case is `slower` only when three things hold: its median grew by more than the threshold (the minimum
effect worth failing a build), a bootstrap confidence interval of the ratio of medians lies above 1,
and a Mann-Whitney U test rejects equal distributions at `alpha`. `faster` mirrors it. The interval's
half-width is each case's resolution: changes smaller than that cannot be told from the noise within
the runs, and run-to-run drift (large on shared CPUs: the README gives the figures measured on the 2-core
CI machines) is what the threshold must cover.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from bench.rundir import REPORTS_DIR, RunError, load_rounds

# Default minimum effect by device. CPU: 10 A/A pairs of quick runs on the idle 2-core machines shifted
# per-case medians by up to 45 % (p90 13 %); 50 % failed none of them, 30 % failed two. GPU: two A/A pairs
# on an H200 moved sub-millisecond attention cases by up to 20 % and launch-bound model cases by up to 65 %
# (GPU-bound ones by 4 %); 25 % passes the first pair and fails one launch-bound case of the second (README).
DEFAULT_THRESHOLD = {"cuda": 0.25, "cpu": 0.5}
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Verdict:
    case: str
    baseline_median: float
    candidate_median: float
    ratio: float  # candidate median / baseline median: above 1 is slower
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str  # slower, faster or unchanged

    @property
    def resolution(self) -> float:
        """Half-width of the confidence interval, relative to the ratio."""
        return (self.ci_high - self.ci_low) / 2 / self.ratio


def ratio_interval(baseline: np.ndarray, candidate: np.ndarray, alpha: float, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (1 - alpha) of median(candidate) / median(baseline)."""
    rng = np.random.default_rng(seed)
    base = np.median(rng.choice(baseline, (BOOTSTRAP_SAMPLES, baseline.size)), axis=1)
    cand = np.median(rng.choice(candidate, (BOOTSTRAP_SAMPLES, candidate.size)), axis=1)
    low, high = np.quantile(cand / base, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def judge(case: str, baseline: np.ndarray, candidate: np.ndarray, threshold: float, alpha: float) -> Verdict:
    """Slower, faster or unchanged: effect beyond the threshold, interval clear of 1, and U test significant."""
    ratio = float(np.median(candidate) / np.median(baseline))
    low, high = ratio_interval(baseline, candidate, alpha)
    p_value = float(mannwhitneyu(candidate, baseline, alternative="two-sided").pvalue)
    significant = p_value < alpha
    if ratio > 1 + threshold and low > 1 and significant:
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

    @property
    def regressions(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.verdict == "slower"]

    def markdown(self, baseline: str, candidate: str) -> str:
        """The table a person (or a CI step summary) reads: slowest changes first."""
        lines = [
            f"### archbench gate: {candidate} vs {baseline}",
            "",
            f"{len(self.regressions)} slower, {sum(v.verdict == 'faster' for v in self.verdicts)} faster, "
            f"{sum(v.verdict == 'unchanged' for v in self.verdicts)} unchanged of {len(self.verdicts)} cases "
            f"(threshold {self.threshold:.0%}, alpha {self.alpha}).",
            "",
            "| case | verdict | baseline median | candidate median | ratio | CI of ratio | p (U test) | resolution |",
            "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
        ]
        for v in sorted(self.verdicts, key=lambda v: -v.ratio):
            lines.append(f"| `{v.case}` | {v.verdict} | {v.baseline_median * 1e3:.3f} ms | "
                         f"{v.candidate_median * 1e3:.3f} ms | {v.ratio:.3f} | {v.ci_low:.3f}-{v.ci_high:.3f} | "
                         f"{v.p_value:.2g} | ±{v.resolution:.1%} |")
        for title, names in (("New cases (not gated)", self.new), ("Vanished cases (not gated)", self.vanished)):
            if names:
                lines += ["", f"{title}: " + ", ".join(f"`{name}`" for name in names)]
        return "\n".join(lines) + "\n"


def gate(baseline: str, candidate: str, threshold: float | None = None, alpha: float = 0.01,
         reports_dir: Path = REPORTS_DIR) -> GateResult:
    """Judge every case present in both; raises RunError for unusable input."""
    if not 0 < alpha < 1:
        raise RunError(f"--alpha must be between 0 and 1, got {alpha}")
    if threshold is not None and threshold < 0:
        raise RunError(f"--threshold must not be negative, got {threshold}")
    base, base_device = load_rounds(baseline, reports_dir)
    cand, cand_device = load_rounds(candidate, reports_dir)
    common = [name for name in base if name in cand]
    if not common:
        raise RunError(f"{baseline} and {candidate} share no benchmark: nothing to compare")
    if threshold is None:
        threshold = max(DEFAULT_THRESHOLD[base_device], DEFAULT_THRESHOLD[cand_device])
    verdicts = [judge(name, base[name], cand[name], threshold, alpha) for name in common]
    return GateResult(verdicts, [n for n in cand if n not in base], [n for n in base if n not in cand],
                      threshold, alpha)


def write_step_summary(markdown: str) -> None:
    """Append to GitHub Actions' job summary when running there."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(markdown)
