"""archbench's pytest plugin comes with the package (a pytest11 entry point), not with this checkout's
conftest.py: the sweep collects from the installed package in any directory."""

import subprocess
import sys

import pytest

from bench.verdicts.ab import plugin_args


def pytest_in(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
def test_the_installed_package_s_sweep_collects_outside_the_checkout(tmp_path):
    done = pytest_in(tmp_path, "--pyargs", "bench", "--collect-only", "-q", "--models", "cnn", "--phases", "fwd")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    assert ids and all("test_model[cnn-fwd-" in line or "test_attention[" in line for line in ids)


@pytest.mark.e2e
def test_the_plugin_s_options_are_checked_outside_the_checkout(tmp_path):
    done = pytest_in(tmp_path, "--pyargs", "bench", "--collect-only", "-q", "--preset", "nope")
    assert done.returncode == 4
    assert "--preset: unknown value 'nope'; valid values: gpu" in done.stderr


def test_ab_turns_the_plugin_off_for_a_revision_that_predates_it(tmp_path):
    assert plugin_args(tmp_path) == ["-p", "no:archbench"]  # its hooks are in its own root conftest.py
    (tmp_path / "bench" / "run").mkdir(parents=True)
    (tmp_path / "bench" / "run" / "plugin.py").write_text("")
    assert plugin_args(tmp_path) == []
