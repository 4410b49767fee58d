"""pytest options and fixtures shared by bench/ (the sweep) and tests/ (unit tests)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # Triton runs on a CPU only in its interpreter, chosen before triton loads
    os.environ.setdefault("TRITON_INTERPRET", "1")

from bench import calibrate
from bench.harness import Settings, run_case
from bench.options import OptionError, SweepOptions, add_options
from bench.profile import profile_case
from bench.report import write_report
from bench.results import RunWriter

OPTIONS = pytest.StashKey[SweepOptions]()
RUN = pytest.StashKey["ArchbenchRun"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[OPTIONS] = SweepOptions.from_values(config.getoption, Path(config.rootpath))
    except OptionError as err:
        raise pytest.UsageError(str(err)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    options = metafunc.config.stash[OPTIONS]
    for name, cases in (("case", options.cases), ("attention_case", options.attention_cases)):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, cases, ids=[case.id for case in cases])


class ArchbenchRun:
    """This session's run: timing settings, and the writer of reports/<run-id>/ (made at the first row)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.options = config.stash[OPTIONS]
        self.settings = Settings(
            device=self.options.device,
            max_time=float(config.getoption("benchmark_max_time")),
            min_rounds=int(config.getoption("benchmark_min_rounds")),
        )
        self.writer: RunWriter | None = None
        self.benchmarks: list = []  # pytest-benchmark's records of the timed cases
        self.calibration = calibrate.load_or_measure(self.options.device)  # cached per machine
        self.report: Path | None = None
        self.report_error = ""

    def run(self, case, benchmark) -> None:
        """Measure a case and record its row; a skipped or oom case skips its test with the reason."""
        row = run_case(case, benchmark, self.settings)
        if row["status"] == "ok" and self.config.getoption("profile"):
            self._profile(case, row)
        self.record(row, benchmark)
        if row["status"] == "error":
            pytest.fail(row["reason"])
        if row["status"] != "ok":
            pytest.skip(f"{row['status']}: {row['reason']}")

    def _profile(self, case, row: dict) -> None:
        """A separate profiled pass; its attention share goes into the row, a failure into profile_error."""
        trace_dir = self.run_dir() / "traces" / case.id
        try:
            shares = profile_case(case, self.settings.device, trace_dir, self.config.getoption("profile_steps"),
                                  self.config.getoption("profile_stacks")).set_index("category")["share"]
        except Exception as err:  # a profiler failure must not lose the timing
            row["profile_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            return
        row["attention_share"] = float(shares.get("attention", 0.0))

    def run_dir(self) -> Path:
        """This run's folder, made (with the machine's calibration in it) on first use."""
        if self.writer is None:
            self.writer = RunWriter(self._make_run_dir())
            self.writer.write_json("calibration.json", self.calibration)
        return self.writer.run_dir

    def record(self, row: dict, benchmark) -> None:
        """Keep the row (and the benchmark's figures in its extra_info), rewriting results.csv."""
        self.run_dir()
        row["pct_of_peak"] = calibrate.pct_of_peak(row.get("tflops"), row["precision"], self.calibration)
        benchmark.extra_info.update({k: v for k, v in row.items() if v is not None})
        self.writer.add(row)
        if benchmark.stats is not None:
            self.benchmarks.append(benchmark.stats)

    def _make_run_dir(self) -> Path:
        """A new folder, never an existing one: a clash with a given --run-id is an error."""
        base = self.options.reports_dir / self.options.run_id
        for attempt in range(100):
            path = base if attempt == 0 else base.with_name(f"{base.name}-{attempt + 1}")
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                if self.options.run_id_given:
                    raise pytest.UsageError(f"--run-id: {path} already exists; choose another run id") from None
        raise RuntimeError(f"could not create a fresh run folder next to {base}")

    def write_benchmark_json(self) -> Path | None:
        """pytest-benchmark's own JSON (raw rounds included), made through its hooks."""
        if self.writer is None or not self.benchmarks:
            return None
        hook = self.config.hook
        payload = hook.pytest_benchmark_generate_json(
            config=self.config, benchmarks=self.benchmarks, include_data=True,
            machine_info=hook.pytest_benchmark_generate_machine_info(config=self.config),
            commit_info=hook.pytest_benchmark_generate_commit_info(config=self.config),
        )
        return self.writer.write_json("benchmark.json", payload)


@pytest.fixture(scope="session")
def archbench_run(request: pytest.FixtureRequest) -> ArchbenchRun:
    run = ArchbenchRun(request.config)
    request.config.stash[RUN] = run
    return run


def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash.get(RUN, None)
    if run is None or run.writer is None:
        return
    run.write_benchmark_json()
    try:
        run.report = write_report(str(run.writer.run_dir))
    except Exception as err:  # the results are on disk already; say why the report is missing
        run.report_error = f"report not written: {type(err).__name__}: {err}"


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    run = config.stash.get(RUN, None)
    if run is None or run.writer is None:
        return
    counts = Counter(row["status"] for row in run.writer.rows)
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    terminalreporter.write_sep("-", "archbench")
    terminalreporter.write_line(f"{len(run.writer.rows)} cases ({tally}) -> {run.writer.run_dir}")
    if run.report is not None:
        terminalreporter.write_line(f"report: {run.report}")
    if run.report_error:
        terminalreporter.write_line(run.report_error, red=True)
