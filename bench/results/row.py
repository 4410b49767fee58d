"""One result row per case, the role torch.utils.benchmark's Measurement plays: which case ran where, its
status and raw rounds, and every figure derived from them (spread, rates, % of peak), computed here only."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from bench.results.interval import CONFIDENCE, median_interval, rank_bounds

ENVIRONMENT = ("device_name", "torch", "cuda", "cudnn", "triton", "driver", "cpu", "cpu_threads", "cpu_capability",
               "python", "git_commit")
# results.csv's columns in order; anything else a row carries follows them.
COLUMNS = [
    "run_id", "case_id", "model", "phase", "precision", "batch", "attention", "size",
    "seqlen", "head_dim", "heads", "causal", "device", "device_name",
    "status", "reason", "median_s", "iqr_s", "min_s", "mean_s", "stddev_s", "rounds", "device_s", "host_overhead_s",
    "bound", "device_method", "samples_per_s", "tokens_per_s", "batch_tokens", "flops", "tflops", "pct_of_peak",
    "device_tflops", "device_pct_of_peak", "peak_mem_bytes",
    "torch", "cuda", "cudnn", "triton", "driver", "cpu", "cpu_threads", "python", "git_commit", "timestamp",
    "kind", "peak_tflops", "attention_share", "profile_error", "peak_mem_warmup_bytes", "tf32",
    "iterations", "warmup_rounds", "warmup_s", "cudnn_benchmark", "triton_configs",
    "instructions", "mode", "memory_format", "compile_s", "graph_breaks", "recompiles",
    "world_size", "backend", "strategy", "global_samples_per_s", "scaling_efficiency", "rank_medians_s",
    "communication_share", "cpu_steal_pct", "sm_clock_mhz", "throttle", "emulated", "ci_target", "case_s",
    "build_s", "timed_s", "flops_s", "peak_kernel", "cpu_capability", "ci_low_s", "ci_high_s", "ci_halfwidth",
    "converged", "flags",
]
NOISY_IQR = 0.10  # as torch.utils.benchmark warns: IQR above 10 % of the median
STOLEN_PCT = 5.0  # CPU time the hypervisor gave other guests while a case was timed, in % of all CPUs' time
# A GPU case is host-bound when the GPU's own time is under this share of its end-to-end step: the rest is
# the host's (launches, Python, syncs), so its time follows the CPU and a slower kernel can hide in it.
DEVICE_BOUND_SHARE = 0.8
# How a GPU's own time was measured (bench/run/devicetime.py); a CPU row's device_method is `host`.
DEVICE_METHODS = ("graph", "profiler")


# What a row without the mode and memory-format columns ran (results from before them; the attention
# micro-benchmark).
DEFAULT_AXES = {"mode": "eager", "memory_format": "contiguous"}


def timing_stats(rounds_s: Sequence[float]) -> dict[str, float]:
    """Median and its 95 % interval (bench/results/interval.py; ci_halfwidth is its half-width over the
    median), IQR (numpy's linear quartiles), min, mean, sample standard deviation and count of raw rounds,
    in seconds."""
    data = np.asarray(rounds_s, dtype=float)
    q1, median, q3 = np.percentile(data, [25, 50, 75])
    interval = median_interval(data)
    return {"median_s": float(median), "ci_low_s": interval.low, "ci_high_s": interval.high,
            "ci_halfwidth": interval.relative_halfwidth, "iqr_s": float(q3 - q1), "min_s": float(data.min()),
            "mean_s": float(data.mean()), "stddev_s": float(data.std(ddof=1)) if data.size > 1 else 0.0,
            "rounds": int(data.size)}


def converged(ci_halfwidth: float, rounds: int, ci_target: float | None) -> bool | None:
    """Whether the rounds met the stopping rule's target at the stated confidence (None without a target)."""
    if not _known(ci_target) or not ci_target:
        return None
    return bool(ci_halfwidth <= ci_target and rank_bounds(rounds)[1] >= CONFIDENCE)


def flags(figures: dict, emulated: bool | None = None, throttle: str | None = None,
          cpu_steal_pct: float | None = None) -> str:
    """What a reader must know before trusting a row's figures, '; '-separated: FLAGS' names that apply."""
    checks = {
        "emulated": bool(emulated),
        "host-bound": figures.get("bound") == "host",
        "noisy": figures.get("iqr_s", 0) > NOISY_IQR * figures.get("median_s", math.inf),
        "not converged": figures.get("converged") is False,
        "throttled": bool(throttle) and _known(throttle),
        "CPU stolen": _known(cpu_steal_pct) and cpu_steal_pct > STOLEN_PCT,
        "above peak": bool(figures.get("above_peak")),
    }
    return "; ".join(name for name, applies in checks.items() if applies)


def rates(median_s: float, batch: int, batch_tokens: int | None, flops: int | None,
          peak_tflops: float | None) -> dict[str, float | None]:
    """Throughput (samples/s, tokens/s) and achieved TFLOP/s at the median, and that as a percentage of
    the machine's calibrated peak."""
    return {"samples_per_s": batch / median_s,
            "tokens_per_s": batch_tokens / median_s if _known(batch_tokens) else None,
            **achieved(median_s, flops, peak_tflops)}


def achieved(seconds: float, flops: int | None, peak_tflops: float | None) -> dict[str, float | None]:
    """TFLOP/s of `flops` done in `seconds`, and that as a percentage of the calibrated peak; none above 100:
    a case faster than its ceiling says the calibration read low (above_peak), not that it beat the machine."""
    tflops = flops / seconds / 1e12 if _known(flops) else None
    if tflops is None or not _known(peak_tflops) or peak_tflops <= 0:
        return {"tflops": tflops, "pct_of_peak": None}
    pct = 100.0 * tflops / peak_tflops
    return {"tflops": tflops, "pct_of_peak": pct if pct <= 100 else None, **({"above_peak": True} if pct > 100 else {})}


def device_figures(median_s: float, device_s: float | None, flops: int | None,
                   peak_tflops: float | None, device: str) -> dict[str, float | str | None]:
    """What the GPU's own time per step says beside the end-to-end median: the host's overhead per step,
    host- or device-bound (DEVICE_BOUND_SHARE), TFLOP/s and % of peak. On a CPU the device time is the
    host time and the case is `cpu`-bound; without a device time, nothing."""
    if device == "cpu":
        device_s, bound = median_s, "cpu"
    elif not _known(device_s) or device_s <= 0:
        return {}
    else:
        bound = "device" if device_s >= DEVICE_BOUND_SHARE * median_s else "host"
    at_device = achieved(device_s, flops, peak_tflops)
    return {"device_s": device_s, "host_overhead_s": median_s - device_s, "bound": bound,
            "device_tflops": at_device["tflops"], "device_pct_of_peak": at_device["pct_of_peak"],
            **({"above_peak": True} if at_device.get("above_peak") else {})}


def derived(rounds_s: Sequence[float], device_rounds_s: Sequence[float] | None, batch: int, batch_tokens: int | None,
            flops: int | None, peak_tflops: float | None, device: str, ci_target: float | None = None,
            emulated: bool | None = None, throttle: str | None = None,
            cpu_steal_pct: float | None = None) -> dict[str, float | str | bool | None]:
    """Every figure a row derives from its raw rounds (and device rounds): spread and interval, whether it
    converged, rates, device figures and the flags; a report recomputes them the same way."""
    stats = timing_stats(rounds_s)
    device_s = float(np.median(device_rounds_s)) if device_rounds_s is not None and len(device_rounds_s) else None
    figures = {**stats, "converged": converged(stats["ci_halfwidth"], stats["rounds"], ci_target),
               **rates(stats["median_s"], batch, batch_tokens, flops, peak_tflops),
               **device_figures(stats["median_s"], device_s, flops, peak_tflops, device)}
    figures["flags"] = flags(figures, emulated, throttle, cpu_steal_pct)
    figures.pop("above_peak", None)
    return figures


def _known(value: float | None) -> bool:
    """Neither None nor NaN (an empty cell read back from a CSV)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Row:
    """A case's result. Identity and environment come first; `figures` derives the rest from the rounds."""

    case_id: str
    kind: str  # model (the model sweep) or attention (the attention micro-benchmark)
    phase: str
    precision: str
    batch: int
    device: str
    model: str | None = None
    attention: str | None = None
    size: str | None = None
    seqlen: int | None = None
    head_dim: int | None = None
    heads: int | None = None
    causal: bool | None = None
    environment: dict[str, str] = field(default_factory=dict)
    status: str = "ok"  # ok, skipped, oom or error
    reason: str = ""
    rounds_s: tuple[float, ...] = ()  # the raw timed rounds, seconds
    flops: int | None = None  # per round
    batch_tokens: int | None = None
    peak_mem_bytes: int | None = None  # over the timed rounds
    peak_mem_warmup_bytes: int | None = None  # over the build and the warm-up rounds
    tf32: bool | None = None  # whether fp32 matmuls and convolutions could use TF32
    iterations: int | None = None  # steps per timed round; rounds_s are per step (pytest-benchmark's way)
    warmup_rounds: int | None = None
    warmup_s: float | None = None
    device_rounds_s: tuple[float, ...] = ()  # the GPU's own seconds per step of each device round
    device_method: str | None = None  # how: graph (CUDA-graph replays), profiler (busy time), host (a CPU)
    cudnn_benchmark: bool | None = None  # cuDNN searched for its fastest algorithms
    triton_configs: str | None = None  # the Triton kernels' autotuned configs (--attn triton)
    peak_tflops: float | None = None  # the calibrated matmul peak for this precision
    peak_kernel: str | None = None  # the calibration's kernel and size that set that peak
    attention_share: float | None = None  # with --profile
    profile_error: str | None = None
    instructions: float | None = None  # callgrind's instructions per step (--instructions), instead of rounds
    mode: str | None = None  # eager, compile, ... (model cases)
    memory_format: str | None = None  # contiguous or channels_last (model cases)
    compile_s: float | None = None  # compiled modes: the first call (tracing, compiling, one step)
    graph_breaks: int | None = None  # compiled modes: dynamo's graph breaks in the first call's compile
    recompiles: int | None = None  # compiled modes: frames compiled again after the first call
    world_size: int | None = None  # python -m bench scale: processes (ranks) the step ran on
    backend: str | None = None  # nccl or gloo
    strategy: str | None = None  # ddp or fsdp
    global_samples_per_s: float | None = None  # all ranks together, at rank 0's median
    scaling_efficiency: float | None = None  # global samples/s over world_size times that with one process
    rank_medians_s: str | None = None  # every rank's median, ';'-separated, rank 0 first
    communication_share: float | None = None  # scale --profile: collectives' share of rank 0's profiled self time
    cpu_steal_pct: float | None = None  # % of all CPUs' time the hypervisor gave other guests while timed
    sm_clock_mhz: float | None = None  # GPU: the lower SM clock of the readings before and after the rounds
    throttle: str | None = None  # GPU: why its clocks were held down while timed ('; '-separated), "" if not
    emulated: bool | None = None  # the precision's dtype has no native arithmetic here (a CPU without bf16/fp16)
    ci_target: float | None = None  # the stopping rule's target half-width (share of the median); None: fixed rounds
    case_s: float | None = None  # the whole case: build, warm-up, timing, FLOPs, profiling, recording
    build_s: float | None = None  # building the model and batch (0 when shared with the case before)
    timed_s: float | None = None  # the timed rounds, device time's rounds included
    flops_s: float | None = None  # counting FLOPs (near 0 from the cache)

    @classmethod
    def for_case(cls, case, device: str, environment: dict[str, str]) -> Row:
        """The identity of a Case or AttentionCase, before anything is measured."""
        fields = {f.name for f in dataclasses.fields(cls)}
        axes = {k: v for k, v in dataclasses.asdict(case).items() if k in fields}
        return cls(case_id=case.id, kind=case.kind, device=device, environment=dict(environment), **axes)

    def but(self, **changes) -> Row:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @cached_property
    def figures(self) -> dict[str, float | None]:
        """Timing spread and rates, from the raw rounds; empty when nothing was timed."""
        if not self.rounds_s:
            return {}
        return derived(self.rounds_s, self.device_rounds_s, self.batch, self.batch_tokens, self.flops,
                       self.peak_tflops, self.device, self.ci_target, self.emulated, self.throttle, self.cpu_steal_pct)

    def record(self, run_id: str, timestamp: str) -> dict:
        """The row as results.csv holds it: COLUMNS in order, empty where a figure does not apply."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(self.environment, **self.figures, run_id=run_id, timestamp=timestamp)
        return {column: values.get(column) for column in COLUMNS}
