"""Instruction counts under callgrind: the dump parsed, the missing tools named, and (where valgrind is
installed) a step of C code counted for real: deterministic, and twice the work counts about twice.
(Python's own bytecode wobbles by a few % as its specialising interpreter settles; a model's step is
mostly ATen's C++, where repeats agree to about 0.1 %.)"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import instructions
from bench.run.instructions import InstructionsError

ROOT = Path(__file__).resolve().parent.parent
DUMP = """version: 1
creator: callgrind-3.19.0
pid: {pid}
desc: Trigger: Client Request: {label}
positions: line
events: Ir
summary: {total}
fn=(1) main
0 {total}
totals: {total}
"""


def test_the_labelled_dump_of_this_process_gives_its_total(tmp_path, monkeypatch):
    monkeypatch.setattr(instructions.os, "getpid", lambda: 4242)
    (tmp_path / "callgrind.out.4242.1").write_text(DUMP.format(pid=4242, label="first", total=1000))
    (tmp_path / "callgrind.out.4242.2").write_text(DUMP.format(pid=4242, label="second", total=2500))
    (tmp_path / "callgrind.out.42421.1").write_text(DUMP.format(pid=42421, label="second", total=7))
    assert instructions.dump_total(tmp_path, "second") == 2500
    assert instructions.dump_total(tmp_path, "first") == 1000
    with pytest.raises(InstructionsError, match="no callgrind dump labelled third in "):
        instructions.dump_total(tmp_path, "third")


def test_without_valgrind_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    with pytest.raises(InstructionsError) as err:
        instructions.check_valgrind()
    assert str(err.value) == ("--instructions needs valgrind, which is not on the PATH: install it "
                              "(Debian/Ubuntu: apt-get install -y valgrind; Fedora: dnf install valgrind)")


def test_without_a_compiler_the_error_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    with pytest.raises(InstructionsError, match="needs a C compiler"):
        instructions.helper(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_callgrind_starts_uninstrumented_and_dumps_where_told(tmp_path):
    assert instructions.valgrind_command(tmp_path) == [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--quiet",
        f"--callgrind-out-file={tmp_path}/callgrind.out.%p"]


needs_valgrind = pytest.mark.skipif(shutil.which("valgrind") is None or not Path("/usr/include/valgrind").is_dir(),
                                    reason="valgrind and its headers are not installed (.ci/run installs them)")


@needs_valgrind
def test_outside_callgrind_the_sweep_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(instructions.DUMP_DIR_ENV, str(tmp_path))
    assert instructions.helper(tmp_path).on_valgrind() == 0
    with pytest.raises(InstructionsError, match="the sweep must run under valgrind's callgrind"):
        instructions.check_under_callgrind()


COUNT = """
import hashlib
from bench.run.instructions import count
data = bytes(2 << 20)  # allocated once: a fresh large buffer's cost depends on the allocator's state
small, large = (lambda: hashlib.sha256(memoryview(data)[: 1 << 20]).digest()), (lambda: hashlib.sha256(data).digest())
print(count(small), count(large), count(small))
"""


@needs_valgrind
@pytest.mark.e2e
def test_a_step_counted_under_callgrind_is_deterministic_and_scales_with_its_work(tmp_path):
    instructions.helper()  # compiled natively before valgrind runs the child
    done = subprocess.run([*instructions.valgrind_command(tmp_path), sys.executable, "-c", COUNT], cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), instructions.DUMP_DIR_ENV: str(tmp_path),
                               "PYTHONHASHSEED": "0", "HOME": str(Path.home())},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    once, twice, again = map(float, done.stdout.split())
    assert abs(again / once - 1) < 0.001  # the same work, counted again, within 0.1 %
    assert 1.9 < twice / once < 2.1
