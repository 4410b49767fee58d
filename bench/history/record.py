"""One run as the history keeps it: a small JSON record of its commit, machine, environment and each case's
medians with their intervals, made from an archbench run folder or from any pytest-benchmark JSON file."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

from bench.history import git
from bench.results.interval import median_interval
from bench.results.rundir import REPORTS_DIR, RunError, load_results, resolve, short_name

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


def _figures(row: dict) -> dict[str, dict]:
    """Each metric the row measured: median, its 95 % interval where known, and the rounds."""
    figures = {}
    if (median := _number(row.get("median_s"))) is not None:
        figures["host"] = {"median": median, "low": _number(row.get("ci_low_s")),
                           "high": _number(row.get("ci_high_s")), "rounds": _number(row.get("rounds"))}
    if row.get("device") == "cuda" and (device := _number(row.get("device_s"))) is not None:
        figures["device"] = {"median": device, "low": None, "high": None, "rounds": _number(row.get("rounds"))}
    if (count := _number(row.get("instructions"))) is not None:
        figures["instructions"] = {"median": count, "low": None, "high": None, "rounds": _number(row.get("rounds"))}
    return figures


def _rows_of_json(path: Path) -> tuple[list[dict], dict]:
    """A pytest-benchmark JSON file's benchmarks as rows (archbench's carry the whole row in extra_info), and
    its commit_info."""
    try:
        data = json.loads(path.read_text())
        benchmarks, info, machine = data["benchmarks"], data.get("commit_info") or {}, data.get("machine_info") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunError(f"{path}: not a pytest-benchmark JSON file ({type(err).__name__})") from None
    rows = []
    for bench in benchmarks:
        extra, stats = bench.get("extra_info") or {}, bench.get("stats") or {}
        if "case_id" in extra:
            rows.append(extra)
            continue
        data = stats.get("data") or []
        interval = median_interval(data) if len(data) > 1 else None
        rows.append({"case_id": short_name(bench.get("fullname", bench.get("name", "?"))), "status": "ok",
                     "median_s": stats.get("median"), "rounds": stats.get("rounds"),
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
    if path.is_dir():
        rows, info = load_results(path).to_dict("records"), {}
        run_id = path.name
    else:
        rows, info = _rows_of_json(path)
        run_id = f"{path.stem}-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"  # pytest-benchmark's 0001_x
    commits = {_text(row.get("git_commit")) for row in rows}  # numbering repeats on every runner
    if len(commits) != 1 or "" in commits:
        raise RunError(f"{path}: {'no git commit' if '' in commits else 'several commits'} recorded; "
                       "the history needs one commit a run")
    sha = commits.pop()
    if sha.endswith("+dirty") and not allow_dirty:
        raise RunError(f"{path}: made from a tree with uncommitted changes ({sha}); its figures belong to no "
                       "commit (--allow-dirty adds it anyway, at that commit)")
    found = git.commit(repo, sha.removesuffix("+dirty"))
    first = rows[0]
    branch = branch if branch is not None else info.get("branch") or git.branch(repo)
    cases = {}
    for row in rows:
        cases[str(row["case_id"])] = {"status": _text(row.get("status")) or "ok", "reason": _text(row.get("reason")),
                                      "size": _text(row.get("size")), **_figures(row)}
    return {"format": FORMAT, "run_id": run_id, "machine": machine or machine_key(first.get("device_name"),
                                                                                  first.get("cpu_threads")),
            "commit": found.sha, "dirty": sha.endswith("+dirty"), "commit_time": found.time, "order": found.order,
            "subject": found.subject, "branch": branch,
            "environment": {key: _text(first.get(key)) for key in ("device_name", *ENVIRONMENT, "cpu_threads")},
            "cases": cases}
