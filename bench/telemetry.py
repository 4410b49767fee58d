"""What else the machine did while a case was timed: the share of CPU time the hypervisor gave to other
guests (steal, from /proc/stat), which slows a host-bound figure with no change in the code."""

from __future__ import annotations

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
