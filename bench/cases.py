"""The sweep: one frozen Case per (model, phase, precision, batch, attention), built from the options."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from bench.attention import ATTENTION
from bench.models import MODELS
from bench.precision import PRECISIONS

PHASES = ("fwd", "fwdbwd", "step")


@dataclass(frozen=True)
class Case:
    """One benchmark case; its id, its result row's key columns and its skip reason derive from it."""

    model: str
    phase: str
    precision: str
    batch: int
    attention: str | None = None  # None for models without attention
    size: str = "quick"

    @property
    def id(self) -> str:
        parts = [self.model, self.phase, self.precision, f"b{self.batch}"]
        return "-".join([*parts, self.attention] if self.attention else parts)

    def unavailable(self, device: torch.device) -> str | None:
        """Why this device cannot run the case (precision, then attention), or None."""
        precision = PRECISIONS[self.precision]
        reason = precision.unavailable(device)
        if reason is None and self.attention is not None:
            spec = MODELS[self.model]
            reason = ATTENTION[self.attention].unavailable(device, precision.compute_dtype, spec.head_dim,
                                                           causal=spec.causal)
        return reason


def sweep(models: list[str], phases: list[str], precisions: list[str], batch_sizes: list[int] | None,
          attentions: list[str], size: str) -> list[Case]:
    """Every combination; attention varies only for models that have it, batch sizes default per model."""
    cases = []
    for name in models:
        spec = MODELS[name]
        batches = batch_sizes or spec.batch_sizes[size]
        attns = attentions if spec.has_attention else [None]
        for phase, precision, batch, attn in itertools.product(phases, precisions, batches, attns):
            cases.append(Case(name, phase, precision, batch, attn, size))
    return cases
