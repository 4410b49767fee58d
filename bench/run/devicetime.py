"""Device time: the GPU's own time for one step, with the host taken out (launch overhead, Python and the
VM's CPU speed do not reach it), as triton's do_bench_cudagraph and nvbench measure. The step is captured
in a CUDA graph and its replays are timed by CUDA events; a step that cannot be captured (a host sync or a
read of a GPU value, data-dependent shapes, an optimizer that is not capturable) is timed by the GPU's busy
time in a short profiler pass instead. On a CPU the host time is the device time."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

from bench.errors import one_line

Step = Callable[[], None]
CAPTURE_WARMUP_STEPS = 3  # on a side stream before capture, as torch.cuda.graphs asks
# Before each round a sleep kernel holds the GPU about 1 ms (H200, 1.98 GHz) while the round's replays queue
# behind it, so the round's first replay does not wait on the host either (nvbench's blocking kernel).
QUEUE_CYCLES = 2_000_000
PROFILED_ROUNDS = 5  # one step each: a profiler cycle costs milliseconds of host time to collect
ACTIVITY = ProfilerActivity.CUDA  # what the profiler fallback records (the tests record the CPU's ops instead)


@dataclass(frozen=True)
class DeviceTime:
    """Device seconds per step of each round, how they were measured (graph, profiler), and why a step
    was not captured (empty when it was)."""

    rounds_s: tuple[float, ...]
    method: str
    note: str = ""


def measure_device(step: Step, device: torch.device, iterations: int, rounds: int, refused: str = "") -> DeviceTime:
    """Graph replays timed by events, else the profiler's busy time, with why the step was not captured in
    `note`: `refused` (a step known not to be capturable, or one whose failed capture would leave its state
    half-updated: an optimizer step) or the capture's error. Where both fail, no device time, and both
    errors."""
    note = f"not captured: {refused}" if refused else ""
    if not refused:
        try:
            return DeviceTime(tuple(graph_rounds(step, device, iterations, rounds)), "graph")
        except Exception as err:  # capture refused (a sync, a CPU tensor read, an op not capturable)
            torch.cuda.synchronize(device)
            note = f"not captured: {one_line(err.__context__ or err, 120)}"  # the cause, not capture_end's echo
    try:
        return DeviceTime(tuple(profiled_rounds(step, device, min(rounds, PROFILED_ROUNDS))), "profiler", note)
    except Exception as err:  # the profiler busy elsewhere: the case keeps its host time
        return DeviceTime((), "", f"{note}; not profiled: {one_line(err, 120)}")


def sleep_cycles_per_s(device: torch.device, cycles: int = 10 * QUEUE_CYCLES) -> float:
    """How many of torch.cuda._sleep's cycles the GPU spins through a second now (its clock), by events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    torch.cuda.synchronize(device)
    return cycles / (start.elapsed_time(end) / 1e3)


def graph_rounds(step: Step, device: torch.device, iterations: int, rounds: int) -> list[float]:
    """Capture one step in a CUDA graph, then time `rounds` rounds of `iterations` replays with CUDA events:
    device seconds per step of each round."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up on the capture's stream, so capture sees settled allocations
        for _ in range(CAPTURE_WARMUP_STEPS):
            step()
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize(device)
    with torch.cuda.stream(side):  # entered here, so a failed capture still returns to the caller's stream
        graph.capture_begin()
        try:
            step()
        finally:
            graph.capture_end()
    torch.cuda.current_stream(device).wait_stream(side)
    graph.replay()  # untimed: the first replay uploads the graph
    torch.cuda.synchronize(device)
    per_step = []
    for _ in range(rounds):
        torch.cuda._sleep(QUEUE_CYCLES)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iterations):
            graph.replay()
        end.record()
        torch.cuda.synchronize(device)
        per_step.append(start.elapsed_time(end) / 1e3 / iterations)
    return per_step


def profiled_rounds(step: Step, device: torch.device, rounds: int) -> list[float]:
    """Run the step 2 x `rounds` times under the profiler, every second step recorded: the device's busy
    time (the union of its kernels', copies' and memsets' intervals, so work on two streams at once counts
    once) of each recorded step, in seconds."""
    per_step: list[float] = []

    def collect(prof: profile) -> None:
        spans = [(e.time_range.start, e.time_range.end) for e in prof.events() if is_device_work(e)]
        per_step.append(busy_seconds(spans))

    cycles = schedule(wait=0, warmup=1, active=1, repeat=rounds)
    with warnings.catch_warnings():  # that each cycle's events are cleared is what is wanted here
        warnings.filterwarnings("ignore", message=".*Profiler clears events")
        with profile(activities=[ACTIVITY], schedule=cycles, on_trace_ready=collect) as prof:
            for _ in range(2 * rounds):
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                prof.step()
    return per_step


def is_device_work(event) -> bool:
    """A profiler event the GPU ran: a kernel, a copy or a memset."""
    return event.device_type == DeviceType.CUDA


def busy_seconds(spans_us: Sequence[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals in microseconds, in seconds."""
    total, reach = 0.0, -float("inf")
    for start, end in sorted(spans_us):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total / 1e6

