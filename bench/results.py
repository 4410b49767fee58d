"""A run's files under reports/<run-id>/: results.csv (one tidy row per case) and the pytest-benchmark
JSON with raw rounds. Every write goes to a temporary file first and is renamed into place."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

import pandas as pd

COLUMNS = [
    "run_id", "case_id", "model", "phase", "precision", "batch", "attention", "size",
    "seqlen", "head_dim", "heads", "causal", "device", "device_name",
    "status", "reason", "median_s", "iqr_s", "min_s", "mean_s", "stddev_s", "rounds", "samples_per_s",
    "tokens_per_s", "batch_tokens", "flops", "tflops", "pct_of_peak", "peak_mem_bytes",
    "torch", "cuda", "cudnn", "triton", "driver", "cpu", "cpu_threads", "python", "git_commit", "timestamp",
]


def default_run_id() -> str:
    """A timestamp plus the host name: sortable, and distinct across machines sharing a reports/ folder."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname().split('.')[0]}"


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


class RunWriter:
    """Collects one row per case and keeps reports/<run-id>/results.csv current after every case."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.run_id = run_dir.name
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append({"run_id": self.run_id, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **row})
        self.write_csv()

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows)
        extra = [c for c in frame.columns if c not in COLUMNS]
        return frame.reindex(columns=COLUMNS + extra)

    def write_csv(self) -> Path:
        path = self.run_dir / "results.csv"
        atomic_write(path, self.frame().to_csv(index=False))
        return path

    def write_json(self, name: str, payload: dict) -> Path:
        path = self.run_dir / name
        atomic_write(path, json.dumps(payload, indent=2, default=str))
        return path
