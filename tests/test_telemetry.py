"""CPU steal time from /proc/stat: the parsing of its first line and the share between two readings."""

import pytest

from bench.telemetry import cpu_ticks, steal_pct

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
