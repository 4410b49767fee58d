"""Registry of precisions: fp32 (IEEE), tf32, and autocast to fp16 (with GradScaler) or bf16; what a device
supports.

Also the one table of plain dtypes by name (fp32, fp16, bf16): the micro-benchmark's input dtypes and the
keys of the calibrated matmul peaks. bench/results/peaks.py says which peak a precision is judged against.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from bench.errors import first_line

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    """fp32, fp16 or bf16 for a torch dtype."""
    return next(name for name, candidate in DTYPES.items() if candidate == dtype)


@dataclass(frozen=True)
class Precision:
    """A registry entry: the autocast dtype (None for fp32), whether gradients need loss scaling, and
    whether fp32 matmuls and convolutions may use TF32 tensor cores."""

    name: str
    autocast_dtype: torch.dtype | None = None
    grad_scaler: bool = False
    tf32: bool = False

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype matmuls and attention see under this precision."""
        return self.autocast_dtype or torch.float32

    @contextlib.contextmanager
    def math_mode(self) -> Iterator[None]:
        """Both TF32 switches (cuBLAS matmuls, cuDNN convolutions) set to this precision's, then restored:
        PyTorch's defaults differ (convolutions TF32, matmuls not), so plain fp32 would mean two things."""
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A GradScaler that is a no-op unless this precision needs one."""
        return torch.amp.GradScaler(device.type, enabled=self.grad_scaler)

    def unavailable(self, device: torch.device) -> str | None:
        """Why autocast cannot run this dtype on the device, or None when it can."""
        return _probe(self.name, device.type)


# The CPU features that give a dtype native arithmetic: x86's AVX512-BF16 or AMX-BF16, AVX512-FP16 or AMX-FP16
# (F16C converts, it does not compute); Arm's BF16 and half-precision SIMD. Without them torch converts to fp32
# and back around every kernel.
NATIVE_CPU_FLAGS = {torch.bfloat16: ("avx512_bf16", "amx_bf16", "bf16"),
                    torch.float16: ("avx512_fp16", "amx_fp16", "asimdhp")}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (/proc/cpuinfo's x86 `flags` or Arm `Features`; empty where there are none)."""
    try:
        with open("/proc/cpuinfo") as info:
            line = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        return frozenset()
    return frozenset(line.partition(":")[2].split())


def emulated(dtype: torch.dtype, device: torch.device, flags: frozenset[str] | None = None) -> str | None:
    """Why arithmetic in `dtype` is emulated on this device (converted to fp32 and back), or None when it is
    native or unknown: on a CPU, from its flags (`flags`, else cpu_flags(); none read: unknown); on a GPU, from
    its compute capability (bf16 tensor cores from sm_80)."""
    if dtype == torch.float32:
        return None
    if device.type == "cuda":
        try:
            native = dtype != torch.bfloat16 or torch.cuda.get_device_capability(device) >= (8, 0)
        except (RuntimeError, AssertionError):  # no driver to ask: nothing is known to be emulated
            return None
        return None if native else f"bf16 is emulated on {torch.cuda.get_device_name(device)} (no bf16 tensor cores)"
    needed = NATIVE_CPU_FLAGS.get(dtype, ())
    have = cpu_flags() if flags is None else flags
    if needed and have and not have.intersection(needed):
        return f"{dtype_name(dtype)} is emulated on this CPU: none of {'/'.join(needed)} among its flags"
    return None


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32"),
        Precision("tf32", tf32=True),
        Precision("amp_fp16", torch.float16, grad_scaler=True),
        Precision("amp_bf16", torch.bfloat16),
    )
}


@functools.cache
def _probe(name: str, device_type: str) -> str | None:
    """Autocast a tiny matmul: a device that cannot autocast to the dtype returns fp32 or raises."""
    precision = PRECISIONS[name]
    if precision.autocast_dtype is None:
        return None
    device = torch.device(device_type)
    x = torch.ones(4, 4, device=device)
    dtype_name = str(precision.autocast_dtype).removeprefix("torch.")
    try:
        with precision.autocast(device):
            out = x @ x
    except RuntimeError as err:
        return f"{name}: autocast to {dtype_name} fails on {device_type}: {first_line(str(err), 160)}"
    if out.dtype != precision.autocast_dtype:
        return f"{name}: autocast to {dtype_name} is not supported on {device_type}"
    return None
