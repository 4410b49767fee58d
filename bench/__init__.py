"""archbench: forward/backward benchmarks of PyTorch architectures, with reports under reports/."""

from pathlib import Path

CACHE_DIR = Path.home() / ".cache" / "archbench"  # per-machine files: calibrations, the callgrind helper
# How long a case is timed unless asked otherwise: pytest-benchmark's own --benchmark-max-time and
# --benchmark-min-rounds, shared by the sweep, the harness's Settings and `python -m bench scale`.
MAX_TIME_S = 1.0
MIN_ROUNDS = 5
