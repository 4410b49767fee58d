"""The machine's measured ceilings: dense matmul TFLOP/s per precision and copy bandwidth, so every result
can say what share of the machine it used. Measured once per machine and cached."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import torch

from bench import CACHE_DIR
from bench.machine.environment import fingerprint
from bench.results.peaks import PEAKS
from bench.results.rundir import atomic_write
from bench.sweep.precision import DTYPES

# peak name -> (dtype, TF32 allowed): large square products, as vendors quote peaks
MATMUL_PRECISIONS = {name: (DTYPES["fp32" if name == "tf32" else name], name == "tf32") for name in PEAKS}
MATMUL_SIZE = {"cuda": 8192, "cpu": 512}  # CPU fp16 matmuls are slow: a smaller product keeps this short
COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 28}


def _median_seconds(stmt: str, **env) -> float:
    """torch.utils.benchmark's median over at least half a second of runs (it synchronises CUDA), on as
    many threads as the sweep uses (the Timer's default is one)."""
    from torch.utils.benchmark import Timer  # imported here: it loads torch's C++ extension tooling

    return Timer(stmt, globals=env, num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=0.5).median


def matmul_tflops(device: torch.device, dtype: torch.dtype, tf32: bool, n: int) -> float:
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device, dtype) for _ in range(2))
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        seconds = _median_seconds("a @ b", a=a, b=b)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return 2 * n**3 / seconds / 1e12


def copy_gbps(device: torch.device, nbytes: int) -> float:
    """Device-to-device copy (read + write) on a GPU, a large memcpy on a CPU."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    return 2 * nbytes / _median_seconds("dst.copy_(src)", dst=dst, src=src) / 1e9


def measure(device: torch.device) -> dict:
    """Run the calibration: a dict of the ceilings, the sizes used and the environment."""
    n = MATMUL_SIZE[device.type]
    return {
        "device": device.type,
        **fingerprint(device.type),
        "host": socket.gethostname(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "threads": torch.get_num_threads(),
        "matmul_size": n,
        "matmul_tflops": {name: matmul_tflops(device, dtype, tf32, n)
                          for name, (dtype, tf32) in MATMUL_PRECISIONS.items()},
        "copy_bytes": COPY_BYTES[device.type],
        "copy_gbps": copy_gbps(device, COPY_BYTES[device.type]),
    }


def cache_path(device: torch.device, cache_dir: Path = CACHE_DIR) -> Path:
    """One file per machine, device, software and thread count: a new driver, torch or OMP_NUM_THREADS
    recalibrates."""
    env = fingerprint(device.type)
    key = "-".join([socket.gethostname(), env["device_name"], env["torch"], env["driver"] or "nodriver",
                    f"{torch.get_num_threads()}threads"])
    return cache_dir / ("".join(c if c.isalnum() or c in "-_." else "_" for c in key) + ".json")


def load_or_measure(device: torch.device, cache_dir: Path = CACHE_DIR, refresh: bool = False) -> dict:
    """The cached calibration of this machine, measured first when missing (or when asked)."""
    path = cache_path(device, cache_dir)
    if path.exists() and not refresh:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass  # a damaged cache is measured again
    result = measure(device)
    atomic_write(path, json.dumps(result, indent=2))
    return result

