"""The environment fingerprint stored with every row."""

import platform
import subprocess

import torch

from bench.machine.environment import ROOT, fingerprint, git_commit
from bench.results.row import ENVIRONMENT


def test_fingerprint_names_the_software_and_the_cpu():
    env = fingerprint("cpu")
    assert tuple(env) == ENVIRONMENT  # every environment column of a row, in order
    assert env["torch"] == torch.__version__ and env["python"] == platform.python_version()
    assert env["device_name"] == env["cpu"] and env["cpu"]
    assert env["cudnn"] == "" and env["driver"] == ""
    assert env["cpu_threads"] == str(torch.get_num_threads())


def test_git_commit_is_head_with_a_dirty_mark():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    assert git_commit() == head + ("+dirty" if dirty else "")
