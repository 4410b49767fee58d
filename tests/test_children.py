"""The one child-process runner: exit codes, the deadline's clean stop, SIGKILL after the grace, and no
process of the group left behind when the parent's block fails."""

import signal
import sys
import time
from pathlib import Path

import pytest

from bench import children

pytestmark = pytest.mark.e2e

ENDS_ON_SIGINT = ("import sys, time\ntry:\n    print('started', flush=True)\n    time.sleep(60)\n"
                  "except KeyboardInterrupt:\n    print('stopped cleanly', flush=True)\n    sys.exit(3)\n")
IGNORES_SIGINT = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('started', flush=True)\n" \
                 "time.sleep(60)\n"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_ends_in_time_gives_its_exit_code_and_its_output(tmp_path):
    log = tmp_path / "child.log"
    assert children.run(python("print('hello'); raise SystemExit(4)"), log, deadline_s=60) == (4, False)
    assert log.read_text() == "hello\n"


def test_at_the_deadline_the_child_gets_the_signal_it_ends_cleanly_on(tmp_path):
    log = tmp_path / "child.log"
    start = time.monotonic()
    assert children.run(python(ENDS_ON_SIGINT), log, deadline_s=1.0) == (3, True)
    assert log.read_text().splitlines() == ["started", "stopped cleanly"] and time.monotonic() - start < 10


def test_a_child_that_ignores_the_signal_is_killed_after_the_grace(tmp_path):
    code, late = children.run(python(IGNORES_SIGINT), tmp_path / "child.log", deadline_s=1.0, grace_s=0.5)
    assert (code, late) == (-signal.SIGKILL, True)


def test_a_failing_block_stops_the_child_and_its_own_children(tmp_path):
    grandchild = tmp_path / "grandchild.pid"
    spawn = (f"import subprocess, sys, time\np = subprocess.Popen([sys.executable, '-c', 'import time; "
             f"time.sleep(60)'])\nopen({str(grandchild)!r}, 'w').write(str(p.pid))\ntime.sleep(60)\n")
    with pytest.raises(RuntimeError), children.started(python(spawn), tmp_path / "child.log", grace_s=2.0) as child:
        while not grandchild.exists() or not grandchild.read_text():
            time.sleep(0.05)
        raise RuntimeError("the parent's work failed")
    assert child.proc.returncode is not None
    pid = int(grandchild.read_text())
    deadline = time.monotonic() + 5
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(pid)


def running(pid: int) -> bool:
    """Alive and not a zombie (one that ended, waiting to be reaped, runs no more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
