"""archbench: forward/backward benchmarks of PyTorch architectures, with reports under reports/."""

from pathlib import Path

CACHE_DIR = Path.home() / ".cache" / "archbench"  # per-machine files: calibrations, the callgrind helper
