"""Reading runs back from disk for report, compare and gate: a run is a reports/<run-id>/ folder (named
by path or run-id), or for raw rounds also a pytest-benchmark JSON file saved with its data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

REPORTS_DIR = Path(__file__).resolve().parent.parent / "reports"


class RunError(ValueError):
    """Input that cannot be used; the message says which file and why, in one line."""


def resolve(run: str, reports_dir: Path = REPORTS_DIR) -> Path:
    """A run folder or JSON file from a path, or a run-id under the reports folder."""
    for candidate in (Path(run), reports_dir / run):
        if candidate.exists():
            return candidate
    raise RunError(f"{run}: no such run folder, run-id under {reports_dir}, or file")


def load_results(run: str | Path, reports_dir: Path = REPORTS_DIR) -> pd.DataFrame:
    """A run's results.csv as a frame (one row per case)."""
    path = resolve(str(run), reports_dir)
    csv = path / "results.csv" if path.is_dir() else path
    if not csv.is_file() or csv.suffix != ".csv":
        raise RunError(f"{path}: not a run folder (no results.csv)")
    try:
        frame = pd.read_csv(csv, dtype={"cuda": str, "driver": str, "git_commit": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RunError(f"{csv}: unreadable CSV ({str(err).splitlines()[0]})") from None
    if frame.empty or "case_id" not in frame.columns:
        raise RunError(f"{csv}: no cases in it")
    return frame


def load_calibration(run_dir: Path) -> dict:
    path = run_dir / "calibration.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def short_name(fullname: str) -> str:
    """A pytest-benchmark name without its file and test function when it has a parameter (the case id)."""
    return fullname.split("[", 1)[1].removesuffix("]") if "[" in fullname else fullname


def load_rounds(run: str | Path, reports_dir: Path = REPORTS_DIR) -> tuple[dict[str, np.ndarray], str]:
    """Raw rounds (seconds) per benchmark, keyed by its pytest name, and the device they ran on
    ('cuda' when archbench's extra_info says so, else 'cpu')."""
    path = resolve(str(run), reports_dir)
    source = path / "benchmark.json" if path.is_dir() else path
    if not source.is_file():
        raise RunError(f"{path}: no benchmark.json in this run folder")
    try:
        payload = json.loads(source.read_text())
        benchmarks = payload["benchmarks"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunError(f"{source}: not a pytest-benchmark JSON file ({type(err).__name__})") from None
    rounds, device = {}, "cpu"
    for bench in benchmarks:
        if bench.get("extra_info", {}).get("device") == "cuda":
            device = "cuda"
        data = bench.get("stats", {}).get("data")
        if not data:
            raise RunError(f"{source}: {bench.get('fullname', '?')} has no raw rounds "
                           "(save with --benchmark-json or --benchmark-save-data)")
        rounds[bench["fullname"]] = np.asarray(data, dtype=float)
    if not rounds:
        raise RunError(f"{source}: holds no benchmarks")
    return rounds, device
