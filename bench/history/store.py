"""The history store: a folder of plain JSON, one file a run under runs/<machine>/ (as asv keeps its results)
and one a step that was meant under accepted/. File names are unique, so adding a run twice changes nothing
and merging stores from several machines is copying one folder into the other."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.history.record import ENVIRONMENT, FORMAT, METRICS
from bench.results.rundir import REPORTS_DIR, RunError, atomic_write

DEFAULT_STORE = REPORTS_DIR / "history"
# The points frame: one row per run, case and metric.
POINT_COLUMNS = ["series", "machine", "size", "case", "metric", "commit", "commit_time", "order", "subject", "branch",
                 "run_id", "status", "reason", "value", "low", "high", "rounds", *ENVIRONMENT]


def series_id(machine: str, size: str, case: str, metric: str) -> str:
    """How a series is named on the command line and the page: machine/size/case/metric (size '-' for cases
    whose id already fixes their shapes)."""
    return f"{machine}/{size or '-'}/{case}/{metric}"


@dataclass(frozen=True)
class Store:
    path: Path

    @property
    def runs_dir(self) -> Path:
        return self.path / "runs"

    @property
    def accepted_dir(self) -> Path:
        return self.path / "accepted"

    def run_file(self, record: dict) -> Path:
        return self.runs_dir / record["machine"] / f"{record['run_id']}.json"

    def add(self, record: dict) -> bool:
        """Keep the record; False when this run (its id at its commit) is already there, which stays as it was.
        A run of another commit under the same id is refused: nothing kept is ever overwritten."""
        path = self.run_file(record)
        if not path.exists():
            atomic_write(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
            return True
        kept = json.loads(path.read_text())
        if kept.get("commit") == record["commit"]:  # the same run (from its folder or its JSON, say)
            return False
        raise RunError(f"{path}: a run with the id {record['run_id']} at another commit "
                       f"({kept.get('commit', '?')[:10]}) is in the history already; give each run its own --run-id")

    def records(self) -> list[dict]:
        """Every run kept, in first-parent order (then commit time and run id: the same whatever order they were
        added in)."""
        records = []
        for path in sorted(self.runs_dir.glob("*/*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise RunError(f"{path}: not a history record ({type(err).__name__})") from None
            if not isinstance(record, dict) or record.get("format") != FORMAT:
                raise RunError(f"{path}: not a history record of format {FORMAT}")
            records.append(record)
        return sorted(records, key=lambda r: (r["order"], r["commit_time"], r["run_id"]))

    def points(self) -> pd.DataFrame:
        """Every figure of every run: a row per run, case and metric, in the records' order."""
        rows = []
        for record in self.records():
            environment = record["environment"]
            for case, kept in sorted(record["cases"].items()):
                metrics = [m for m in METRICS if m in kept] or ["host"]
                for metric in metrics:  # a failed case is kept once, on host time, with its reason
                    figure = kept.get(metric) or {}
                    rows.append({"series": series_id(record["machine"], kept["size"], case, metric),
                                 "machine": record["machine"], "size": kept["size"], "case": case, "metric": metric,
                                 **{key: record[key] for key in ("commit", "commit_time", "order", "subject", "branch",
                                                                 "run_id")},
                                 "status": kept["status"], "reason": kept["reason"], "value": figure.get("median"),
                                 "low": figure.get("low"), "high": figure.get("high"), "rounds": figure.get("rounds"),
                                 **{key: environment.get(key, "") for key in ENVIRONMENT}})
        return pd.DataFrame(rows, columns=POINT_COLUMNS)

    def accept(self, series: str, commit: str, note: str = "") -> Path:
        """Mark the step of `series` at `commit` as meant: it no longer counts as open."""
        name = hashlib.sha256(f"{series}\n{commit}".encode()).hexdigest()[:16]
        path = self.accepted_dir / f"{name}.json"
        atomic_write(path, json.dumps({"series": series, "commit": commit, "note": note}, indent=1) + "\n")
        return path

    def accepted(self) -> set[tuple[str, str]]:
        """(series, commit) of every step accepted."""
        pairs = set()
        for path in sorted(self.accepted_dir.glob("*.json")):
            try:
                entry = json.loads(path.read_text())
                pairs.add((entry["series"], entry["commit"]))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
                raise RunError(f"{path}: not an accepted step ({type(err).__name__})") from None
        return pairs
