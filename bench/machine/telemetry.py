"""What else the machine did while a case was timed: the share of CPU time the hypervisor gave to other
guests (steal, from /proc/stat), which slows a host-bound figure with no change in the code; and on a GPU
its SM clock and the reasons NVML gives for holding it down (power, heat), which slow a device-bound one."""

from __future__ import annotations

import subprocess
from pathlib import Path

STAT = Path("/proc/stat")


def cpu_ticks(stat: Path = STAT) -> tuple[int, int] | None:
    """(steal, total) clock ticks of all CPUs since boot, from /proc/stat's first line; None where there is
    no such file or no steal field (not Linux, or a kernel older than 2.6.11)."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(value) for value in fields[1:9]]  # user nice system idle iowait irq softirq steal (guest is in user)
    return ticks[7], sum(ticks)


def steal_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Percent of all CPUs' time stolen between two readings of `cpu_ticks`; None without both, or where no
    tick passed between them (a tick is 10 ms a CPU: a 0.1 s case on 2 CPUs reads in steps of 5 %)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


# NVML's clock-event (throttle) reasons that slow a GPU down; idle, an applications-clocks setting and a
# display-clock setting do not.
THROTTLE_REASONS = {0x4: "sw power cap", 0x8: "hw slowdown", 0x10: "sync boost", 0x20: "sw thermal slowdown",
                    0x40: "hw thermal slowdown", 0x80: "hw power brake"}
SMI_QUERY = "clocks.sm,clocks_throttle_reasons.active"


def gpu_clocks(index: int) -> tuple[float, int] | None:
    """(SM clock in MHz, NVML's throttle-reason bits) of GPU `index` now: by NVML where nvidia-ml-py is
    installed, else by nvidia-smi; None where neither answers."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return (float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
                int(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)))
    except Exception:  # no nvidia-ml-py, or NVML refused: ask nvidia-smi
        pass
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits",
                               "-i", str(index)], capture_output=True, text=True, timeout=10, check=True)
        clock, reasons = (value.strip() for value in done.stdout.strip().split(","))
        return float(clock), int(reasons, 16)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def throttling(*readings: tuple[float, int] | None) -> dict[str, float | str | None]:
    """A row's GPU telemetry from readings of `gpu_clocks` around its timed rounds: the lowest SM clock
    seen, and the throttle reasons any reading gave ('; '-separated; empty when none)."""
    seen = [reading for reading in readings if reading is not None]
    if not seen:
        return {}
    bits = 0
    for _, reasons in seen:
        bits |= reasons
    names = [name for bit, name in THROTTLE_REASONS.items() if bits & bit]
    return {"sm_clock_mhz": min(clock for clock, _ in seen), "throttle": "; ".join(names)}
