"""One run as the history keeps it: a small JSON record of its commit, machine, environment and each case's
medians with their intervals, made from an archbench run folder or from any pytest-benchmark JSON file."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np

from bench.history import git
from bench.results.interval import median_interval
from bench.results.rundir import (
    REPORTS_DIR,
    RunError,
    load_benchmark_json,
    load_device_rounds,
    load_results,
    resolve,
)

FORMAT = 1
METRICS = ("host", "device", "instructions")
# What a run's figures depend on besides the code; a step where one of these changed is labelled with it.
ENVIRONMENT = ("torch", "cuda", "cudnn", "triton", "driver", "python", "cpu_capability")


def machine_key(device_name: str, threads: object) -> str:
    """The machine a series belongs to, from what the run measured on (never the host name, which CI runners
    change every job): the device's name and the threads torch used, e.g. nvidia-h200-16t."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(device_name).lower()).strip("-") or "unknown"
    return f"{slug}-{_text(threads) or '?'}t"


def _text(value: object) -> str:
    """A cell as text: '' for missing (NaN), integers without '.0'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _figures(row: dict, device_rounds: np.ndarray | None) -> dict[str, dict]:
    """Each metric the row measured: median, its 95 % interval where known, and its rounds (count, min, IQR)."""
    figures = {}
    rounds = {"rounds": _number(row.get("rounds")), "min": _number(row.get("min_s")), "iqr": _number(row.get("iqr_s"))}
    if (median := _number(row.get("median_s"))) is not None:
        figures["host"] = {"median": median, "low": _number(row.get("ci_low_s")),
                           "high": _number(row.get("ci_high_s")), **rounds}
    if row.get("device") == "cuda" and (device := _number(row.get("device_s"))) is not None:
        interval = median_interval(device_rounds) if device_rounds is not None and device_rounds.size else None
        figures["device"] = {"median": device, "low": interval.low if interval else None,
                             "high": interval.high if interval else None, "rounds": _number(row.get("rounds"))}
    if (count := _number(row.get("instructions"))) is not None:
        figures["instructions"] = {"median": count, "low": None, "high": None, "rounds": _number(row.get("rounds"))}
    return figures


def _rows_of_json(path: Path) -> tuple[list[dict], dict]:
    """A pytest-benchmark JSON file's benchmarks as rows (archbench's carry the whole row in extra_info), and
    its commit_info."""
    benchmarks, data = load_benchmark_json(path)
    info, machine = data.get("commit_info") or {}, data.get("machine_info") or {}
    rows = []
    for bench in benchmarks:
        extra, stats = bench.get("extra_info") or {}, bench.get("stats") or {}
        if "case_id" in extra:  # archbench's: the whole row
            rows.append(extra)
            continue
        samples = stats.get("data") or []
        interval = median_interval(samples) if len(samples) > 1 else None
        rows.append({"case_id": bench.get("fullname", bench.get("name", "?")), "status": "ok",
                     "median_s": stats.get("median"), "rounds": stats.get("rounds"), "min_s": stats.get("min"),
                     "iqr_s": stats.get("iqr"),
                     "ci_low_s": interval.low if interval else None, "ci_high_s": interval.high if interval else None,
                     "device_name": (machine.get("cpu") or {}).get("brand_raw") or machine.get("processor", ""),
                     "cpu_threads": (machine.get("cpu") or {}).get("count"),
                     "python": machine.get("python_version", ""),
                     "git_commit": info.get("id", "") + ("+dirty" if info.get("dirty") else "")})
    if not rows:
        raise RunError(f"{path}: holds no benchmarks")
    return rows, info


def make_record(run: str | Path, repo: Path, machine: str | None = None, branch: str | None = None,
                allow_dirty: bool = False, reports_dir: Path = REPORTS_DIR) -> dict:
    """The record of a run folder, run-id or pytest-benchmark JSON file. Its commit must be in `repo`
    (for its time, subject and first-parent order) and clean, unless `allow_dirty`."""
    path = resolve(run, reports_dir)
    device_rounds = {}
    if path.is_dir():  # the GPU's own times per round, kept beside the run's rows, give device time its interval
        rows, info = load_results(path).to_dict("records"), {}
        device_rounds = {case: data for case, (data, _) in load_device_rounds(path).items()}
    else:
        rows, info = _rows_of_json(path)
    # archbench's run-id (its JSON rows carry it too); pytest-benchmark's 0001_name repeats on every runner
    run_id = _text(rows[0].get("run_id")) or f"{path.stem}-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    commits = sorted({_text(row.get("git_commit")) for row in rows})
    if len(commits) > 1:
        raise RunError(f"{path}: several commits recorded ({', '.join(c[:10] or '(none)' for c in commits)}); "
                       "the history needs one commit a run")
    if commits == [""]:
        raise RunError(f"{path}: no git commit recorded (a run made outside a git checkout)")
    sha = commits[0]
    if sha.endswith("+dirty") and not allow_dirty:
        raise RunError(f"{path}: made from a tree with uncommitted changes ({sha}); its figures belong to no "
                       "commit (--allow-dirty adds it anyway, at that commit)")
    found = git.commit(repo, sha.removesuffix("+dirty"))
    first = rows[0]
    if branch is None:  # where the run says, else the checked-out branch if the commit is on it
        branch = info.get("branch") or git.branch_holding(repo, found.sha)
    cases = {}
    for row in rows:
        case = str(row["case_id"])
        if case in cases:
            raise RunError(f"{path}: the case {case} twice; the history needs one result a case")
        cases[case] = {"status": _text(row.get("status")) or "ok", "reason": _text(row.get("reason")),
                       "size": _text(row.get("size")), **_figures(row, device_rounds.get(case))}
    return {"format": FORMAT, "run_id": run_id, "machine": machine or machine_key(first.get("device_name"),
                                                                                  first.get("cpu_threads")),
            "commit": found.sha, "dirty": sha.endswith("+dirty"), "commit_time": found.time, "order": found.order,
            "subject": found.subject, "branch": branch,
            "environment": {key: _text(first.get(key)) for key in ("device_name", *ENVIRONMENT, "cpu_threads")},
            "cases": cases}
