"""The environment fingerprint stored with every row."""

import platform
import subprocess

import torch

from bench.machine.environment import fingerprint, git_commit
from bench.results.row import ENVIRONMENT


def test_fingerprint_names_the_software_and_the_cpu():
    env = fingerprint("cpu")
    assert tuple(env) == ENVIRONMENT  # every environment column of a row, in order
    assert env["torch"] == torch.__version__ and env["python"] == platform.python_version()
    assert env["device_name"] == env["cpu"] and env["cpu"]
    assert env["cudnn"] == "" and env["driver"] == ""
    assert env["cpu_threads"] == str(torch.get_num_threads())


def test_git_commit_is_the_working_directory_s_head_with_a_dirty_mark(tmp_path, monkeypatch):
    """The commit of the repository the user runs in, not of the one archbench was installed from."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    monkeypatch.chdir(tmp_path)
    assert git_commit() == ""  # not a checkout
    git("init", "-q")
    (tmp_path / "model.py").write_text("a = 1\n")
    git("add", "model.py")
    git("commit", "-qm", "first")
    head = git("rev-parse", "HEAD")
    assert git_commit() == head
    (tmp_path / "model.py").write_text("a = 2\n")
    assert git_commit() == head + "+dirty"
    (tmp_path / "untracked.py").write_text("")
    git("checkout", "model.py")
    assert git_commit() == head  # untracked files do not make it dirty
