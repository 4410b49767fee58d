"""The sweep's budget, shared out case by case, on a fake clock; durations parsed or refused in one line."""

import pytest

from bench.errors import OptionError
from bench.run.budget import Budget, format_duration, parse_duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_shares_out_what_is_left_and_a_sweep_within_its_shares_ends_in_time():
    clock = Clock()
    budget = Budget(60.0, 10, clock)
    assert budget.share() == 6.0 and budget.timing_cap(1.0) == 1.0 and budget.timing_cap(100.0) == pytest.approx(2.4)
    for cost in (1.0, 1.0, 1.0):  # fast cases leave their share to the rest
        clock.now += cost
        budget.case_done()
    assert budget.share() == pytest.approx(57.0 / 7)
    for _ in range(7):  # every case spends its whole share
        clock.now += budget.share()
        budget.case_done()
    assert clock.now == pytest.approx(60.0) and budget.remaining == pytest.approx(0.0)


def test_a_spent_budget_runs_nothing_more_and_says_by_how_much_it_was_over():
    clock = Clock()
    budget = Budget(10.0, 3, clock)
    clock.now = 12.0  # one case ran long
    budget.case_done()
    assert budget.share() == 0.0 and budget.timing_cap(1.0) == 0.0
    budget.case_done(ran=False)
    assert budget.not_run == 1
    assert budget.describe() == "budget 0:10: took 0:12, 0:02 over"


@pytest.mark.parametrize(("text", "seconds"), [("300", 300), ("45s", 45), ("5m", 300), ("1.5h", 5400), (" 2m ", 120),
                                               ("1", 1), ("0.5m", 30)])
def test_durations_parse(text, seconds):
    assert parse_duration("budget", text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-3m", "0", "m"])
def test_bad_durations_are_one_line_naming_the_forms(text):
    with pytest.raises(OptionError, match=r"^--budget: expected a positive duration such as 300, 300s, 5m or 1.5h"):
        parse_duration("budget", text)


def test_one_case_gets_it_all_and_none_counts_as_one():
    assert Budget(10.0, 1, Clock()).share() == 10.0 and Budget(10.0, 0, Clock()).share() == 10.0


def test_cases_not_run_are_counted_and_the_clock_is_read_from_the_start():
    clock = Clock()
    clock.now = 100.0
    budget = Budget(10.0, 4, clock)
    budget.case_done(ran=False)
    budget.case_done()
    budget.case_done(ran=False)
    assert budget.not_run == 2 and budget.cases_left == 1
    clock.now = 110.0
    assert budget.describe() == "budget 0:10: took 0:10"  # exactly spent is not over


def test_durations_are_written_in_minutes_and_seconds():
    assert [format_duration(s) for s in (0, 59.4, 61, 3725)] == ["0:00", "0:59", "1:01", "62:05"]
