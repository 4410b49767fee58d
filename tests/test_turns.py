"""Turn-taking between the two processes of an ab pair: the referee's order, played against scripted
processes on real pipes, and the sweep side's asks."""

import os
import threading

import pytest

from bench.verdicts import turns
from bench.verdicts.turns import Referee


class Scripted(threading.Thread):
    """A process that sends its script's lines one by one, each after the referee's go for the last, and
    logs each line it was let past; then it closes its pipe, as an exiting process does."""

    def __init__(self, side: str, script: list[str], log: list, reader, writer):
        super().__init__(daemon=True)
        self.side, self.script, self.log, self.reader, self.writer = side, script, log, reader, writer

    def run(self) -> None:
        for line in self.script:
            self.writer.write(line + "\n")
            self.writer.flush()
            answer = self.reader.readline()
            if line.startswith("plan "):  # answered with the plan to time by
                self.log.append((self.side, f"{line} -> {answer.strip()}"))
                continue
            if answer != "go\n":
                return
            self.log.append((self.side, line))
        self.writer.close()


def referee(scripts: dict[str, list[str]], first: str = "A") -> list[tuple[str, str]]:
    """Run the referee against scripted processes; the lines each was let past, in the order it was."""
    log: list[tuple[str, str]] = []
    readers, writers, threads = {}, {}, []
    for side, script in scripts.items():
        to_child, from_child = os.pipe(), os.pipe()
        readers[side], writers[side] = os.fdopen(from_child[0]), os.fdopen(to_child[1], "w")
        threads.append(Scripted(side, script, log, os.fdopen(to_child[0]), os.fdopen(from_child[1], "w")))
    for thread in threads:
        thread.start()
    done = threading.Thread(target=Referee(readers, writers, first).run, daemon=True)
    done.start()
    done.join(timeout=10)
    assert not done.is_alive(), "the referee hung"
    return log


def timed_slices(log):
    return [(side, line) for side, line in log if line.split()[0] in ("before", "switch")]


CASE = ["before c1", "switch c1", "after c1"]


def test_a_shared_case_is_timed_in_alternating_slices_the_side_that_starts_alternating_by_case():
    script = ["cases c1 c2", *CASE, "before c2", "after c2"]
    log = referee({"A": script, "B": script})
    assert timed_slices(log) == [("A", "before c1"), ("B", "before c1"), ("A", "switch c1"), ("B", "switch c1"),
                                 ("B", "before c2"), ("A", "before c2")]
    assert timed_slices(referee({"A": script, "B": script}, first="B"))[0] == ("B", "before c1")


def test_a_side_with_more_slices_finishes_them_alone():
    log = referee({"A": ["cases c1", "before c1", "switch c1", "switch c1", "after c1"],
                   "B": ["cases c1", "before c1", "after c1"]})
    assert timed_slices(log) == [("A", "before c1"), ("B", "before c1"), ("A", "switch c1"), ("A", "switch c1")]


def test_no_process_times_while_the_other_does():
    """Every line a process was let past until its case ended lies between the other's asks: the log of
    a shared case interleaves strictly, and nothing of the other side's comes before both end."""
    script = ["cases c1", "before c1", "switch c1", "switch c1", "after c1"]
    log = referee({"A": script, "B": script})
    sides = [side for side, line in log if line.split()[0] in ("before", "switch")]
    assert sides == ["A", "B"] * 3
    ends = [i for i, (_, line) in enumerate(log) if line == "after c1"]
    assert ends == [len(log) - 2, len(log) - 1]  # both released only once both are done


def test_a_case_only_one_side_has_is_timed_alone_and_the_next_shared_one_paired_again():
    log = referee({"A": ["cases c1 c2", *CASE, "before c2", "after c2"],
                   "B": ["cases c1 new c2", *CASE, "before new", "after new", "before c2", "after c2"]})
    assert timed_slices(log) == [("A", "before c1"), ("B", "before c1"), ("A", "switch c1"), ("B", "switch c1"),
                                 ("B", "before new"), ("B", "before c2"), ("A", "before c2")]


def test_a_process_that_dies_mid_case_leaves_the_other_to_finish_alone():
    log = referee({"A": ["cases c1 c2", "before c1"],  # exits after its first go, as a crash would
                   "B": ["cases c1 c2", *CASE, "before c2", "after c2"]})
    assert timed_slices(log) == [("A", "before c1"), ("B", "before c1"), ("B", "switch c1"), ("B", "before c2")]


@pytest.fixture
def sweep_side(monkeypatch):
    """This process as an ab sweep: its pipes to a scripted referee thread that answers every line."""
    to_child, from_child = os.pipe(), os.pipe()
    monkeypatch.setenv(turns.ENV, f"{to_child[0]},{from_child[1]}")
    monkeypatch.setattr(turns, "_pipes", None)
    heard: list[str] = []
    reader, writer = os.fdopen(from_child[0]), os.fdopen(to_child[1], "w")

    def answer() -> None:
        for line in reader:
            heard.append(line.strip())
            writer.write("4 9\n" if line.startswith("plan ") else "go\n")
            writer.flush()

    threading.Thread(target=answer, daemon=True).start()
    yield heard
    turns._pipes[1].close()  # the referee's reader ends


def test_the_sweep_side_asks_before_between_slices_and_after(sweep_side, monkeypatch):
    monkeypatch.setattr(turns, "TURN_S", 0.0)  # a slice is up after every round
    monkeypatch.setattr(turns, "SETTLE_S", 0.0)
    rewarms = []
    assert turns.active()
    turns.announce(["c1", "c2"])
    with turns.timed("c1"):
        between = turns.handover("c1", lambda: rewarms.append(1))
        between()
        between()
    assert sweep_side == ["cases c1 c2", "before c1", "switch c1", "switch c1", "after c1"]
    assert len(rewarms) == 2  # one untimed step after each switch, however short the settling


def test_the_one_taking_over_rewarms_for_the_settling_time(sweep_side, monkeypatch):
    monkeypatch.setattr(turns, "TURN_S", 0.0)
    monkeypatch.setattr(turns, "SETTLE_S", 0.05)
    clock = iter(range(1000))
    monkeypatch.setattr(turns.time, "perf_counter", lambda: next(clock) * 0.01)  # 10 ms a reading
    rewarms = []
    turns.handover("c1", lambda: rewarms.append(1))()
    assert len(rewarms) == 5  # at 10 ms a step, until 50 ms have passed since the switch


def test_after_is_asked_even_when_the_case_fails(sweep_side):
    with pytest.raises(RuntimeError), turns.timed("c1"):
        raise RuntimeError("broken")
    assert sweep_side[-2:] == ["before c1", "after c1"]


def test_outside_ab_nothing_is_asked(monkeypatch):
    monkeypatch.delenv(turns.ENV, raising=False)
    monkeypatch.setattr(turns, "_pipes", None)
    assert not turns.active()
    with turns.timed("c1"):
        turns.announce(["c1"])
    assert turns._pipes is None


def test_both_sides_time_a_case_with_the_plan_the_first_to_ask_proposed():
    log = referee({"A": ["before c1", "plan c1 5 10", "switch c1", "after c1", "before c2", "plan c2 1 7", "after c2"],
                   "B": ["before c1", "plan c1 7 3", "after c1", "before c2", "plan c2 2 8", "after c2"]})
    plans = [entry for entry in log if entry[1].startswith("plan")]
    # c1: A went first and proposed 5 x 10; c2: B went first (the sides alternate) and A timed B's plan
    assert plans == [("A", "plan c1 5 10 -> 5 10"), ("B", "plan c1 7 3 -> 5 10"),
                     ("B", "plan c2 2 8 -> 2 8"), ("A", "plan c2 1 7 -> 2 8")]


def test_the_sweep_side_times_the_plan_the_referee_gives(sweep_side):
    assert turns.agree("c1", 5, 10) == (4, 9)
    assert sweep_side == ["plan c1 5 10"]


def test_outside_ab_a_case_keeps_its_own_plan(monkeypatch):
    monkeypatch.delenv(turns.ENV, raising=False)
    monkeypatch.setattr(turns, "_pipes", None)
    assert turns.agree("c1", 5, 10) == (5, 10)
