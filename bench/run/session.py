"""The run driver pytest's hooks call, as pytest-benchmark's session.py is to its plugin: it times each case
through the harness, profiles it when asked, records its Row in reports/<run-id>/ as it ends, and at the
end writes pytest-benchmark's JSON and the report."""

from __future__ import annotations

import dataclasses
import gc
import time
from collections import Counter
from collections.abc import Callable, Sequence

import pytest
import torch

from bench.errors import one_line
from bench.machine import calibrate
from bench.machine.environment import fingerprint
from bench.results.peaks import peak_kernel, peak_tflops
from bench.results.row import Row
from bench.results.rundir import RunDir, RunWriter
from bench.run import stopping
from bench.run.budget import Budget
from bench.run.flopcache import FlopCache
from bench.run.harness import WARMUP_S, Builds, Settings, run_case
from bench.run.profile import profile_case
from bench.sweep.options import SweepOptions
from bench.verdicts import turns


class Session:
    """One sweep: its options, the machine's calibration, its budget, the builds and FLOP counts its cases
    share, and the writer of its run folder (made when the first case ends, so a session that runs no case
    leaves no empty folder)."""

    def __init__(self, options: SweepOptions, calibration: dict | None = None):
        self.options = options
        self.budget = Budget(options.budget, 0) if options.budget else None  # its clock starts here
        device = options.device.type
        settle = turns.SETTLE_S if turns.active() else 0.0  # the other process of an ab pair settles first
        # no stopping rule under ab: both sides of a pair time the same rounds
        target = 0.0 if turns.active() else stopping.TARGETS[device] if options.ci_target is None else options.ci_target
        self.settings = Settings(device=options.device, max_time=options.max_time, min_rounds=options.min_rounds,
                                 warmup_s=max(WARMUP_S[device], settle), instructions=options.instructions,
                                 target=target, min_time=min(stopping.MIN_TIME_S[device], options.max_time))
        self.builds, self.flop_cache = Builds(), FlopCache()
        self.cut: list[str] = []  # cases the budget stopped before they converged
        self.threads = torch.get_num_threads()  # restored when the run ends
        if options.instructions:  # one thread: counts that do not depend on how work was split
            torch.set_num_threads(1)
            calibration = {}  # nothing is timed, so no peak to judge against
        if calibration is None:
            with turns.timed("calibration"):  # matmuls on the device: not beside the other ab process's timing
                calibration = calibrate.load_or_measure(options.device)
        self.calibration = calibration
        # Everything loaded so far (torch, pytest, the collected cases) is kept out of every later collection:
        # the harness collects garbage three times a case, ~0.15 s each over all of it, ~1 ms after this.
        gc.freeze()
        self.writer: RunWriter | None = None
        self.benchmarks: list = []  # pytest-benchmark's records of the timed cases, for its JSON
        self.report_line = ""  # where the report went, or why it is missing

    def _writer(self) -> RunWriter:
        """The run folder's writer, the folder made (with the machine's calibration in it) on first use."""
        if self.writer is None:
            run_dir = RunDir.create(self.options.reports_dir, self.options.run_id, self.options.run_id_given)
            self.writer = RunWriter(run_dir)
            self.writer.write_json(run_dir.calibration_json, self.calibration)
        return self.writer

    @property
    def run_dir(self) -> RunDir:
        return self._writer().run_dir

    def expect(self, cases: Sequence) -> None:
        """The cases the sweep will run: a budget shares its time out among those the device can run (probed
        only with a budget, which ab refuses: a probe runs on the device, outside ab's turns)."""
        if self.budget:
            self.budget.cases_left = sum(case.unavailable(self.settings.device) is None for case in cases)

    def run(self, case, benchmark) -> Row:
        """Measure a case (within its share of the budget), profile it when asked, and record its row with
        the seconds it took; the benchmark's JSON entry carries the row's figures in extra_info."""
        start = time.perf_counter()
        if self.budget and self.budget.remaining <= 0:
            self.budget.case_done(ran=False)
            row = Row.for_case(case, self.settings.device.type, fingerprint(self.settings.device.type))
            row = row.but(status="skipped", reason=f"not run: the {self.budget.describe()}")
            self.record(row, benchmark)
            return row
        settings = self.settings
        if self.budget:
            cap = self.budget.timing_cap(settings.max_time)
            settings = dataclasses.replace(settings, max_time=cap, min_time=min(settings.min_time, cap))
        with turns.timed(case.id):  # under ab, all the case does on the device, inside its turn
            row = run_case(case, benchmark, settings, self.builds, self.flop_cache)
            row = row.but(peak_tflops=peak_tflops(row.precision, self.calibration),
                          peak_kernel=peak_kernel(row.precision, self.calibration))
            if row.status == "ok" and self.options.profile:
                row = self._profile(case, row)
        if self.budget:
            self.budget.case_done()
            if settings.max_time < self.settings.max_time and row.figures.get("converged") is False:
                self.cut.append(case.id)
        row = row.but(case_s=time.perf_counter() - start)
        self.record(row, benchmark)
        return row

    def _profile(self, case, row: Row) -> Row:
        """A separate profiled pass; its attention share goes into the row, a failure into profile_error."""
        run_dir = self.run_dir
        try:
            operators, shares = profile_case(case, self.settings.device, run_dir.trace_dir(case.id),
                                             self.options.profile_steps, self.options.profile_stacks)
        except Exception as err:  # a profiler failure must not lose the timing
            return row.but(profile_error=one_line(err))
        RunWriter.write_csv(run_dir.operators_csv(case.id), operators)
        RunWriter.write_csv(run_dir.breakdown_csv(case.id), shares)
        return row.but(attention_share=float(shares.set_index("category")["share"].get("attention", 0.0)))

    def record(self, row: Row, benchmark) -> None:
        """Write the row (results.csv and its raw rounds) and keep the benchmark for the final JSON."""
        writer = self._writer()
        writer.add(row)
        if benchmark is not None:
            benchmark.extra_info.update({k: v for k, v in writer.records[-1].items() if v is not None})
            if benchmark.stats is not None:
                self.benchmarks.append(benchmark.stats)

    def finish(self, benchmark_json: Callable[[list], dict]) -> None:
        """pytest-benchmark's JSON of the timed cases (made by `benchmark_json` from their records, raw
        rounds included), then the report; a report that fails says why, the results being on disk."""
        from bench.views.report import write_report  # matplotlib loads only when a run ends

        torch.set_num_threads(self.threads)  # --instructions ran on one
        if self.writer is None:
            return
        if self.benchmarks:
            self.writer.write_json(self.run_dir.benchmark_json, benchmark_json(self.benchmarks))
        try:
            self.report_line = f"report: {write_report(self.run_dir.path)}"
        except Exception as err:
            self.report_line = f"report not written: {type(err).__name__}: {err}"

    def summary(self) -> list[str]:
        """The lines the terminal summary prints: cases by status and where they went."""
        if self.writer is None:
            return []
        records = self.writer.records
        counts = Counter(record["status"] for record in records)
        tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        timed = [record for record in records if record["converged"] is not None]
        precision = (f"{sum(bool(r['converged']) for r in timed)} of {len(timed)} timed cases converged "
                     f"(median within +-{self.settings.target:.1%} at 95 %)") if timed else ""
        budget = (f"{self.budget.describe()}; {len(self.cut)} cases stopped at their share of it before "
                  f"converging, {self.budget.not_run} not run") if self.budget else ""
        return [f"{len(records)} cases ({tally}) -> {self.run_dir.path}",
                *filter(None, [precision, budget, self.report_line])]


def outcome(row: Row) -> None:
    """The test's outcome for a row: an error fails it; a skipped or oom case skips it with the reason."""
    if row.status == "error":
        pytest.fail(row.reason)
    if row.status != "ok":
        pytest.skip(f"{row.status}: {row.reason}")
