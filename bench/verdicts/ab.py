"""Paired A/B timing, as asv's `continuous` does: `python -m bench ab BASE CANDIDATE -- SWEEP OPTIONS` runs
two git revisions of this checkout (worktrees sharing the installed environment), or one revision under
two Python interpreters, in K pairs of fresh processes. The two processes of a pair run side by side (pinned
to the same CPUs with `cpus`) and take turns (bench/verdicts/turns.py): A and B time each case back to back, in the same
iterations and rounds, under the same host speed, and neither builds, counts or profiles on the device
while the other times. What moves between pairs is the processes (clocks, placement, algorithm choices),
so a process's median per case is the unit of evidence: each case's verdict comes from the log-ratios of
its pairs (a t interval), with Holm's correction over the cases.

Each case is judged on one metric: `device` (the default) is the GPU's own time where every process
measured it (bench/run/devicetime.py) and the host's time otherwise (on a CPU they are the same); `host` is the
end-to-end time. A case is slower when its mean log-ratio is significant (Holm-adjusted p below alpha, the
interval above 1) and its ratio above 1 + half the threshold, so a real change of the threshold's size is
caught most of the time rather than half of it. A case found slower on host time fails only if K more
pairs find it slower again (host time drifts between pairs; device time hardly does).

With `instructions`, each process runs the sweep under valgrind's callgrind and a case's value is its
instruction count per step (bench/run/instructions.py): deterministic to well under 1 %, so one pair
suffices, the count's spread over the pairs stands in for an interval, and nothing is re-run."""

from __future__ import annotations

import contextlib
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

from bench import children
from bench.results.row import DEVICE_METHODS
from bench.results.rundir import RunDir, RunError, load_results, load_rounds, sweep_options
from bench.run.instructions import DUMP_DIR_ENV, InstructionsError, check_valgrind, helper, valgrind_command
from bench.verdicts import turns
from bench.verdicts.gate import broken_cases
from bench.verdicts.rule import tally, verdict
from bench.verdicts.turns import SIDES

METRICS = ("device", "host", "instructions")
# Pairs by the sweep's device. CPU: enough to find 10 % twice over through the ~8 % pair-to-pair spread of the
# 2-core CI machine. GPU: device time spreads ~1 % between processes (GPU-bound H200 cases agreed within
# 0.35-1.6 %); through that, 6 pairs find a 5 % change in one case of 10 in 95 % of runs (Holm over the
# 10), 4 pairs in 46 % (tests/test_ab.py).
DEFAULT_PAIRS = {"cpu": 16, "cuda": 6}
DEFAULT_ALPHA = 0.05  # chance of any false alarm over the cases (Holm)
DEFAULT_THRESHOLD = 0.05  # the change worth catching; a case is slower from half of it, when significant
MIN_EFFECT = 0.5  # of the threshold: the smallest ratio - 1 a slower (or faster) verdict needs
INSTRUCTION_PAIRS = 1
INSTRUCTION_THRESHOLD = 0.01
POWER = 0.8  # for the minimum detectable effect


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: rejecting where the adjusted p is below alpha keeps the chance of any
    false rejection among all of them at alpha."""
    order = np.argsort(p_values)
    adjusted, running = np.empty(len(p_values)), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class PairVerdict:
    case: str
    metric: str  # device, host or instructions: what the pairs' values are
    pairs: int
    ratio: float  # geometric mean of candidate / baseline process medians over the pairs
    ci_low: float
    ci_high: float
    p_value: float  # of the t test on the log-ratios, Holm-adjusted over the cases
    mde: float  # the smallest relative change these pairs could detect at alpha with power POWER
    verdict: str  # slower, faster, unchanged or inconclusive


def log_ratio_test(base: np.ndarray, cand: np.ndarray) -> float:
    """Two-sided p of the one-sample t test that the mean log-ratio of the pairs is 0."""
    from scipy import stats  # imported here: a second to load, and only a verdict needs it

    logs = np.log(cand / base)
    if logs.size < 2:
        return 1.0
    if np.ptp(logs) == 0:  # every pair gave the same ratio: no spread to test against
        return 1.0 if logs[0] == 0 else 0.0
    return float(stats.ttest_1samp(logs, 0.0).pvalue)


def judge_pairs(case: str, base: np.ndarray, cand: np.ndarray, threshold: float, alpha: float,
                p_value: float, metric: str = "host") -> PairVerdict:
    """Slower or faster when the (adjusted) p is below alpha, the interval clear of 1 and the mean log-ratio
    beyond MIN_EFFECT of the threshold; inconclusive when the pairs could not detect a change of the
    threshold's size; unchanged otherwise."""
    from scipy import stats

    logs = np.log(cand / base)
    k = logs.size
    mean = float(logs.mean())
    se = float(logs.std(ddof=1) / math.sqrt(k)) if k > 1 else math.inf
    t_alpha = float(stats.t.ppf(1 - alpha / 2, k - 1)) if k > 1 else math.inf
    t_power = float(stats.t.ppf(POWER, k - 1)) if k > 1 else math.inf
    low, high = math.exp(mean - t_alpha * se), math.exp(mean + t_alpha * se)
    mde = math.expm1((t_alpha + t_power) * se) if se < math.inf else math.inf
    ratio = math.exp(mean)
    called = verdict(ratio, (low, high), mde, threshold, bar=1 + MIN_EFFECT * threshold, significant=p_value < alpha)
    return PairVerdict(case, metric, k, ratio, low, high, p_value, mde, called)


def judge_all(values: pd.DataFrame, threshold: float, alpha: float) -> list[PairVerdict]:
    """Every case with a value on both sides in every pair; `values` has columns case, pair, side, value
    and metric (one per case)."""
    table = values.pivot_table(index=["case", "pair"], columns="side", values="value").dropna()
    metric = values.groupby("case")["metric"].first()
    cases = [(case, group["A"].to_numpy(), group["B"].to_numpy()) for case, group in table.groupby(level="case")]
    p_values = holm([log_ratio_test(base, cand) for _, base, cand in cases])
    return [judge_pairs(case, base, cand, threshold, alpha, p, metric[case])
            for (case, base, cand), p in zip(cases, p_values, strict=True)]


def judged_values(medians: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per case and process: the device's time for the cases where every process measured it the
    same way (metric `device`; a graph's replays and the profiler's busy time are not one quantity), the
    host's median otherwise; with the metric each case was judged on."""
    if metric == "instructions":
        return medians.assign(value=medians["instructions"], metric="instructions")
    cases = medians.groupby("case")
    on_device = (cases["device_s"].transform(lambda d: d.notna().all())
                 & cases["device_method"].transform(lambda m: m.nunique(dropna=False) == 1)) if metric == "device" \
        else pd.Series(False, index=medians.index)
    return medians.assign(value=medians["device_s"].where(on_device, medians["host_s"]),
                          metric=np.where(on_device, "device", "host"))


def judge_counts(counts: pd.DataFrame, threshold: float) -> list[PairVerdict]:
    """Instruction counts (columns case, pair, side, value): slower or faster when the ratio of the
    sides' medians is beyond the threshold and their ranges do not overlap; inconclusive when a side's
    counts spread by the threshold or more. The interval is the range of B/A over all counts; `mde` holds
    the larger side's spread (max / min - 1)."""
    table = counts.pivot_table(index=["case", "pair"], columns="side", values="value").dropna()
    verdicts = []
    for case, group in table.groupby(level="case"):
        base, cand = group["A"].to_numpy(), group["B"].to_numpy()
        ratio = float(np.median(cand) / np.median(base))
        spread = max(float(side.max() / side.min() - 1) for side in (base, cand))
        low, high = float(cand.min() / base.max()), float(cand.max() / base.min())
        verdicts.append(PairVerdict(case, "instructions", len(base), ratio, low, high, math.nan, spread,
                                    verdict(ratio, (low, high), spread, threshold)))
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
    metric: str = "device"  # instructions: run under callgrind and keep each case's instruction count
    envs: dict[str, dict[str, str]] = field(default_factory=dict)  # variables for one side's processes
    cpus: tuple[int, ...] = ()  # the CPUs both sides' processes are pinned to (none: left as they are)
    medians: list[dict] = field(default_factory=list)
    statuses: list[dict] = field(default_factory=list)

    @property
    def instructions(self) -> bool:
        return self.metric == "instructions"

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
        with contextlib.ExitStack() as stack:  # however the pair ends, no sweep is left behind
            sweeps: dict[str, children.Child] = {}
            for side in SIDES:
                command = [self.pythons[side], "-m", "pytest", *(self.sweep_args or ["bench"]), *select,
                           "--benchmark-only", "-q", "-p", "no:cacheprovider", *sweep_options(run_ids[side], self.out),
                           *plugin_args(self.roots[side])]
                env = {**os.environ, **self.envs.get(side, {}), "PYTHONPATH": str(self.roots[side])}
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
                sweeps[side] = stack.enter_context(children.started(
                    command, self.out / f"{run_ids[side]}.log", cwd=self.roots[side], env=env, pass_fds=passed,
                    preexec_fn=(lambda: os.sched_setaffinity(0, self.cpus)) if self.cpus else None))
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
            return {side: sweep.wait() for side, sweep in sweeps.items()}

    def _collect(self, name: str, pair: int, side: str, run_id: str, code: int) -> None:
        """Keep one process's medians (or counts) and its cases' statuses."""
        if code not in (0, 1) or not RunDir(self.out / run_id).results_csv.is_file():
            raise RunError(f"the sweep on side {side} failed (pytest exit code {code}; see {self.out / run_id}.log)")
        results = load_results(self.out / run_id)
        ok = results[results["status"] == "ok"].set_index("case_id")
        key = {"round": name, "pair": pair, "side": side}
        if self.instructions:
            self.medians += [{**key, "case": case, "instructions": float(count)}
                             for case, count in ok["instructions"].items()]
        else:  # a device time where the GPU's own was measured (older revisions write none)
            method = ok["device_method"].where(ok["device_method"].isin(DEVICE_METHODS)) \
                if "device_method" in ok else pd.Series(dtype=object)
            device = ok["device_s"].where(method.notna()) if "device_s" in ok else pd.Series(dtype=float)
            self.medians += [{**key, "case": case, "host_s": float(np.median(r)),
                              "device_s": float(device.get(case, math.nan)), "device_method": method.get(case)}
                             for case, r in load_rounds(self.out / run_id)[0].items()]
        self.statuses += [{"round": name, "pair": pair, "side": side, "case_id": row.case_id,
                           "status": row.status, "reason": row.reason} for row in results.itertuples()]

    def judge(self, name: str, threshold: float, alpha: float, only: list[str] | None = None) -> list[PairVerdict]:
        """The verdicts of one round of pairs (of the cases `only`, if given)."""
        values = self.frame(name)
        values = values[values["case"].isin(only)] if only else values
        return judge_counts(values, threshold) if self.instructions else judge_all(values, threshold, alpha)

    def frame(self, name: str = "first") -> pd.DataFrame:
        """The values judged of one round of pairs (judged_values)."""
        frame = pd.DataFrame(self.medians)
        return judged_values(frame[frame["round"] == name], self.metric)


def parse_cpus(text: str) -> tuple[int, ...]:
    """CPU numbers from a list such as 0-3,6 (taskset's form), each one this process may use."""
    allowed = os.sched_getaffinity(0)
    try:
        cpus = sorted({cpu for part in text.split(",") for cpu in _cpu_range(part)})
    except ValueError:
        raise RunError(f"--cpus: '{text}' is not a CPU list such as 0-3,6") from None
    outside = [cpu for cpu in cpus if cpu not in allowed]
    if not cpus or outside:
        raise RunError(f"--cpus: {outside or text} not among the CPUs this process may use "
                       f"({','.join(map(str, sorted(allowed)))})")
    return tuple(cpus)


def _cpu_range(part: str) -> range:
    first, _, last = part.strip().partition("-")
    return range(int(first), int(last or first) + 1)


@dataclass(frozen=True)
class ABResult:
    verdicts: list[PairVerdict]
    confirmed: dict[str, PairVerdict]  # the host-time slower cases' verdicts from the re-run pairs
    broken: dict[str, str]  # case -> status and reason on B where A was ok
    threshold: float
    alpha: float
    labels: tuple[str, str]
    metric: str = "device"

    @property
    def failing(self) -> list[PairVerdict]:
        """The slower cases that fail: on host time only when the re-run found them slower again."""
        return [v for v in self.verdicts if v.verdict == "slower"
                and (v.metric != "host" or getattr(self.confirmed.get(v.case), "verdict", "") == "slower")]

    @property
    def failed(self) -> bool:
        return bool(self.broken or self.failing)

    def markdown(self) -> str:
        base, cand = self.labels
        instructions = self.metric == "instructions"
        counts = tally([v.verdict for v in self.verdicts])
        if instructions:
            how = f"threshold {self.threshold:.0%}; callgrind's instruction counts, which need no re-run"
            header = ["| case | verdict | pairs | ratio B/A | range of ratio | count spread |",
                      "| --- | --- | ---: | ---: | --- | ---: |"]
        else:
            how = (f"threshold {self.threshold:.0%}, slower from {MIN_EFFECT * self.threshold:.1%} when significant; "
                   f"alpha {self.alpha}, Holm-adjusted; per-process medians, paired; slower on host time re-run")
            header = ["| case | verdict | time | pairs | ratio B/A | CI of ratio | p (t, Holm) | detectable | re-run |",
                      "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
        lines = [f"### archbench ab: {cand} (B) vs {base} (A)", "",
                 f"{counts} of {len(self.verdicts)} cases; {len(self.failing)} slower fail; {len(self.broken)} "
                 f"broken ({how}).", "", *header]
        for v in sorted(self.verdicts, key=lambda v: -v.ratio):
            again = self.confirmed.get(v.case)
            digits = 4 if instructions else 3  # a 1 % threshold needs the fourth
            cells = [f"`{v.case}`", v.verdict, *([] if instructions else [v.metric]), str(v.pairs),
                     f"{v.ratio:.{digits}f}", f"{v.ci_low:.{digits}f}-{v.ci_high:.{digits}f}"]
            cells += ([f"{v.mde:.3%}"] if instructions else
                      [f"{v.p_value:.2g}", f"±{v.mde:.1%}", again.verdict if again else ""])
            lines.append("| " + " | ".join(cells) + " |")
        if self.broken:
            lines += ["", "Broken on B (ok on A; fails):"] + [f"- `{c}`: {what}" for c, what in self.broken.items()]
        return "\n".join(lines) + "\n"


def plugin_args(root: Path) -> list[str]:
    """A revision from before the plugin (its hooks in the root conftest.py) runs with the installed plugin
    turned off: both would register the sweep's options."""
    return [] if (root / "bench" / "run" / "plugin.py").is_file() else ["-p", "no:archbench"]


def _worktree(repo: Path, ref: str, into: Path) -> Path:
    done = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(into), ref],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RunError(f"{ref}: not a revision of {repo} ({(done.stderr.strip().splitlines() or ['?'])[-1]})")
    return into


def sweep_device(sweep_args: list[str]) -> str:
    """The device type the sweep's processes time on: its --device, auto (a GPU where there is one) unless
    given."""
    from bench.sweep.options import OptionError, resolve_device  # torch: only when ab runs, not for every --help
    value = "auto"
    for i, arg in enumerate(sweep_args):
        if arg == "--device" and i + 1 < len(sweep_args):
            value = sweep_args[i + 1]
        elif arg.startswith("--device="):
            value = arg.split("=", 1)[1]
    try:
        return resolve_device(value).type
    except OptionError as err:
        raise RunError(str(err)) from None


def ab(base: str, candidate: str, sweep_args: list[str], out: Path, pairs: int | None = None,
       threshold: float | None = None, alpha: float = DEFAULT_ALPHA, python_a: str = sys.executable,
       python_b: str = sys.executable, repo: Path | None = None, log: Callable[[str], None] = print,
       metric: str = "device", envs: dict[str, dict[str, str]] | None = None,
       cpus: tuple[int, ...] = ()) -> ABResult:
    """Run BASE (A) and CANDIDATE (B) of `repo` (default: the working directory's) in K pairs of processes
    into `out` and judge every case on `metric` (device, host or instructions), re-running the slower ones
    judged on host time. `pairs` and `threshold` default by metric and device; `envs` adds environment
    variables to one side's processes; `cpus` pins both sides' processes to the same CPUs."""
    repo = repo or Path.cwd()
    out = out.resolve()  # each side's sweep runs in its own worktree: a relative folder would land there
    if metric not in METRICS:
        raise RunError(f"--metric must be one of {', '.join(METRICS)}, got {metric}")
    instructions = metric == "instructions"
    pairs = (INSTRUCTION_PAIRS if instructions else DEFAULT_PAIRS[sweep_device(sweep_args)]) if pairs is None \
        else pairs
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
        roots: dict[str, Path] = {}
        try:  # a bad candidate revision leaves no worktree of the base behind either
            for side, ref in (("A", base), ("B", candidate)):
                roots[side] = _worktree(repo, ref, Path(tmp) / side)
            pythons = {"A": python_a, "B": python_b}
            labels = {side: ref + (f" with {pythons[side]}" if python_a != python_b else "")
                      for side, ref in (("A", base), ("B", candidate))}
            run = ABRun(roots, pythons, labels, sweep_args, out, log, metric, envs or {}, cpus)
            run.run_pairs(pairs)
            verdicts = run.judge("first", threshold, alpha)
            again = [v.case for v in verdicts if v.verdict == "slower" and v.metric == "host"]
            confirmed = {}
            if again:
                log(f"ab: {len(again)} slower on host time; re-running {pairs} more pairs of those cases")
                run.run_pairs(pairs, name="confirm", only=again)
                confirmed = {v.case: v for v in run.judge("confirm", threshold, alpha, only=again)}
        finally:
            for root in roots.values():
                subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(root)],
                               capture_output=True)
    pd.DataFrame(run.medians).to_csv(out / "medians.csv", index=False)
    statuses = pd.DataFrame(run.statuses)
    side_a, side_b = (statuses[statuses["side"] == side] for side in ("A", "B"))
    broken = broken_cases(side_a.loc[side_a["status"] == "ok", "case_id"], side_b)
    result = ABResult(verdicts, confirmed, broken, threshold, alpha, (base, candidate), metric)
    (out / "ab.md").write_text(result.markdown())
    return result
