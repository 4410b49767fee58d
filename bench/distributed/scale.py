"""Data-parallel scaling: `python -m bench scale --nproc 1,2,4` runs the training step of each case on
PyTorch's own distributed engine, one `torchrun` per world size (bench/distributed/scale_worker.py on every rank;
NCCL on GPUs, one per local rank, gloo on CPUs), and records a row per case and world size in a run
folder: global samples/s and the scaling efficiency against one process, every rank's median beside
rank 0's raw rounds. A world size whose torchrun fails or times out gets an error row (which rank, why)
for each case it did not finish, and the next world size runs; no process of it is left behind."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import MAX_TIME_S, MIN_ROUNDS, children
from bench.distributed.scale_worker import CaseRecord, error_file
from bench.machine.environment import fingerprint
from bench.results.row import Row
from bench.results.rundir import RunDir, RunWriter
from bench.sweep.cases import Case

MARK = "ARCHBENCH_SCALE_RUN"  # set in torchrun's environment, inherited by every rank: how strays are found


@dataclass(frozen=True)
class Launch:
    """How each world size starts: the device, the timing, and torchrun's rendezvous (standalone unless
    the multi-node options are given)."""

    device: str = "cpu"
    max_time: float = MAX_TIME_S
    min_rounds: int = MIN_ROUNDS
    timeout_s: float = 1800.0  # for one world size, every case included
    rendezvous: tuple[str, ...] = ("--standalone",)
    profile_run: Path | None = None  # the run folder: rank 0 profiles each case into its traces/

    @property
    def nodes(self) -> int:
        """How many nodes take part (torchrun's --nnodes; one when standalone)."""
        args = list(self.rendezvous)
        return int(args[args.index("--nnodes") + 1]) if "--nnodes" in args else 1

    def command(self, nproc: int, cases: Path, out: Path) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", *self.rendezvous, "--nproc-per-node", str(nproc),
                "--max-restarts", "0", "-m", "bench.distributed.scale_worker", "--cases", str(cases), "--out", str(out),
                "--device", self.device, "--max-time", str(self.max_time), "--min-rounds", str(self.min_rounds),
                *(["--profile-run", str(self.profile_run)] if self.profile_run else [])]


def rendezvous(nnodes: int | None, endpoint: str | None, rdzv_id: str | None) -> tuple[str, ...]:
    """torchrun's rendezvous options: standalone on one node, else c10d at the given endpoint."""
    if not (nnodes or endpoint or rdzv_id):
        return ("--standalone",)
    return ("--nnodes", str(nnodes or 1), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint or "localhost:29400",
            "--rdzv-id", rdzv_id or "archbench")


def strays(mark: str) -> list[int]:
    """Processes still carrying this run's mark in their environment (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if f"{MARK}={mark}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def run_world(command: list[str], log_path: Path, timeout_s: float) -> tuple[int | None, str]:
    """Run one torchrun to its end or its timeout; kill whatever of it is left. Returns its exit code (None
    when it timed out) and its output."""
    mark = uuid.uuid4().hex
    try:  # torchrun stops its workers on SIGTERM
        code, late = children.run(command, log_path, timeout_s, stop_signal=signal.SIGTERM,
                                  env={**os.environ, MARK: mark})
    finally:
        _kill_strays(mark)
    return None if late else code, log_path.read_text(errors="replace")


def _kill_strays(mark: str) -> None:
    """Any rank still carrying the mark once torchrun is gone (SIGKILL)."""
    deadline = time.monotonic() + children.GRACE_S
    while (left := strays(mark)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):  # gone since the scan
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def failure(code: int | None, output: str, out: Path, nproc: int, timeout_s: float) -> str:
    """Why a world size ended early: the rank torchrun's root-cause summary names first (the others fail
    after it, their peer gone), in its own error line where it left one, else how it ended; without a
    summary, the first rank's error line, else the exit code or the timeout."""
    if code is None:
        return f"world size {nproc} timed out after {timeout_s:.0f} s"
    root = output.split("Root Cause", 1)[1] if "Root Cause" in output else ""
    named, exitcode = re.search(r"rank\s*:\s*(\d+)", root), re.search(r"exitcode\s*:\s*(-?\d+)", root)
    ranks = [int(named.group(1))] if named else list(range(nproc))
    for rank in ranks:
        if error_file(out, rank).is_file():
            return f"rank {rank}: {error_file(out, rank).read_text().strip()}"
    if named and exitcode:
        value = int(exitcode.group(1))
        return f"rank {named.group(1)} " + (f"killed by signal {-value}" if value < 0 else f"exited with code {value}")
    return f"torchrun exited with code {code}"


def scale(cases: list[Case], strategies: list[str], nprocs: list[int], run_dir: RunDir, launch: Launch,
          log: Callable[[str], None] = print) -> list[Row]:
    """Every case under every strategy at every world size, in that order of world sizes; the rows, as
    written to the run folder."""
    writer, work = RunWriter(run_dir), run_dir.path / "scale"
    work.mkdir(parents=True, exist_ok=True)
    jobs = [{"case": dataclasses.asdict(case), "strategy": strategy} for strategy in strategies for case in cases]
    single: dict[str, float] = {}  # case and strategy -> global samples/s with one process
    environment = fingerprint(launch.device)
    rows = []
    for nproc in nprocs:
        jobs_json, out = work / f"world{nproc}-cases.json", work / f"world{nproc}.json"
        jobs_json.write_text(json.dumps(jobs))
        start = time.monotonic()
        log(f"scale: world size {nproc}: {len(jobs)} cases")
        code, output = run_world(launch.command(nproc, jobs_json, out), work / f"world{nproc}.log", launch.timeout_s)
        if code == 0 and not out.is_file():  # several nodes: rank 0, and so the results, were on another
            log(f"scale: world size {nproc}: ran; the node that ran rank 0 records the results")
            continue
        done = [CaseRecord(**record) for record in json.loads(out.read_text())] if out.is_file() else []
        why = "" if len(done) == len(jobs) else failure(code, output, out, nproc, launch.timeout_s)
        for i, job in enumerate(jobs):
            case, strategy = Case(**job["case"]), job["strategy"]
            row = Row.for_case(case, launch.device, environment).but(
                case_id=f"{case.id}-{strategy}-w{nproc * launch.nodes}", world_size=nproc * launch.nodes,
                strategy=strategy,
                backend="nccl" if launch.device == "cuda" else "gloo")
            row = (_timed(row, done[i], single, f"{case.id}-{strategy}") if i < len(done)
                   else row.but(status="error", reason=why))
            writer.add(row)
            rows.append(row)
        log(f"scale: world size {nproc}: {len(done)} of {len(jobs)} cases ok in {time.monotonic() - start:.0f} s"
            + (f" ({why})" if why else ""))
    return rows


def _timed(row: Row, record: CaseRecord, single: dict[str, float], key: str) -> Row:
    """A finished case's row: rank 0's rounds, every rank's median, global throughput and efficiency
    against `single`'s one-process figure for the same case and strategy (`key`)."""
    row = row.but(rounds_s=tuple(record.rounds_s), iterations=1, warmup_rounds=record.warmup_rounds,
                  world_size=len(record.rank_medians_s),  # every node's ranks, where there are several
                  rank_medians_s=";".join(f"{m:.6g}" for m in record.rank_medians_s))
    global_rate = row.world_size * row.batch / float(np.median(row.rounds_s))
    if row.world_size == 1:
        single[key] = global_rate
    efficiency = global_rate / (row.world_size * single[key]) if key in single else None
    return row.but(global_samples_per_s=global_rate, scaling_efficiency=efficiency,
                   communication_share=record.communication_share)
