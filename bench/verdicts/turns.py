"""Turn-taking for `ab`: the two processes of a pair run side by side, but only one of them times at a
time, and the two time each case in alternating slices of about TURN_S. The host's speed on a shared
machine shifts by tens of percent over seconds (2-core CI machine: one process's 0.3 s medians of the
CNN stepped from 2.4 to 1.6 ms and back), which processes run minutes apart cannot share; slices 0.1 s
apart see the same host.

A sweep process finds its pipes to the referee (ab's parent) in ARCHBENCH_TURNS ("read-fd,write-fd"),
announces its cases, and asks before a case (its build), between its rounds once a slice is up, and after
the case (its device time, FLOPs and profile done), so everything a case does on a GPU stays inside its
turn; each ask blocks until the referee answers. It also asks which iterations and rounds to time, so
both sides time a case alike. Without the variable every call here does nothing."""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

ENV = "ARCHBENCH_TURNS"
SIDES = ("A", "B")
TURN_S = 0.1
# After a process hands over, its OpenMP workers spin-wait 6-10 ms on the 2-core CI machine (libgomp's
# default spin count) and take a core from the other's first rounds (one CNN round of 1.6 ms ran 4-6 ms
# later); the one taking over warms up this long, untimed, before timing.
SETTLE_S = 0.02
_pipes: tuple[IO[str], IO[str]] | None = None


def active() -> bool:
    """Whether this process runs under ab's referee."""
    return bool(os.environ.get(ENV))


def _ask(message: str) -> str:
    """Send a line to the referee and return its answer once it comes ("" outside `ab`)."""
    global _pipes
    spec = os.environ.get(ENV)
    if not spec:
        return ""
    if _pipes is None:
        read_fd, write_fd = (int(fd) for fd in spec.split(","))
        _pipes = (os.fdopen(read_fd, "r"), os.fdopen(write_fd, "w"))
    reader, writer = _pipes
    writer.write(message + "\n")
    writer.flush()
    answer = reader.readline()
    if not answer:
        raise RuntimeError("the ab referee went away")
    return answer.strip()


def announce(cases: list[str]) -> None:
    """The case ids this process will time, in order (so the referee knows which the other side lacks)."""
    _ask("cases " + " ".join(cases))


def agree(case: str, iterations: int, rounds: int) -> tuple[int, int]:
    """The iterations and rounds to time a case with: under `ab`, those the first side to ask proposed (the
    referee keeps them), so both sides' figures average the same number of steps; else the ones given."""
    answer = _ask(f"plan {case} {iterations} {rounds}").split()
    return (int(answer[0]), int(answer[1])) if len(answer) == 2 else (iterations, rounds)


@contextlib.contextmanager
def timed(case: str) -> Iterator[None]:
    """A stretch that must not overlap the other process's: a case from its build to its profile (or the
    machine's calibration)."""
    _ask(f"before {case}")
    try:
        yield
    finally:
        _ask(f"after {case}")


def handover(case: str, rewarm: Callable[[], object]) -> Callable[..., None]:
    """Called after each timed round (untimed): once TURN_S has passed, gives the turn to the other process
    and, back, repeats `rewarm` (an untimed step) for SETTLE_S, while the other's threads settle and
    this one's caches, which the other's work evicted, refill."""
    start = time.perf_counter()

    def between_rounds(*_) -> None:
        nonlocal start
        if time.perf_counter() - start >= TURN_S:
            _ask(f"switch {case}")
            back = time.perf_counter()
            rewarm()
            while time.perf_counter() - back < SETTLE_S:
                rewarm()
            start = time.perf_counter()

    return between_rounds


@dataclass
class Referee:
    """ab's side: reads both processes' asks (`readers`, line by line) and answers (`writers`) so that one
    process times at a time and a case both sides time is timed by each in alternating slices, the side
    that starts alternating from case to case (starting with `first`). Everything else (import, collection,
    writing results and reports) overlaps."""

    readers: dict[str, IO[str]]
    writers: dict[str, IO[str]]
    first: str = "A"
    state: dict[str, tuple[str, str]] = field(default_factory=dict)  # side -> (what, case); ("exited", "")
    cases: dict[str, set[str]] = field(default_factory=lambda: {side: set() for side in SIDES})
    plans: dict[str, str] = field(default_factory=dict)  # case -> "iterations rounds", as first proposed
    paired: int = 0  # cases timed back to back so far

    def run(self) -> None:
        """Referee until both processes have exited (closed their pipes)."""
        running = set(SIDES)
        while len(self._exited()) < len(SIDES):
            self._wait(running)
            running = self._next()

    def _exited(self) -> list[str]:
        return [side for side in SIDES if self.state.get(side, ("",))[0] == "exited"]

    def _wait(self, running: set[str]) -> None:
        """Until every running process has asked (or exited); an announcement or a plan is answered at once."""
        while running:
            ready, _, _ = select.select([self.readers[side] for side in running], [], [])
            for side in [s for s in running if self.readers[s] in ready]:
                line = self.readers[side].readline()
                what, _, case = line.strip().partition(" ")
                if not line:
                    self.state[side] = ("exited", "")
                    running.discard(side)
                elif what == "cases":
                    self.cases[side] = set(case.split())
                    self._go(side)
                elif what == "plan":
                    name, plan = case.split(" ", 1)
                    self._go(side, self.plans.setdefault(name, plan))
                else:
                    self.state[side] = (what, case)
                    running.discard(side)

    def _go(self, side: str, answer: str = "go") -> None:
        try:
            self.writers[side].write(answer + "\n")
            self.writers[side].flush()
        except BrokenPipeError:  # it died after asking: its end-of-file comes next
            pass

    def _slice(self, side: str) -> None:
        """Let one process time until it asks again (its slice is up, or its case is done)."""
        self._go(side)
        self._wait({side})

    def _timing(self, side: str) -> bool:
        return self.state[side][0] in ("before", "switch")

    def _next(self) -> set[str]:
        """Both processes wait (or have exited): time what is due, then release them; the sides let run."""
        before = {side: case for side, (what, case) in self.state.items() if what == "before"}
        if len(before) == 2 and before["A"] == before["B"]:
            side = SIDES[(SIDES.index(self.first) + self.paired) % 2]
            self.paired += 1
            self._slice(side)
            while self._timing(side) or self._timing(_other(side)):
                side = _other(side) if self._timing(_other(side)) else side
                self._slice(side)
        elif before:  # a case only one side has, or the other side gone: timed alone
            alone = [side for side, case in before.items() if case not in self.cases[_other(side)]]
            side = (alone or sorted(before))[0]
            while self._timing(side):
                self._slice(side)
        waiting = {side for side, (what, _) in self.state.items() if what == "after"}
        for side in waiting:
            self.state[side] = ("running", "")
            self._go(side)
        return waiting


def _other(side: str) -> str:
    return SIDES[1 - SIDES.index(side)]
