"""The environment fingerprint stored with every result: software versions, hardware and git commit."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import torch


def _run(*cmd: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_driver() -> str:
    lines = _run("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader").splitlines()
    return lines[0] if lines else ""


def git_commit() -> str:
    """HEAD's hash of the repository the user runs in (the working directory's, wherever archbench is
    installed), with '+dirty' when tracked files differ from it; '' outside a checkout."""
    commit = _run("git", "rev-parse", "HEAD")
    if commit and _run("git", "status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return commit


@functools.cache
def fingerprint(device_type: str) -> dict[str, str]:
    """What a result depends on besides the code: versions, device, driver, CPU, commit."""
    on_gpu = device_type == "cuda"
    return {
        "device_name": torch.cuda.get_device_name() if on_gpu else _cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or "") if on_gpu else "",
        "triton": _version("triton"),
        "driver": _gpu_driver() if on_gpu else "",
        "cpu": _cpu_model(),
        "cpu_threads": str(torch.get_num_threads()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the widest vector ISA torch's kernels use
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }
