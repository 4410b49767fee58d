"""The one owner of reports/<run-id>/: every path in a run folder is named here. The writer keeps
results.csv and each case's raw rounds current as each case ends (so a killed run still reports and
gates on what it finished); the readers serve report, compare and gate. Every write is atomic."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import first_line
from bench.results.row import COLUMNS, DEFAULT_AXES, Row

# The default reports folder of pytest and python -m bench alike: reports/ in the working directory (as
# pytest-benchmark keeps .benchmarks/), so the repository's own when run from its root.
REPORTS_DIR = Path("reports")


class RunError(ValueError):
    """Input that cannot be used; the message says which file and why, in one line."""


def default_run_id() -> str:
    """A timestamp plus the host name: sortable, and distinct across machines sharing a reports/ folder."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname().split('.')[0]}"


def sweep_options(run_id: str, reports_dir: Path) -> list[str]:
    """The pytest options that send a sweep's run to reports_dir/run_id, each as one `--option=value`
    argument: pytest takes a separate value of an option it does not know yet for a path, and loads the
    conftest.py files above it (ab's checkout's beside its worktree's)."""
    return [f"--run-id={run_id}", f"--reports-dir={reports_dir}"]


def atomic_write(path: Path, data: str) -> None:
    """Write through a temporary file in the same folder, so readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@dataclass(frozen=True)
class RunDir:
    """A run folder and the names of everything in it."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    results_csv = property(lambda self: self.path / "results.csv")
    benchmark_json = property(lambda self: self.path / "benchmark.json")  # pytest-benchmark's, at the end
    calibration_json = property(lambda self: self.path / "calibration.json")
    rounds_dir = property(lambda self: self.path / "rounds")  # <case-id>.json, as each case ends
    traces_dir = property(lambda self: self.path / "traces")
    plots_dir = property(lambda self: self.path / "plots")
    tb_dir = property(lambda self: self.path / "tb")
    summary_md = property(lambda self: self.path / "summary.md")
    report_html = property(lambda self: self.path / "report.html")

    def trace_dir(self, case_id: str) -> Path:
        """torch.profiler's trace of a case, with its operators.csv and breakdown.csv."""
        return self.traces_dir / case_id

    def operators_csv(self, case_id: str) -> Path:
        return self.trace_dir(case_id) / "operators.csv"

    def breakdown_csv(self, case_id: str) -> Path:
        return self.trace_dir(case_id) / "breakdown.csv"

    def trace_page(self, case_id: str) -> Path:
        """The case's offline trace page (tracepage.py), beside its trace."""
        return self.trace_dir(case_id) / "index.html"

    def rounds_json(self, case_id: str) -> Path:
        return self.rounds_dir / f"{case_id}.json"

    @classmethod
    def create(cls, reports_dir: Path, run_id: str, given: bool) -> RunDir:
        """A new folder, never an existing one: a default run-id that exists gets -2, -3...; a given
        run-id that exists is an error."""
        base = reports_dir / run_id
        for attempt in range(100):
            path = base if attempt == 0 else base.with_name(f"{base.name}-{attempt + 1}")
            try:
                path.mkdir(parents=True)
                return cls(path)
            except FileExistsError:
                if given:
                    raise RunError(f"--run-id: {path} already exists; choose another run id") from None
        raise RunError(f"could not create a fresh run folder next to {base}")


class RunWriter:
    """Collects one row per case, keeping results.csv and the case's raw rounds on disk after each."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self.records: list[dict] = []

    def add(self, row: Row) -> None:
        self.records.append(row.record(self.run_dir.run_id, time.strftime("%Y-%m-%dT%H:%M:%S%z")))
        if row.rounds_s:  # rounds first: a row in results.csv always has its rounds on disk
            device = {"device_rounds_s": list(row.device_rounds_s), "device_method": row.device_method} \
                if row.device_rounds_s else {}
            self.write_json(self.run_dir.rounds_json(row.case_id), {"case_id": row.case_id, "device": row.device,
                                                                   "rounds_s": list(row.rounds_s), **device})
        atomic_write(self.run_dir.results_csv, pd.DataFrame(self.records).to_csv(index=False))

    @staticmethod
    def write_json(path: Path, payload: dict) -> Path:
        atomic_write(path, json.dumps(payload, indent=2, default=str))
        return path

    @staticmethod
    def write_csv(path: Path, frame: pd.DataFrame) -> Path:
        atomic_write(path, frame.to_csv(index=False))
        return path


def resolve(run: str | Path, reports_dir: Path = REPORTS_DIR) -> Path:
    """A run folder or JSON file from a path, or a run-id under the reports folder."""
    for candidate in (Path(run), reports_dir / run):
        if candidate.exists():
            return candidate
    raise RunError(f"{run}: no such run folder, run-id under {reports_dir}, or file")


def load_results(run: str | Path, reports_dir: Path = REPORTS_DIR) -> pd.DataFrame:
    """A run's results.csv as a frame (one row per case)."""
    path = resolve(run, reports_dir)
    csv = RunDir(path).results_csv if path.is_dir() else path
    if not csv.is_file() or csv.suffix != ".csv":
        raise RunError(f"{path}: not a run folder (no results.csv)")
    try:
        frame = pd.read_csv(csv, dtype={"cuda": str, "driver": str, "git_commit": str, "attention": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RunError(f"{csv}: unreadable CSV ({first_line(str(err))})") from None
    if frame.empty or "case_id" not in frame.columns:
        raise RunError(f"{csv}: no cases in it")
    written_before_kind = "kind" not in frame.columns
    frame = frame.reindex(columns=[*COLUMNS, *(c for c in frame.columns if c not in COLUMNS)])  # every column
    if written_before_kind:  # the micro-benchmark's rows then had "attention" as their model
        frame["kind"] = np.where(frame["model"] == "attention", "attention", "model")
        frame["model"] = frame["model"].where(frame["kind"] == "model")
    model_rows = frame["kind"] == "model"  # runs from before the mode and memory format axes ran eager, contiguous
    for column, default in DEFAULT_AXES.items():
        frame[column] = frame[column].astype(object).where(~model_rows | frame[column].notna(), default)
    return frame


def load_calibration(run_dir: Path) -> dict:
    """The machine's calibrated peaks saved with the run; empty when missing or unreadable."""
    try:
        return json.loads(RunDir(run_dir).calibration_json.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def load_breakdowns(run_dir: Path) -> dict[str, pd.Series]:
    """Each profiled case's share of self time per category, by case id."""
    return {csv.parent.name: pd.read_csv(csv).set_index("category")["share"]
            for csv in sorted(RunDir(run_dir).traces_dir.glob("*/breakdown.csv"))}


def short_name(fullname: str) -> str:
    """A pytest-benchmark name without its file and test function when it has a parameter (the case id)."""
    return fullname.split("[", 1)[1].removesuffix("]") if "[" in fullname else fullname


def load_rounds(run: str | Path, reports_dir: Path = REPORTS_DIR) -> tuple[dict[str, np.ndarray], str]:
    """Raw rounds (seconds) per case id, and the device they ran on (cuda or cpu). A run folder's rounds/
    (written as each case ends), else its benchmark.json; or any pytest-benchmark JSON file."""
    path = resolve(run, reports_dir)
    run_dir = RunDir(path)
    if path.is_dir() and run_dir.rounds_dir.is_dir():
        return _rounds_of_cases(run_dir)
    source = run_dir.benchmark_json if path.is_dir() else path
    if not source.is_file():
        raise RunError(f"{path}: no rounds/ or benchmark.json in this run folder")
    return _rounds_of_benchmark_json(source)


def load_device_rounds(run: str | Path, reports_dir: Path = REPORTS_DIR) -> dict[str, tuple[np.ndarray, str]]:
    """The device's own seconds per step of each round and how they were measured (graph, profiler), per
    case id, where a GPU run measured them (a run folder's rounds/; none on a CPU, where device time is
    host time, nor from older runs)."""
    rounds_dir = RunDir(resolve(run, reports_dir)).rounds_dir
    return {case: device for case, (_, _, device) in _round_files(rounds_dir).items() if device is not None}


def _round_files(rounds_dir: Path) -> dict[str, tuple[np.ndarray, str, tuple[np.ndarray, str] | None]]:
    """Each rounds/<case-id>.json: case id -> (host rounds, device type, (device rounds, method) or None)."""
    files = {}
    for path in sorted(rounds_dir.glob("*.json")):
        try:
            payload = json.loads(path.read_text())
            device = payload.get("device_rounds_s")
            files[payload["case_id"]] = (np.asarray(payload["rounds_s"], dtype=float), str(payload["device"]),
                                         (np.asarray(device, dtype=float), str(payload.get("device_method")))
                                         if device else None)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError,
                AttributeError) as err:
            raise RunError(f"{path}: not a rounds file ({type(err).__name__})") from None
    return files


def _rounds_of_cases(run_dir: RunDir) -> tuple[dict[str, np.ndarray], str]:
    files = _round_files(run_dir.rounds_dir)
    if not files:
        raise RunError(f"{run_dir.rounds_dir}: holds no rounds")
    devices = {device for _, device, _ in files.values()}
    return {case: rounds for case, (rounds, _, _) in files.items()}, "cuda" if "cuda" in devices else "cpu"


def load_benchmark_json(path: Path) -> tuple[list, dict]:
    """A pytest-benchmark JSON file's benchmarks, and the whole file (its commit_info, machine_info); one line
    naming the file and what failed when it is not one."""
    try:
        data = json.loads(path.read_text())
        return data["benchmarks"], data
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunError(f"{path}: not a pytest-benchmark JSON file ({type(err).__name__})") from None


def _rounds_of_benchmark_json(source: Path) -> tuple[dict[str, np.ndarray], str]:
    benchmarks, _ = load_benchmark_json(source)
    rounds, device = {}, "cpu"
    for bench in benchmarks:
        if bench.get("extra_info", {}).get("device") == "cuda":
            device = "cuda"
        data = bench.get("stats", {}).get("data")
        if not data:
            raise RunError(f"{source}: {bench.get('fullname', '?')} has no raw rounds "
                           "(save with --benchmark-json or --benchmark-save-data)")
        rounds[short_name(bench["fullname"])] = np.asarray(data, dtype=float)
    if not rounds:
        raise RunError(f"{source}: holds no benchmarks")
    return rounds, device
