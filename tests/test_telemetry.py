"""CPU steal time from /proc/stat: the parsing of its first line and the share between two readings."""

import subprocess
import sys

import pytest

from bench.machine.telemetry import cpu_ticks, gpu_clocks, steal_pct, throttling

# user nice system idle iowait irq softirq steal guest guest_nice
STAT = "cpu  144075 124 16592 124062 2559 0 435 1441 7 0\ncpu0 72000 60 8000 62000 1200 0 200 700 3 0\n"


def test_steal_and_total_ticks_are_read_from_the_first_line(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    # guest time is counted inside user time already, so the total stops at steal
    assert cpu_ticks(stat) == (1441, 144075 + 124 + 16592 + 124062 + 2559 + 0 + 435 + 1441)


def test_a_stat_with_steal_but_no_guest_fields_is_read(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3 4 5 6 7 8\n")  # kernels 2.6.11 to 2.6.23: steal is the last field
    assert cpu_ticks(stat) == (8, 36)


@pytest.mark.parametrize("text", ["cpu  1 2 3 4 5 6 7\n", "intr 1 2 3 4 5 6 7 8 9\n", ""],
                         ids=["no steal field", "not the cpu line", "empty"])
def test_a_stat_without_a_steal_field_reads_none(tmp_path, text):
    stat = tmp_path / "stat"
    stat.write_text(text)
    assert cpu_ticks(stat) is None
    assert cpu_ticks(tmp_path / "missing") is None  # not Linux


def test_steal_is_a_percentage_of_all_ticks_between_two_readings():
    assert steal_pct((100, 1000), (130, 1200)) == pytest.approx(15.0)  # 30 of 200 ticks
    assert steal_pct((100, 1000), (100, 1200)) == 0.0
    assert steal_pct((100, 1000), (100, 1000)) is None  # no tick passed: nothing to divide by
    assert steal_pct(None, (100, 1000)) is None and steal_pct((100, 1000), None) is None


def test_this_machine_reads_its_own_ticks():
    ticks = cpu_ticks()
    assert ticks is not None and 0 <= ticks[0] <= ticks[1]


class FakeNvml:
    """nvidia-ml-py's pynvml, as gpu_clocks uses it."""

    NVML_CLOCK_SM = 1

    def __init__(self, clock=1980, reasons=0x4):
        self.clock, self.reasons, self.asked = clock, reasons, []

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        self.asked.append(index)
        return f"handle {index}"

    def nvmlDeviceGetClockInfo(self, handle, clock):
        assert (handle, clock) == ("handle 1", self.NVML_CLOCK_SM)
        return self.clock

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return self.reasons


def test_gpu_clocks_come_from_nvml_where_it_is_installed(monkeypatch):
    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("nvidia-smi asked though NVML answered"))
    assert gpu_clocks(1) == (1980.0, 0x4) and nvml.asked == [1]


def test_without_nvml_gpu_clocks_come_from_nvidia_smi(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: its import fails
    asked = []

    def run(command, **kwargs):
        asked.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="1755, 0x0000000000000044\n", stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    assert gpu_clocks(2) == (1755.0, 0x44)
    assert asked == [["nvidia-smi", "--query-gpu=clocks.sm,clocks_throttle_reasons.active",
                      "--format=csv,noheader,nounits", "-i", "2"]]


@pytest.mark.parametrize("error", [FileNotFoundError("nvidia-smi"), subprocess.CalledProcessError(6, "nvidia-smi")])
def test_where_neither_nvml_nor_nvidia_smi_answers_there_are_no_gpu_clocks(monkeypatch, error):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(error))
    assert gpu_clocks(0) is None


def test_throttling_keeps_the_lowest_clock_and_every_reason_that_slows_the_gpu():
    # idle (0x1) and an applications-clocks setting (0x2) do not slow a busy GPU; power (0x4) and heat (0x40) do
    assert throttling((1980.0, 0x1), (1755.0, 0x2 | 0x4 | 0x40)) == {
        "sm_clock_mhz": 1755.0, "throttle": "sw power cap; hw thermal slowdown"}
    assert throttling((1980.0, 0x1), None) == {"sm_clock_mhz": 1980.0, "throttle": ""}
    assert throttling(None, None) == {}  # nothing read: the row leaves both empty
