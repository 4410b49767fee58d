"""Child processes with a deadline, the one way ab, scale and validate start them: each in a process group
of its own, its output in a log file, and stopped as a whole however the parent ends. Stopping sends a
signal the child ends cleanly on (a pytest sweep keeps the cases it finished on SIGINT; torchrun stops its
ranks on SIGTERM), then SIGKILL to what is left after a grace period."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GRACE_S = 10.0


@dataclass
class Child:
    proc: subprocess.Popen
    stop_signal: int = signal.SIGINT
    grace_s: float = GRACE_S

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Its exit code, or None while it still runs at the timeout."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int:
        """Its exit code, stopping its process group first if it still runs."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, self.stop_signal)
            if self.wait(self.grace_s) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()


@contextlib.contextmanager
def started(command: list[str], log_path: Path, stop_signal: int = signal.SIGINT, grace_s: float = GRACE_S,
            **popen) -> Iterator[Child]:
    """`command` running in a new session, logging to `log_path`; stopped when the block ends, however."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    child = Child(proc, stop_signal, grace_s)
    try:
        yield child
    finally:
        child.stop()


def run(command: list[str], log_path: Path, deadline_s: float, **options) -> tuple[int, bool]:
    """Run `command` (see `started`) to its end, or stop it at the deadline: its exit code, and whether the
    deadline stopped it."""
    with started(command, log_path, **options) as child:
        code = child.wait(deadline_s)
        return (child.stop(), True) if code is None else (code, False)
