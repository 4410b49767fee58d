"""Instruction counts of a case's step under valgrind's callgrind (the sweep's `--instructions`), as
PyTorch's own instruction-count benchmarks and CodSpeed gate on them: deterministic where time is not.

The process runs uninstrumented (import, build, warm-up: about 5x slower than native, where full
instrumentation is about 50x) until a case's counted rounds, which a small C helper brackets with
callgrind's client requests: start instrumenting, zero, run, dump under a label, stop. torch's own
valgrind hooks only toggle collection, which leaves the whole process instrumented.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from bench import CACHE_DIR

COUNTED_ROUNDS = 3  # steps counted per case, after the harness's warm-up; the count is per step
DUMP_DIR_ENV = "ARCHBENCH_CALLGRIND_DIR"  # where the launcher told callgrind to write its dumps
INSTALL_HINT = "install it (Debian/Ubuntu: apt-get install -y valgrind; Fedora: dnf install valgrind)"
HELPER_SOURCE = r"""
#include <valgrind/callgrind.h>
int on_valgrind(void) { return RUNNING_ON_VALGRIND; }
void count_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void count_stop(const char *label) { CALLGRIND_DUMP_STATS_AT(label); CALLGRIND_STOP_INSTRUMENTATION; }
"""


class InstructionsError(RuntimeError):
    """valgrind, its header or a C compiler is missing, or the sweep is not running under callgrind."""


def check_valgrind() -> None:
    """Raise, saying how to install it, where valgrind is not on the PATH."""
    if shutil.which("valgrind") is None:
        raise InstructionsError(f"--instructions needs valgrind, which is not on the PATH: {INSTALL_HINT}")


def helper(cache_dir: Path = CACHE_DIR) -> ctypes.CDLL:
    """The client-request helper, compiled once per source into the cache."""
    digest = hashlib.sha256(HELPER_SOURCE.encode()).hexdigest()[:12]
    library = cache_dir / f"callgrind-{digest}.so"
    if not library.exists():
        compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if compiler is None:
            raise InstructionsError("--instructions compiles a small helper and needs a C compiler (cc or gcc)")
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = library.with_suffix(f".{os.getpid()}.tmp")
        done = subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-x", "c", "-", "-o", str(partial)],
                              input=HELPER_SOURCE, capture_output=True, text=True)
        if done.returncode != 0:
            raise InstructionsError("--instructions could not compile its callgrind helper (is valgrind's "
                                    f"header valgrind/callgrind.h installed? {INSTALL_HINT}): "
                                    f"{(done.stderr.strip().splitlines() or ['?'])[0]}")
        partial.replace(library)
    lib = ctypes.CDLL(str(library))
    lib.count_stop.argtypes = [ctypes.c_char_p]
    return lib


def valgrind_command(dump_dir: Path) -> list[str]:
    """The launcher's prefix: callgrind, uninstrumented until the helper starts it, dumps into `dump_dir`."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--quiet",
            f"--callgrind-out-file={dump_dir}/callgrind.out.%p"]


def check_under_callgrind() -> None:
    """Raise unless this process runs under callgrind with a dump folder set (ab --instructions does it)."""
    if not helper().on_valgrind() or not os.environ.get(DUMP_DIR_ENV):
        raise InstructionsError(f"--instructions: the sweep must run under valgrind's callgrind with {DUMP_DIR_ENV} "
                                "set; `python -m bench ab BASE CANDIDATE --instructions` runs it so")


_counter: ctypes.CDLL | None = None


def counter() -> ctypes.CDLL:
    """The helper, loaded once and primed: the first start and stop pay the dynamic linker's and ctypes'
    one-time set-up (some 200k instructions), which no case's count should carry."""
    global _counter
    if _counter is None:
        _counter = helper()
        _counter.count_start()
        _counter.count_stop(b"archbench-prime")
    return _counter


def count(step: Callable[[], None], rounds: int = COUNTED_ROUNDS) -> float:
    """Instructions per step over `rounds` steps (the caller pauses garbage collection)."""
    lib, label = counter(), f"archbench-{uuid.uuid4().hex}"
    lib.count_start()
    for _ in range(rounds):
        step()
    lib.count_stop(label.encode())
    return dump_total(Path(os.environ[DUMP_DIR_ENV]), label) / rounds


def dump_total(dump_dir: Path, label: str) -> int:
    """The instruction total of the callgrind dump made under `label`."""
    for path in dump_dir.glob(f"callgrind.out.{os.getpid()}.*"):
        lines = path.read_text().splitlines()
        if f"desc: Trigger: Client Request: {label}" in lines:
            totals = [line for line in lines if line.startswith(("totals:", "summary:"))]
            return int(totals[-1].split()[1])
    raise InstructionsError(f"no callgrind dump labelled {label} in {dump_dir}")
