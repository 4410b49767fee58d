"""Execution modes, an axis like precision: how a model's forward runs. Eager; compiled by torch.compile's
inductor (its default mode, or max-autotune, which benchmarks kernel choices while compiling); or, on
CUDA, compiled with CUDA graphs (mode="reduce-overhead": each round replays a captured graph)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Mode:
    name: str
    compile_mode: str | None  # torch.compile's mode; None runs eager
    needs_cuda: bool = False

    @property
    def compiled(self) -> bool:
        return self.compile_mode is not None

    @property
    def cudagraphs(self) -> bool:
        """Whether torch.compile's mode records and replays CUDA graphs itself (max-autotune does too)."""
        return self.compile_mode in ("reduce-overhead", "max-autotune")

    def apply(self, model: nn.Module) -> nn.Module:
        """The module to time: the model itself, or its compiled wrapper (which compiles on first call)."""
        return torch.compile(model, mode=self.compile_mode) if self.compiled else model

    def unavailable(self, device: torch.device) -> str | None:
        if self.needs_cuda and device.type != "cuda":
            return f"{self.name}: CUDA graphs need a CUDA device"
        return None


MODES = {
    "eager": Mode("eager", None),
    "compile": Mode("compile", "default"),
    "compile-max-autotune": Mode("compile-max-autotune", "max-autotune"),
    "cudagraphs": Mode("cudagraphs", "reduce-overhead", needs_cuda=True),
}
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def compile_counters() -> dict[str, int]:
    """Dynamo's running totals: frames compiled and graph breaks (a case reads their change)."""
    counters = torch._dynamo.utils.counters
    return {"frames": counters["frames"]["ok"], "graph_breaks": sum(counters["graph_break"].values())}
