"""Device time: CUDA-graph replays timed by events (with CUDA faked), the profiler's busy time as the
fallback (rehearsed on the CPU's own ops), and the union of busy intervals."""

import contextlib
import time

import pytest
import torch
from torch.profiler import ProfilerActivity, record_function

from bench.run import devicetime
from bench.run.devicetime import busy_seconds, measure_device, profiled_rounds

CUDA = torch.device("cuda")


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class FakeCuda:
    """What graph_rounds uses of torch.cuda, logging each call; a replay takes 2 ms of GPU time, the sleep
    before a round 1 ms (outside the round's events). With `capture_error`, the step raises it while being
    captured, and capture_end then fails as CUDA's does after an invalidated capture."""

    def __init__(self, monkeypatch, capture_error: Exception | None = None):
        self.log, self.gpu_ms, self.capturing, self.capture_error = [], 0.0, False, capture_error
        self.stream = "default"
        fake = self

        class Stream:
            def __init__(self, device=None):
                self.name = "side"

            def wait_stream(self, other):
                fake.log.append(f"{self.name} waits for {other.name}")

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing
                self.at = None

            def record(self):
                self.at = fake.gpu_ms

            def elapsed_time(self, end):
                return end.at - self.at

        class CUDAGraph:
            def capture_begin(self):
                fake.log.append("capture begin")
                fake.capturing = True

            def capture_end(self):
                fake.log.append("capture end")
                fake.capturing = False
                if fake.capture_error:
                    raise RuntimeError("operation failed due to a previous error during capture")

            def replay(self):
                fake.log.append("replay")
                fake.gpu_ms += 2.0

        @contextlib.contextmanager
        def stream(s):
            before, fake.stream = fake.stream, s.name
            fake.log.append(f"on {s.name}")
            try:
                yield
            finally:
                fake.stream = before
                fake.log.append(f"off {s.name}")

        default = Stream()
        default.name = "default"
        for name, value in {"Stream": Stream, "Event": Event, "CUDAGraph": CUDAGraph, "stream": stream,
                            "current_stream": lambda device=None: default,
                            "_sleep": lambda cycles: self._sleep(cycles),
                            "synchronize": lambda device=None: self.log.append("sync")}.items():
            monkeypatch.setattr(torch.cuda, name, value)

    def _sleep(self, cycles):
        assert cycles == devicetime.QUEUE_CYCLES
        self.log.append("sleep")
        self.gpu_ms += 1.0

    def step(self):
        self.log.append("step")
        if self.capturing and self.capture_error:
            raise self.capture_error


def test_a_captured_step_is_timed_by_its_replays_per_step_with_the_gpu_held_while_each_round_queues(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    timed = measure_device(cuda.step, CUDA, iterations=3, rounds=2)
    assert timed == devicetime.DeviceTime((0.002, 0.002), "graph", "")  # 6 ms a round over 3 replays
    round_ = ["sleep", "replay", "replay", "replay", "sync"]
    assert cuda.log == ["side waits for default", "on side", "step", "step", "step", "off side", "sync",
                        "on side", "capture begin", "step", "capture end", "off side", "default waits for side",
                        "replay", "sync",  # the untimed first replay, which uploads the graph
                        *round_, *round_]


def test_a_step_that_cannot_be_captured_is_timed_by_the_profiler_says_why_and_leaves_the_stream(monkeypatch):
    cuda = FakeCuda(monkeypatch, RuntimeError("operation not permitted when stream is capturing\nmore"))
    asked = []
    monkeypatch.setattr(devicetime, "profiled_rounds", lambda step, device, rounds: asked.append(rounds) or [4e-3])
    timed = measure_device(cuda.step, CUDA, iterations=3, rounds=20)
    # the step's own error, not capture_end's echo of it
    assert timed == devicetime.DeviceTime(
        (4e-3,), "profiler", "not captured: RuntimeError: operation not permitted when stream is capturing")
    assert asked == [devicetime.PROFILED_ROUNDS] and cuda.log[-3:] == ["capture end", "off side", "sync"]
    assert cuda.stream == "default" and not cuda.capturing and "replay" not in cuda.log


def test_a_step_refused_for_capture_goes_to_the_profiler_untouched_by_a_capture(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    monkeypatch.setattr(devicetime, "profiled_rounds", lambda step, device, rounds: [5e-3, 6e-3])
    timed = measure_device(cuda.step, CUDA, iterations=3, rounds=2, refused="an optimizer step")
    assert timed == devicetime.DeviceTime((5e-3, 6e-3), "profiler", "not captured: an optimizer step")
    assert cuda.log == []  # nothing captured, so nothing half-updated


def test_where_the_profiler_fails_too_the_case_keeps_its_host_time_and_both_reasons(monkeypatch):
    cuda = FakeCuda(monkeypatch, RuntimeError("capture"))
    monkeypatch.setattr(devicetime, "profiled_rounds",
                        lambda step, device, rounds: (_ for _ in ()).throw(RuntimeError("CUPTI busy")))
    timed = measure_device(cuda.step, CUDA, iterations=1, rounds=5)
    assert timed == devicetime.DeviceTime((), "", "not captured: RuntimeError: capture; "
                                                  "not profiled: RuntimeError: CUPTI busy")


def test_the_profiler_fallback_counts_each_recorded_step_s_busy_spans_not_the_idle_time_between(monkeypatch):
    monkeypatch.setattr(devicetime, "ACTIVITY", ProfilerActivity.CPU)  # the CPU's ops stand in for kernels
    monkeypatch.setattr(devicetime, "is_device_work", lambda event: event.name == "kernel")
    calls = []

    def step():
        calls.append(None)
        with record_function("kernel"):
            busy(0.002)
        time.sleep(0.01)  # the host's gap: no kernel runs
        with record_function("kernel"):
            busy(0.003)

    per_step = profiled_rounds(step, torch.device("cpu"), rounds=3)
    assert len(per_step) == 3 and len(calls) == 6  # every second step recorded
    assert all(0.005 <= seconds < 0.009 for seconds in per_step), per_step


@pytest.mark.parametrize(("spans", "seconds"), [
    ([], 0.0),
    ([(0, 10), (20, 25)], 15e-6),  # apart: both
    ([(20, 30), (0, 10), (5, 12)], 22e-6),  # overlapping (two streams), out of order: their union
    ([(0, 100), (10, 20), (30, 40)], 100e-6),  # nested: the outer one
])
def test_busy_time_is_the_union_of_the_spans(spans, seconds):
    assert busy_seconds(spans) == pytest.approx(seconds)


def test_the_sleep_kernel_s_speed_is_its_cycles_over_the_events_time(monkeypatch):
    clock = {"ms": 0.0}

    class Event:
        def __init__(self, enable_timing=False):
            self.at = None

        def record(self):
            self.at = clock["ms"]

        def elapsed_time(self, end):
            return end.at - self.at

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "_sleep", lambda cycles: clock.update(ms=clock["ms"] + cycles / 1.98e9 * 1e3))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    assert devicetime.sleep_cycles_per_s(CUDA) == pytest.approx(1.98e9)  # an H200 at its top clock
