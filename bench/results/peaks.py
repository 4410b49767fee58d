"""Which calibrated matmul peak a row is judged against, and that peak's TFLOP/s in a calibration: plain
names, so reports read them without torch. bench/machine/calibrate.py measures exactly these peaks."""

from __future__ import annotations

PEAKS = ("fp32", "tf32", "fp16", "bf16")  # calibration.json's matmul_tflops keys


def peak_name(precision: str) -> str | None:
    """A registry precision's peak (tf32's under TF32, else its compute dtype's: amp_bf16 -> bf16), or a
    plain dtype name's own (the micro-benchmark's inputs); None for a name that is neither."""
    name = precision.removeprefix("amp_")
    return name if name in PEAKS else None


def peak_tflops(precision: str, calibration: dict) -> float | None:
    """The machine's measured matmul peak (TFLOP/s) that a row of this precision is judged against."""
    name = peak_name(precision)
    return calibration.get("matmul_tflops", {}).get(name) if name else None


def peak_kernel(precision: str, calibration: dict) -> str | None:
    """The kernel and size that set that peak (a calibration from before they were recorded has none)."""
    name = peak_name(precision)
    return calibration.get("matmul_kernel", {}).get(name) if name else None
