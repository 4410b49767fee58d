"""Cheap launches of Triton kernels: a call signature's launches are planned on its first call (autotuned and
compiled as Triton does) and replayed after it, straight to the compiled kernels at integer grids, skipping
JIT dispatch and the autotuner's per-call key (about 10 us a launch on the host); or traced for
torch.compile through `torch.library.wrap_triton`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import torch
from triton.runtime.autotuner import Autotuner


class Launch(NamedTuple):
    """One kernel launch: the kernel (autotuned or plain), its grid from the config's meta, the runtime
    arguments in the kernel's order (every kernel here takes its constexprs after them), and the
    constexprs the caller sets."""

    kernel: Any
    grid: Callable[[dict], tuple[int, ...]]
    args: tuple
    constexprs: dict[str, Any]


class Step(NamedTuple):
    """A planned launch: the compiled kernel at its grid, and its constexprs in argument order."""

    run: Callable[..., Any]
    tail: tuple


def plan(launch: Launch) -> Step:
    """Run `launch` as Triton would (autotuning a new key, compiling) and return what replays it."""
    compiled = launch.kernel[launch.grid](*launch.args, **launch.constexprs)
    autotuned = isinstance(launch.kernel, Autotuner)
    fn = launch.kernel.fn if autotuned else launch.kernel
    config = launch.kernel.best_config if autotuned else None
    meta = {**launch.constexprs, **(config.kwargs if config else {})}
    tail = tuple(meta[name] for name in fn.arg_names[len(launch.args):])
    grid = (*launch.grid(meta), 1, 1)[:3]
    # Under TRITON_INTERPRET=1 nothing compiles: the interpreted function replays, with the same arguments.
    run = compiled[grid] if compiled is not None else fn[grid]
    return Step(run, tail)


class Plans:
    """Planned launches by call signature."""

    def __init__(self) -> None:
        self._plans: dict[Hashable, tuple[Step, ...]] = {}
        self._planning = threading.Lock()  # an autotuner's best_config is shared: one plan is made at a time

    def run(self, kind: str, key: Hashable, launches: Sequence[Launch]) -> None:
        """Replay the plan of (kind, key), planning it on the first call."""
        steps = self._plans.get((kind, key))
        if steps is None:
            with self._planning:
                steps = self._plans[(kind, key)] = tuple(plan(launch) for launch in launches)
        else:
            for step, launch in zip(steps, launches, strict=True):
                step.run(*launch.args, *step.tail)

    def clear(self) -> None:
        self._plans.clear()


def dispatch(launches: Sequence[Launch]) -> None:
    """Launch through Triton's own path every call (the autotuner's key, JIT dispatch): the unplanned A/B side."""
    for launch in launches:
        launch.kernel[launch.grid](*launch.args, **launch.constexprs)


def traced(launches: Sequence[Launch]) -> None:
    """Launch through `torch.library.wrap_triton`, which torch.compile traces inside a `triton_op`."""
    for launch in launches:
        torch.library.wrap_triton(launch.kernel)[launch.grid](*launch.args, **launch.constexprs)
