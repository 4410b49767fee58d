"""The machine's measured ceilings: dense matmul TFLOP/s per precision and copy bandwidth, so every result
can say what share of the machine it used. Each precision's ceiling is the best of its matmul kernels (a
plain and a batched product, as the models' linear layers and attention use them) over several sizes; a
precision the CPU emulates runs on its fp32 units, so their ceiling is its. Measured once per machine and
cached."""

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
from bench.sweep.precision import DTYPES, emulated

# peak name -> (dtype, TF32 allowed): large square products, as vendors quote peaks
MATMUL_PRECISIONS = {name: (DTYPES["fp32" if name == "tf32" else name], name == "tf32") for name in PEAKS}
# Square sizes tried per device: the best is the ceiling (small products miss it on a GPU, large ones on a
# CPU's caches); an emulated dtype is timed at the smallest only, it cannot beat the fp32 units it runs on.
MATMUL_SIZES = {"cuda": (4096, 8192), "cpu": (256, 512, 1024)}
BATCHED = 8  # the batched product: this many (n/2)-square products, as attention's per-head matmuls
CACHE_VERSION = "v2"  # ceilings measured another way are not read back
COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 28}


def _median_seconds(stmt: str, **env) -> float:
    """torch.utils.benchmark's median over at least half a second of runs (it synchronises CUDA), on as
    many threads as the sweep uses (the Timer's default is one)."""
    from torch.utils.benchmark import Timer  # imported here: it loads torch's C++ extension tooling

    return Timer(stmt, globals=env, num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=0.5).median


def matmul_tflops(device: torch.device, dtype: torch.dtype, tf32: bool, n: int, batched: bool = False) -> float:
    """TFLOP/s of an n-square product, or with `batched` of BATCHED (n/2)-square ones in one call."""
    gen = torch.Generator().manual_seed(0)
    shape = (BATCHED, n // 2, n // 2) if batched else (n, n)
    a, b = (torch.randn(shape, generator=gen).to(device, dtype) for _ in range(2))
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        seconds = _median_seconds("a @ b", a=a, b=b)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return 2 * (BATCHED * (n // 2) ** 3 if batched else n**3) / seconds / 1e12


def ceilings(device: torch.device) -> tuple[dict[str, float], dict[str, str], dict[str, dict[str, float]]]:
    """Per peak: the best TFLOP/s, the kernel that reached it, and every kernel and size tried."""
    tried: dict[str, dict[str, float]] = {}
    for name, (dtype, tf32) in MATMUL_PRECISIONS.items():
        sizes = MATMUL_SIZES[device.type][:1] if emulated(dtype, device) else MATMUL_SIZES[device.type]
        tried[name] = {f"{'bmm' if batched else 'mm'} n={n}": matmul_tflops(device, dtype, tf32, n, batched)
                       for n in sizes for batched in (False, True)}
    candidates = dict(tried)
    if device.type == "cpu":  # TF32 is a GPU mode: a CPU runs both fp32 peaks' products alike, each try a repeat
        repeats = {f"{k} again": v for k, v in tried["tf32"].items()}
        candidates["fp32"] = candidates["tf32"] = {**tried["fp32"], **repeats}
    best, kernel = {}, {}
    for name, (dtype, _) in MATMUL_PRECISIONS.items():
        kernel[name] = max(candidates[name], key=candidates[name].get)
        best[name] = candidates[name][kernel[name]]
        why = emulated(dtype, device)
        if why and best["fp32"] > best[name]:
            best[name] = best["fp32"]
            kernel[name] = f"fp32 {kernel['fp32']}: {why}, so it runs on the fp32 units"
    return best, kernel, tried


def copy_gbps(device: torch.device, nbytes: int) -> float:
    """Device-to-device copy (read + write) on a GPU, a large memcpy on a CPU."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    return 2 * nbytes / _median_seconds("dst.copy_(src)", dst=dst, src=src) / 1e9


def measure(device: torch.device) -> dict:
    """Run the calibration: a dict of the ceilings, the sizes used and the environment."""
    best, kernel, tried = ceilings(device)
    return {
        "device": device.type,
        **fingerprint(device.type),
        "host": socket.gethostname(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "threads": torch.get_num_threads(),
        "matmul_sizes": list(MATMUL_SIZES[device.type]),
        "matmul_tflops": best,
        "matmul_kernel": kernel,
        "matmul_tried": tried,
        "copy_bytes": COPY_BYTES[device.type],
        "copy_gbps": copy_gbps(device, COPY_BYTES[device.type]),
    }


def cache_path(device: torch.device, cache_dir: Path = CACHE_DIR) -> Path:
    """One file per machine, device, software and thread count: a new driver, torch or OMP_NUM_THREADS
    recalibrates."""
    env = fingerprint(device.type)
    key = "-".join([CACHE_VERSION, socket.gethostname(), env["device_name"], env["torch"], env["driver"] or "nodriver",
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

