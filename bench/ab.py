"""Paired A/B timing, as asv's `continuous` does: `python -m bench ab BASE CANDIDATE -- SWEEP OPTIONS` runs
two git revisions of this checkout (worktrees sharing the installed environment), or one revision under
two Python interpreters, in K pairs of fresh processes. The two processes of a pair run side by side and
take turns (bench/turns.py), so A and B time each case back to back, under the same host speed. What
moves between pairs is the processes (clocks, placement, algorithm choices), so a process's median per
case is the unit of evidence: each case's verdict comes from the log-ratios of its pairs (a t interval),
with Holm's correction over the cases, and a case found slower fails only if K more pairs find it slower
again.

With `instructions`, each process runs the sweep under valgrind's callgrind and a case's value is its
instruction count per step (bench/instructions.py): deterministic to well under 1 %, so one pair
suffices, the count's spread over the pairs stands in for an interval, and nothing is re-run."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench import turns
from bench.gate import broken_cases, holm
from bench.instructions import DUMP_DIR_ENV, InstructionsError, check_valgrind, helper, valgrind_command
from bench.rundir import RunError, load_results, load_rounds, sweep_options
from bench.turns import SIDES

DEFAULT_PAIRS = 16  # enough to find 10 % twice over through the ~8 % pair-to-pair spread of the 2-core CI machine
DEFAULT_ALPHA = 0.05  # per round; a slower case must be found in both rounds, so a false alarm's chance is ~alpha^2
DEFAULT_THRESHOLD = 0.05  # process medians of one revision drift far less than single runs' rounds do
INSTRUCTION_PAIRS = 1
INSTRUCTION_THRESHOLD = 0.01
POWER = 0.8  # for the minimum detectable effect


@dataclass(frozen=True)
class PairVerdict:
    case: str
    pairs: int
    ratio: float  # geometric mean of candidate / baseline process medians over the pairs
    ci_low: float
    ci_high: float
    p_value: float  # of the t test on the log-ratios, Holm-adjusted over the cases
    mde: float  # the smallest relative change these pairs could detect at alpha with power POWER
    verdict: str  # slower, faster, unchanged or inconclusive


def log_ratio_test(base: np.ndarray, cand: np.ndarray) -> float:
    """Two-sided p of the one-sample t test that the mean log-ratio of the pairs is 0."""
    logs = np.log(cand / base)
    if logs.size < 2:
        return 1.0
    if np.ptp(logs) == 0:  # every pair gave the same ratio: no spread to test against
        return 1.0 if logs[0] == 0 else 0.0
    return float(stats.ttest_1samp(logs, 0.0).pvalue)


def judge_pairs(case: str, base: np.ndarray, cand: np.ndarray, threshold: float, alpha: float,
                p_value: float) -> PairVerdict:
    """Slower or faster when the mean log-ratio is beyond the threshold, its interval clear of 0 and the
    (adjusted) p below alpha; inconclusive when the pairs could not detect a change of the threshold's size."""
    logs = np.log(cand / base)
    k = logs.size
    mean = float(logs.mean())
    se = float(logs.std(ddof=1) / math.sqrt(k)) if k > 1 else math.inf
    t_alpha = float(stats.t.ppf(1 - alpha / 2, k - 1)) if k > 1 else math.inf
    t_power = float(stats.t.ppf(POWER, k - 1)) if k > 1 else math.inf
    low, high = math.exp(mean - t_alpha * se), math.exp(mean + t_alpha * se)
    mde = math.expm1((t_alpha + t_power) * se) if se < math.inf else math.inf
    ratio = math.exp(mean)
    significant = p_value < alpha
    if ratio > 1 + threshold and low > 1 and significant:
        verdict = "slower"
    elif ratio < 1 / (1 + threshold) and high < 1 and significant:
        verdict = "faster"
    elif mde > threshold:
        verdict = "inconclusive"
    else:
        verdict = "unchanged"
    return PairVerdict(case, k, ratio, low, high, p_value, mde, verdict)


def judge_all(medians: pd.DataFrame, threshold: float, alpha: float) -> list[PairVerdict]:
    """Every case with a median on both sides in every pair; `medians` has columns case, pair, side, median_s."""
    table = medians.pivot_table(index=["case", "pair"], columns="side", values="median_s").dropna()
    cases = [(case, group["A"].to_numpy(), group["B"].to_numpy()) for case, group in table.groupby(level="case")]
    p_values = holm([log_ratio_test(base, cand) for _, base, cand in cases])
    return [judge_pairs(case, base, cand, threshold, alpha, p)
            for (case, base, cand), p in zip(cases, p_values, strict=True)]


def judge_counts(counts: pd.DataFrame, threshold: float) -> list[PairVerdict]:
    """Instruction counts (columns case, pair, side, instructions): slower or faster when the ratio of the
    sides' medians is beyond the threshold and their ranges do not overlap; inconclusive when a side's
    counts spread by the threshold or more. The interval is the range of B/A over all counts; `mde` holds
    the larger side's spread (max / min - 1)."""
    table = counts.pivot_table(index=["case", "pair"], columns="side", values="instructions").dropna()
    verdicts = []
    for case, group in table.groupby(level="case"):
        base, cand = group["A"].to_numpy(), group["B"].to_numpy()
        ratio = float(np.median(cand) / np.median(base))
        spread = max(float(side.max() / side.min() - 1) for side in (base, cand))
        low, high = float(cand.min() / base.max()), float(cand.max() / base.min())
        if ratio > 1 + threshold and low > 1:
            verdict = "slower"
        elif ratio < 1 / (1 + threshold) and high < 1:
            verdict = "faster"
        elif spread >= threshold:
            verdict = "inconclusive"
        else:
            verdict = "unchanged"
        verdicts.append(PairVerdict(case, len(base), ratio, low, high, math.nan, spread, verdict))
    return verdicts


@dataclass
class ABRun:
    """Where the processes run (a worktree and an interpreter per side) and where their runs go."""

    roots: dict[str, Path]
    pythons: dict[str, str]
    labels: dict[str, str]  # what each side is, for the progress lines: its revision (and interpreter)
    sweep_args: list[str]
    out: Path
    log: Callable[[str], None] = print
    instructions: bool = False  # run under callgrind and keep each case's instruction count
    medians: list[dict] = field(default_factory=list)
    statuses: list[dict] = field(default_factory=list)

    @property
    def value(self) -> str:
        """What each process gives per case: its median seconds, or its instructions per step."""
        return "instructions" if self.instructions else "median_s"

    def run_pairs(self, pairs: int, name: str = "first", only: list[str] | None = None) -> None:
        """K pairs, each two fresh pytest processes side by side that take turns timing each case (under
        callgrind they need not), the side that goes first alternating from pair to pair; each case's median
        (or count) kept per process, under the round's `name` (first, or confirm). `only`: these case ids."""
        prefix = "" if name == "first" else f"{name} "
        start = time.monotonic()
        for pair in range(pairs):
            elapsed = time.monotonic() - start
            eta = f", about {elapsed / pair * (pairs - pair):.0f} s left" if pair else ""
            self.log(f"ab: {prefix}pair {pair + 1}/{pairs} (A: {self.labels['A']}; B: {self.labels['B']}), "
                     f"{elapsed:.0f} s elapsed{eta}")
            run_ids = {side: f"{prefix}{side}-{pair + 1}".replace(" ", "-") for side in SIDES}
            codes = self._run_pair(run_ids, SIDES[pair % 2], only)
            for side in SIDES:
                self._collect(name, pair, side, run_ids[side], codes[side])

    def _run_pair(self, run_ids: dict[str, str], first: str, only: list[str] | None) -> dict[str, int]:
        """Start both sides' sweeps, referee their turns, and return their exit codes."""
        select = ["-k", " or ".join(f"[{case}]" for case in only)] if only else []  # the last -k is the one
        pipes = {side: (os.pipe(), os.pipe()) for side in SIDES} if not self.instructions else {}
        procs: dict[str, subprocess.Popen] = {}
        try:
            for side in SIDES:
                command = [self.pythons[side], "-m", "pytest", *(self.sweep_args or ["bench"]), *select,
                           "--benchmark-only", "-q", "-p", "no:cacheprovider", *sweep_options(run_ids[side], self.out)]
                env = {**os.environ, "PYTHONPATH": str(self.roots[side])}
                passed: tuple[int, ...] = ()
                if self.instructions:  # callgrind's dumps (for callgrind_annotate) beside the run folder
                    dumps = self.out / f"{run_ids[side]}.callgrind"
                    dumps.mkdir()
                    command = [*valgrind_command(dumps), *command, "--instructions"]
                    env.update({DUMP_DIR_ENV: str(dumps), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"})
                else:
                    (to_child, _), (_, from_child) = pipes[side]
                    passed = (to_child, from_child)
                    env[turns.ENV] = f"{to_child},{from_child}"
                with open(self.out / f"{run_ids[side]}.log", "w") as log:
                    procs[side] = subprocess.Popen(command, cwd=self.roots[side], stdout=log, stderr=subprocess.STDOUT,
                                                   env=env, pass_fds=passed)
            if pipes:
                for (to_child, _), (_, from_child) in pipes.values():  # the children's ends: theirs alone now
                    os.close(to_child)
                    os.close(from_child)
                readers = {side: os.fdopen(pipes[side][1][0]) for side in SIDES}
                writers = {side: os.fdopen(pipes[side][0][1], "w") for side in SIDES}
                try:
                    turns.Referee(readers, writers, first).run()
                finally:
                    for pipe in [*readers.values(), *writers.values()]:
                        pipe.close()
            return {side: proc.wait() for side, proc in procs.items()}
        finally:
            for proc in procs.values():  # an interrupted referee leaves no sweep behind
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def _collect(self, name: str, pair: int, side: str, run_id: str, code: int) -> None:
        """Keep one process's medians (or counts) and its cases' statuses."""
        if code not in (0, 1) or not (self.out / run_id / "results.csv").is_file():
            raise RunError(f"the sweep on side {side} failed (pytest exit code {code}; see {self.out / run_id}.log)")
        results = load_results(self.out / run_id)
        if self.instructions:
            ok = results[results["status"] == "ok"]
            values = dict(zip(ok["case_id"], ok["instructions"].astype(float), strict=True))
        else:
            values = {case: float(np.median(r)) for case, r in load_rounds(self.out / run_id)[0].items()}
        self.medians += [{"round": name, "pair": pair, "side": side, "case": case, self.value: value}
                         for case, value in values.items()]
        self.statuses += [{"round": name, "pair": pair, "side": side, "case_id": row.case_id,
                           "status": row.status, "reason": row.reason} for row in results.itertuples()]

    def frame(self, name: str = "first") -> pd.DataFrame:
        """The medians of one round of pairs."""
        frame = pd.DataFrame(self.medians)
        return frame[frame["round"] == name]


@dataclass(frozen=True)
class ABResult:
    verdicts: list[PairVerdict]
    confirmed: dict[str, PairVerdict]  # the slower cases' verdicts from the confirming pairs
    broken: dict[str, str]  # case -> status and reason on B where A was ok
    threshold: float
    alpha: float
    labels: tuple[str, str]
    instructions: bool = False

    @property
    def failed(self) -> bool:
        return bool(self.broken or any(v.verdict == "slower" for v in self.confirmed.values()))

    def markdown(self) -> str:
        base, cand = self.labels
        counts = ", ".join(f"{sum(v.verdict == name for v in self.verdicts)} {name}"
                           for name in ("slower", "faster", "unchanged", "inconclusive"))
        confirmed = sum(v.verdict == "slower" for v in self.confirmed.values())
        if self.instructions:
            how = f"threshold {self.threshold:.0%}; callgrind's instruction counts, which need no confirming"
            header = ["| case | verdict | pairs | ratio B/A | range of ratio | count spread |",
                      "| --- | --- | ---: | ---: | --- | ---: |"]
        else:
            how = f"threshold {self.threshold:.0%}, alpha {self.alpha}, Holm-adjusted; per-process medians, paired"
            header = ["| case | verdict | pairs | ratio B/A | CI of ratio | p (t, Holm) | detectable | confirmed |",
                      "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
        lines = [f"### archbench ab: {cand} (B) vs {base} (A)", "",
                 f"{counts} of {len(self.verdicts)} cases; {confirmed} of {len(self.confirmed)} slower confirmed; "
                 f"{len(self.broken)} broken ({how}).", "", *header]
        for v in sorted(self.verdicts, key=lambda v: -v.ratio):
            again = self.confirmed.get(v.case)
            digits = 4 if self.instructions else 3  # a 1 % threshold needs the fourth
            cells = [f"`{v.case}`", v.verdict, str(v.pairs), f"{v.ratio:.{digits}f}",
                     f"{v.ci_low:.{digits}f}-{v.ci_high:.{digits}f}"]
            cells += ([f"{v.mde:.3%}"] if self.instructions else
                      [f"{v.p_value:.2g}", f"±{v.mde:.1%}", again.verdict if again else ""])
            lines.append("| " + " | ".join(cells) + " |")
        if self.broken:
            lines += ["", "Broken on B (ok on A; fails):"] + [f"- `{c}`: {what}" for c, what in self.broken.items()]
        return "\n".join(lines) + "\n"


def _worktree(repo: Path, ref: str, into: Path) -> Path:
    done = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(into), ref],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RunError(f"{ref}: not a revision of {repo} ({(done.stderr.strip().splitlines() or ['?'])[-1]})")
    return into


def ab(base: str, candidate: str, sweep_args: list[str], out: Path, pairs: int | None = None,
       threshold: float | None = None, alpha: float = DEFAULT_ALPHA, python_a: str = sys.executable,
       python_b: str = sys.executable, repo: Path | None = None, log: Callable[[str], None] = print,
       instructions: bool = False) -> ABResult:
    """Run BASE (A) and CANDIDATE (B) of `repo` (default: the working directory's) in K pairs of processes
    into `out`, judge every case, confirm the slower ones (timing), or judge their instruction counts
    (`instructions`). `pairs` and `threshold` default by mode."""
    repo = repo or Path.cwd()
    out = out.resolve()  # each side's sweep runs in its own worktree: a relative folder would land there
    pairs = (INSTRUCTION_PAIRS if instructions else DEFAULT_PAIRS) if pairs is None else pairs
    threshold = (INSTRUCTION_THRESHOLD if instructions else DEFAULT_THRESHOLD) if threshold is None else threshold
    least = 1 if instructions else 2  # a t interval needs two pairs; a count does not
    if pairs < least:
        raise RunError(f"--pairs must be at least {least}, got {pairs}")
    if not 0 < alpha < 1 or threshold < 0:
        raise RunError(f"--alpha must be between 0 and 1 and --threshold not negative, got {alpha}, {threshold}")
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out}: not empty; ab writes into a new folder")
    if instructions:
        try:  # valgrind there, and the helper compiled once before any process needs it
            check_valgrind()
            helper()
        except InstructionsError as err:
            raise RunError(str(err)) from None
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="archbench-ab-") as tmp:
        roots = {"A": _worktree(repo, base, Path(tmp) / "A"), "B": _worktree(repo, candidate, Path(tmp) / "B")}
        try:
            pythons = {"A": python_a, "B": python_b}
            labels = {side: ref + (f" with {pythons[side]}" if python_a != python_b else "")
                      for side, ref in (("A", base), ("B", candidate))}
            run = ABRun(roots, pythons, labels, sweep_args, out, log, instructions)
            run.run_pairs(pairs)
            if instructions:
                verdicts = judge_counts(run.frame(), threshold)
            else:
                verdicts = judge_all(run.frame(), threshold, alpha)
            slower = [v.case for v in verdicts if v.verdict == "slower"]
            confirmed = {v.case: v for v in verdicts if v.verdict == "slower"} if instructions else {}
            if slower and not instructions:
                log(f"ab: {len(slower)} slower; confirming with {pairs} more pairs of those cases")
                run.run_pairs(pairs, name="confirm", only=slower)
                again = run.frame("confirm")
                confirmed = {v.case: v for v in judge_all(again[again["case"].isin(slower)], threshold, alpha)}
        finally:
            for root in roots.values():
                subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(root)],
                               capture_output=True)
    pd.DataFrame(run.medians).to_csv(out / "medians.csv", index=False)
    statuses = pd.DataFrame(run.statuses)
    side_a, side_b = (statuses[statuses["side"] == side] for side in ("A", "B"))
    broken = broken_cases(side_a.loc[side_a["status"] == "ok", "case_id"], side_b)
    result = ABResult(verdicts, confirmed, broken, threshold, alpha, (base, candidate), instructions)
    (out / "ab.md").write_text(result.markdown())
    return result
