"""The sweep: one frozen Case per (model, phase, precision, batch, attention, mode), built from the options."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch

from bench.sweep.attention import ATTENTION
from bench.sweep.models import MODELS
from bench.sweep.modes import MODES
from bench.sweep.precision import DTYPES, PRECISIONS, emulated

PHASES = ("fwd", "fwdbwd", "step")
# validate's trust stage sets this (a fraction, e.g. 0.05) in one side of its ab pairs: that side's sweep times
# every case twice, as it is and slowed by that fraction of its device time (harness.slowed), so the gate's
# catches can be counted against a known change.
SLOWDOWN_ENV = "ARCHBENCH_SLOWDOWN"


def slowed_suffix(slowdown: float) -> str:
    return f"-slow{slowdown * 100:g}" if slowdown else ""


def with_slowed(cases: list, slowdown: float) -> list:
    """Each case followed by its copy slowed by `slowdown` (none when 0)."""
    return [variant for case in cases
            for variant in (case, *([dataclasses.replace(case, slowdown=slowdown)] if slowdown else []))]


@dataclass(frozen=True)
class Case:
    """One benchmark case; its id, its result row's key columns and its skip reason derive from it."""

    kind: ClassVar[str] = "model"
    model: str
    phase: str
    precision: str
    batch: int
    attention: str | None = None  # None for models without attention
    size: str = "quick"
    mode: str = "eager"
    memory_format: str = "contiguous"  # or channels_last, for the convolutional models
    slowdown: float = 0.0  # a known slowdown added to each step, for validate's trust stage only
    left_out: str = ""  # why the sweep records this case without running it (trim_emulated)

    @property
    def id(self) -> str:
        """model-phase-precision-bN, then the attention, the mode and the memory format where they apply
        (eager and contiguous add nothing, so ids from before those axes still match), and -slowN for a
        case slowed by N %."""
        parts = [self.model, self.phase, self.precision, f"b{self.batch}", self.attention,
                 None if self.mode == "eager" else self.mode,
                 None if self.memory_format == "contiguous" else self.memory_format]
        return "-".join(part for part in parts if part) + slowed_suffix(self.slowdown)

    def unavailable(self, device: torch.device) -> str | None:
        """Why this device cannot run the case (mode, precision, then attention) or else the sweep leaves it
        out, or None."""
        precision = PRECISIONS[self.precision]
        reason = MODES[self.mode].unavailable(device) or precision.unavailable(device)
        if reason is None and self.attention is not None:
            spec = MODELS[self.model]
            reason = ATTENTION[self.attention].unavailable(device, precision.compute_dtype, spec.head_dim,
                                                           causal=spec.causal)
        return reason or self.left_out or None


def sweep(models: list[str], phases: list[str], precisions: list[str], batch_sizes: list[int] | None,
          attentions: list[str], size: str, default_batches: slice = slice(None), modes: tuple[str, ...] = ("eager",),
          memory_format: str = "contiguous") -> list[Case]:
    """Every combination; attention varies only for models that have it, batch sizes default per model
    (those `default_batches` picks of the model's own), and a memory format other than contiguous applies
    to the convolutional models only. Precision and phase vary innermost: cases that differ only in them
    share one build of the model (harness.Builds)."""
    cases = []
    for name in models:
        spec = MODELS[name]
        batches = batch_sizes or spec.batch_sizes[size][default_batches]
        attns = attentions if spec.has_attention else [None]
        layout = memory_format if spec.convolutional else "contiguous"
        for batch, attn, mode, precision, phase in itertools.product(batches, attns, modes, precisions, phases):
            cases.append(Case(name, phase, precision, batch, attn, size, mode, layout))
    return cases


def trim_emulated(cases: list[Case], device: torch.device) -> list[Case]:
    """A default sweep on a device that emulates a precision (bf16 on most CPUs: ~70x slower than fp32, which
    would take most of the quick sweep's time) times it forward at each model's smallest batch only; its
    other cases are recorded as skipped with the reason, and naming the precision times them all."""
    smallest = {}
    for case in cases:
        smallest[case.model] = min(smallest.get(case.model, case.batch), case.batch)
    trimmed = []
    for case in cases:
        why = emulated(PRECISIONS[case.precision].compute_dtype, device)
        if why and (case.phase != "fwd" or case.batch != smallest[case.model]):
            case = dataclasses.replace(case, left_out=f"{why}: the default sweep times {case.precision} forward at "
                                                      f"the smallest batch only; --precisions {case.precision} "
                                                      "times every case")
        trimmed.append(case)
    return trimmed


ATTENTION_DTYPES = ("fp16", "bf16")
# The micro-benchmark's dtype kept on a device that emulates them all (the model sweep's AMP dtype).
EMULATED_KEEP = "bf16"
# Shapes of the attention micro-benchmark: batch * heads = 8 on a CPU, 64 on a GPU (FlashAttention's range).
ATTENTION_SHAPES = {
    "quick": {"batch": 2, "heads": 4, "seqlens": (128, 256), "head_dims": (64, 128)},
    "full": {"batch": 4, "heads": 16, "seqlens": (1024, 2048, 4096, 8192, 16384), "head_dims": (64, 128)},
}


@dataclass(frozen=True)
class AttentionCase:
    """One case of the attention micro-benchmark: an implementation on one self-attention shape."""

    kind: ClassVar[str] = "attention"
    attention: str
    phase: str
    precision: str  # the inputs' dtype: fp16 or bf16
    seqlen: int
    head_dim: int
    causal: bool
    batch: int
    heads: int
    slowdown: float = 0.0  # as Case's
    left_out: str = ""  # as Case's (trim_emulated_attention)

    @property
    def id(self) -> str:
        mask = "causal" if self.causal else "full"
        return (f"attn-{self.phase}-{self.precision}-{mask}-d{self.head_dim}-s{self.seqlen}-{self.attention}"
                + slowed_suffix(self.slowdown))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    def unavailable(self, device: torch.device) -> str | None:
        reason = ATTENTION[self.attention].unavailable(device, self.torch_dtype, self.head_dim, causal=self.causal)
        return reason or self.left_out or None


def trim_emulated_attention(cases: list[AttentionCase], device: torch.device) -> list[AttentionCase]:
    """A default micro-benchmark on a device that emulates every one of its dtypes (a CPU without fp16 or bf16
    arithmetic) times EMULATED_KEEP only; the other dtypes' cases are recorded as skipped with the reason."""
    if not all(emulated(DTYPES[name], device) for name in ATTENTION_DTYPES):
        return cases
    return [case if case.precision == EMULATED_KEEP else dataclasses.replace(
        case, left_out=f"{emulated(case.torch_dtype, device)}: the default micro-benchmark times {EMULATED_KEEP} "
                       "only, emulated too; naming --precisions times every dtype") for case in cases]


def attention_sweep(attentions: list[str], phases: list[str], size: str, dtypes: tuple[str, ...] | None = None,
                    seqlens: tuple[int, ...] | None = None) -> list[AttentionCase]:
    """Every implementation over sequence lengths, head dims, masks, dtypes (fp16 and bf16 unless given),
    fwd and fwdbwd."""
    shape = ATTENTION_SHAPES[size]
    return [
        AttentionCase(attn, phase, dtype, seqlen, head_dim, causal, shape["batch"], shape["heads"])
        for phase in phases if phase != "step"
        for dtype in dtypes or ATTENTION_DTYPES
        for causal in (False, True)
        for head_dim in shape["head_dims"]
        for seqlen in seqlens or shape["seqlens"]
        for attn in attentions
    ]
