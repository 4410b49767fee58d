"""The architecture's one import rule: the reading side (results, verdicts, views, history) never imports
torch, so report, compare, gate and history start in a second rather than several."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bench

READING_SIDE = ("results", "verdicts", "views", "history")


@pytest.mark.e2e
def test_every_module_of_the_reading_side_imports_without_torch():
    modules = [info.name for role in READING_SIDE
               for info in pkgutil.walk_packages([str(Path(bench.__file__).parent / role)], f"bench.{role}.")]
    assert len(modules) >= 12  # row, rundir, peaks, categories; gate, ab, turns, compare; report, tracepage, ...
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n" \
             "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    done = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
