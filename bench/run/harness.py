"""Turns a Case into a result Row: build the model and a synthetic batch (or reuse the last case's), warm up
until the step is warm, time rounds with pytest-benchmark (the GPU synchronised inside each round) until the
median is precise enough or the case's time is up, count FLOPs (cached on disk), read peak memory."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import gc
import importlib
import math
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench import MAX_TIME_S, MIN_ROUNDS
from bench.errors import one_line
from bench.machine import telemetry
from bench.machine.environment import fingerprint
from bench.results.row import Row
from bench.run import devicetime, instructions, stopping
from bench.run.flopcache import FlopCache
from bench.run.flopcache import key as flop_key
from bench.run.flops import FORMULAS
from bench.sweep import attention
from bench.sweep.attention import ATTENTION, TRITON_BACKWARDS, attention_flops
from bench.sweep.cases import AttentionCase, Case
from bench.sweep.models import MODELS, Batch
from bench.sweep.models.spec import ModelSpec
from bench.sweep.modes import MEMORY_FORMATS, MODES, compile_counters
from bench.sweep.precision import PRECISIONS, Precision, emulated
from bench.verdicts import turns

Step = Callable[[], None]
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", lambda pad: 0)  # glibc only


# A timed round repeats the step until it lasts this long, so the ~20 us per round that launch latency, the
# final synchronisation and the timer add (H200, bf16 matmuls of 0.09 ms: +2.1 % against CUDA events with
# rounds of 1 ms) stay near 1 % of a round.
MIN_ROUND_S = 2e-3
WARMUP_S = {"cuda": 0.5, "cpu": 0.0}  # a GPU warms up this long at least, so clocks and caches settle
DEVICE_ROUNDS = 20  # rounds of device time at most: it spreads far less than the host's


@dataclass(frozen=True)
class Settings:
    """How to time: on which device, to what precision, for how long at most, after how much warm-up."""

    device: torch.device
    max_time: float = MAX_TIME_S  # seconds of timed rounds at most (all of them with target 0)
    min_rounds: int = MIN_ROUNDS
    warmup_rounds: int = 1  # warm-up steps at least; then until two agree (stopping.warm), within the cap
    warmup_s: float = 0.0  # and at least this many seconds of warm-up (WARMUP_S by device in a sweep)
    max_rounds: int = 10_000
    instructions: bool = False  # count callgrind's instructions per step instead of timing rounds
    target: float = 0.0  # stop once the median's interval is within this share (stopping.TARGETS); 0: time to the cap
    min_time: float = 0.0  # seconds of timed rounds at least before the target may stop them

    def stop_rule(self) -> stopping.StopRule:
        return stopping.StopRule(self.target, self.min_rounds, self.max_rounds, self.min_time, self.max_time)


class TimedRound:
    """The target pytest-benchmark calls `iterations` times a round: on a GPU the last call of a round waits
    for it, so a round's host time covers its work."""

    def __init__(self, step: Step, iterations: int, device: torch.device):
        self.step, self.iterations, self.device = step, iterations, device
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        self.step()
        if self.calls % self.iterations == 0 and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def make_step(phase: str, model: nn.Module, batch: Batch, spec: ModelSpec, precision: Precision,
              device: torch.device) -> Step:
    """One round of work: `fwd` in inference mode; `fwdbwd` forward, loss, backward; `step` the seed's
    training step (AdamW, fused on CUDA; GradScaler under fp16; gradient clipping at norm 1). Every round
    runs under the precision's TF32 switches."""
    work = _phase_step(phase, model, batch, spec, precision, device)

    def step() -> None:
        with precision.math_mode():
            work()

    return step


def _phase_step(phase: str, model: nn.Module, batch: Batch, spec: ModelSpec, precision: Precision,
                device: torch.device) -> Step:
    scaler = precision.scaler(device)

    def forward_loss() -> torch.Tensor:
        with precision.autocast(device):
            return spec.loss(model(*batch.inputs), batch.target)

    if phase == "fwd":
        model.eval()

        def fwd() -> None:
            with torch.inference_mode(), precision.autocast(device):
                model(*batch.inputs)

        return fwd

    model.train()
    if phase == "fwdbwd":

        def fwdbwd() -> None:
            model.zero_grad(set_to_none=True)
            scaler.scale(forward_loss()).backward()

        return fwdbwd

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=device.type == "cuda")

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(forward_loss()).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        scaler.step(optimizer)
        scaler.update()

    return train_step


def count_flops(step: Step, model: nn.Module, analytic: dict[str, int] | None = None,
                backward: bool = False) -> int:
    """FLOPs of one round, by FlopCounterMode with bench.run.flops' formulas. Attention is counted as its
    matmuls (the same for every implementation; half the square under a causal mask); submodules named
    in `analytic` (path -> forward FLOPs: the RNNs, which the counter sees on some devices and not
    others) are replaced by that count, tripled when there is a backward."""
    with attention.override("naive") as calls, FlopCounterMode(display=False, custom_mapping=FORMULAS) as counter:
        step()
    total = counter.get_total_flops()
    for batch, heads, seqlen_q, seqlen_k, head_dim, causal in calls:  # naive attention computes the full
        if causal:  # square; a causal mask counts half of it, as in the attention micro-benchmark
            full = attention_flops(batch, heads, seqlen_q, seqlen_k, head_dim, causal=False)
            total -= full // 2 * (3 if backward else 1)
    seen = counter.get_flop_counts()
    for path, forward in (analytic or {}).items():
        total -= sum(seen.get(f"{type(model).__name__}.{path}", {}).values())
        total += forward * (3 if backward else 1)  # a backward costs about twice the forward
    return total


class PeakMemory:
    """Peak memory over a stretch of work: the CUDA allocator's peak on GPU, the rise of the process's
    peak resident set (VmHWM, reset through /proc/self/clear_refs) on Linux CPUs, None elsewhere."""

    def __init__(self, device: torch.device):
        self.device = device
        self.baseline: int | None = None

    def start(self) -> None:
        """Measure from here: start a new peak and take the baseline (CPU) it rises from."""
        self.reset_peak(new_baseline=True)

    def reset_peak(self, new_baseline: bool = False) -> None:
        """Start a new peak; over the same baseline unless asked (the timed rounds' steady state after
        warm-up keeps the build's)."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _MALLOC_TRIM(0)  # hand freed heap back to the OS, or earlier cases' memory hides this one's
        try:
            Path("/proc/self/clear_refs").write_text("5")
            if new_baseline:
                self.baseline = self._status_bytes("VmRSS")
        except OSError:  # not Linux: no resettable peak to read
            self.baseline = None

    @classmethod
    def resident_bytes(cls) -> int | None:
        """The process's resident set now (Linux), None elsewhere."""
        try:
            return cls._status_bytes("VmRSS")
        except OSError:
            return None

    def peak_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return None if self.baseline is None else self._status_bytes("VmHWM") - self.baseline

    @staticmethod
    def _status_bytes(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise OSError(f"/proc/self/status has no {field}")


def is_oom(err: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU allocator raises a RuntimeError saying it cannot allocate."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


@dataclass(frozen=True)
class Workload:
    """What the timer needs from a case: one round of work, its FLOPs, and the tokens a round processes."""

    step: Step
    flops: Callable[[], int]  # called after the timed rounds (counting may use more memory)
    tokens: int | None = None
    compiled: bool = False  # by torch.compile: its first call compiles, and dynamo's counters tell how
    capture_refused: str = ""  # why device time must not try a CUDA graph of the step (devicetime.measure_device)
    memory_baseline: int | None = None  # a shared build's: the resident set before it was built (PeakMemory)


@dataclass
class Built:
    """An eager model and its synthetic batch, as the builds of cases that differ only in phase and
    precision share them."""

    key: tuple
    model: nn.Module
    batch: Batch
    memory_baseline: int | None


class Builds:
    """The last eager model built, handed to the next case that differs from it only in phase or precision
    (the sweep orders those innermost): fwd and fwdbwd, fp32 and AMP, build a model and its batch once.
    Autocast leaves the fp32 weights as they are; a `step` case does update them, which changes no timing."""

    def __init__(self) -> None:
        self.last: Built | None = None

    @staticmethod
    def key(case: Case | AttentionCase, device: torch.device) -> tuple | None:
        """What a shared build is for; None for a case that builds its own (compiled, or no model)."""
        if not isinstance(case, Case) or MODES[case.mode].compiled:
            return None
        return case.model, case.size, case.batch, case.attention, case.memory_format, str(device)

    def prepare(self, case: Case | AttentionCase, device: torch.device) -> None:
        """Before a case's memory is measured: the last build goes unless this case will use it, so no case's
        peak holds another's model."""
        if self.last is not None and self.last.key != self.key(case, device):
            self.last = None

    def get(self, case: Case, device: torch.device, build: Callable[[], tuple[nn.Module, Batch]]) -> Built:
        """The shared build for this case, built now (after prepare(), with nothing else held) if missing."""
        self.prepare(case, device)
        if self.last is None:
            baseline = PeakMemory.resident_bytes() if device.type == "cpu" else None
            self.last = Built(self.key(case, device), *build(), baseline)
        return self.last

    def release(self, failed: bool = False) -> None:
        """After a case: its gradients go (the next case starts without them); after a failure the whole build,
        whose state is unknown."""
        if failed:
            self.last = None
        elif self.last is not None:
            self.last.model.zero_grad(set_to_none=True)


def model_workload(case: Case, device: torch.device, builds: Builds | None = None,
                   flop_cache: FlopCache | None = None) -> Workload:
    """A model from the registry with a synthetic batch, in the case's memory format, run in its phase,
    precision and mode; eager models come from `builds` when given. FLOPs are the eager model's, the same
    for every precision and mode (tests/test_flopcache.py checks autocast against fp32), from `flop_cache`
    when it has them."""
    spec = MODELS[case.model]
    layout = MEMORY_FORMATS[case.memory_format]

    def build() -> tuple[nn.Module, Batch]:
        torch.manual_seed(0)
        model = spec.build(case.size, case.attention).to(device, memory_format=layout)
        batch = spec.batch(case.size, case.batch, device, torch.Generator().manual_seed(0))
        return model, dataclasses.replace(batch, inputs=tuple(x.contiguous(memory_format=layout) if x.dim() == 4
                                                              else x for x in batch.inputs))

    mode, precision = MODES[case.mode], PRECISIONS[case.precision]
    shared = builds.get(case, device, build) if builds is not None and Builds.key(case, device) else None
    model, batch = (shared.model, shared.batch) if shared else build()
    if mode.compiled:
        torch._dynamo.reset()  # each case compiles afresh: its compile time and recompiles are its own
    step = make_step(case.phase, mode.apply(model), batch, spec, precision, device)

    def count() -> int:  # in fp32 where the case's precision is emulated (seconds a step), else in its own
        counted = PRECISIONS["fp32"] if emulated(precision.compute_dtype, device) else precision
        eager = make_step(case.phase, model, batch, spec, counted, device)
        analytic = spec.analytic_flops(model, batch) if spec.analytic_flops else None
        return count_flops(eager, model, analytic, backward=case.phase != "fwd")

    def flops() -> int:
        if flop_cache is None:
            return count()
        fields = flop_key(case)
        cached = flop_cache.get(fields)
        if cached is None:
            cached = count()
            flop_cache.put(fields, cached)
        return cached

    refused = ("an optimizer step: AdamW is not capturable (capturable=False), and a failed capture would leave "
               "GradScaler half-way" if case.phase == "step" else
               f"torch.compile's mode {mode.compile_mode} replays CUDA graphs of its own" if mode.cudagraphs else "")
    return Workload(step, flops, batch.tokens, compiled=mode.compiled, capture_refused=refused,
                    memory_baseline=shared.memory_baseline if shared else None)


def attention_workload(case: AttentionCase, device: torch.device) -> Workload:
    """One attention call on random q, k, v (and, for fwdbwd, its backward from a random output grad)."""
    gen = torch.Generator().manual_seed(0)
    shape = (case.batch, case.heads, case.seqlen, case.head_dim)
    q, k, v = (torch.randn(shape, generator=gen).to(device, case.torch_dtype) for _ in range(3))
    attn = ATTENTION[case.attention].fn
    if case.phase == "fwd":

        def step() -> None:
            with torch.inference_mode():
                attn(q, k, v, causal=case.causal)

    else:
        leaves = [t.requires_grad_() for t in (q, k, v)]
        grad_out = torch.randn(shape, generator=gen).to(device, case.torch_dtype)

        def step() -> None:
            for t in leaves:
                t.grad = None
            attn(q, k, v, causal=case.causal).backward(grad_out)

    def flops() -> int:
        return attention_flops(case.batch, case.heads, case.seqlen, case.seqlen, case.head_dim,
                               causal=case.causal, with_backward=case.phase == "fwdbwd")

    return Workload(step, flops, case.batch * case.seqlen)


WORKLOADS: dict[type, Callable[..., Workload]] = {Case: model_workload, AttentionCase: attention_workload}
SLOWDOWN_SIZING_STEPS = 5


def slowed(work: Workload, fraction: float, device: torch.device) -> Step:
    """The workload's step followed by idle device work lasting `fraction` of the step's device time (a
    sleep kernel on a GPU, a busy wait on a CPU): a known slowdown, for validate's trust stage to count how
    often the gate finds it. Sized after warm-up, as the step is timed."""
    step = work.step
    if device.type == "cuda":
        sized = devicetime.measure_device(step, device, 1, SLOWDOWN_SIZING_STEPS, work.capture_refused)
        if not sized.rounds_s:
            raise RuntimeError(f"the slowdown could not be sized: no device time ({sized.note})")
        cycles = int(fraction * float(np.median(sized.rounds_s)) * devicetime.sleep_cycles_per_s(device))

        def extra() -> None:
            torch.cuda._sleep(cycles)
    else:
        times = []
        for _ in range(SLOWDOWN_SIZING_STEPS):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        extra_s = fraction * float(np.median(times))

        def extra() -> None:
            end = time.perf_counter() + extra_s
            while time.perf_counter() < end:
                pass

    def slowed_step() -> None:
        step()
        extra()

    return slowed_step


def run_case(case: Case | AttentionCase, benchmark, settings: Settings, builds: Builds | None = None,
             flop_cache: FlopCache | None = None) -> Row:
    """Measure one case (a model case from `builds` and `flop_cache` when given); the row's status is ok,
    skipped, oom or error (with the reason)."""
    device = settings.device
    row = Row.for_case(case, device.type, fingerprint(device.type))
    dtype = PRECISIONS[case.precision].compute_dtype if isinstance(case, Case) else case.torch_dtype
    row = row.but(tf32=case.precision in PRECISIONS and PRECISIONS[case.precision].tf32,
                  cudnn_benchmark=device.type == "cuda",  # measure() searches on GPUs only
                  emulated=emulated(dtype, device) is not None,
                  ci_target=settings.target or None)
    if builds is not None:
        builds.prepare(case, device)
    reason = case.unavailable(device)
    if reason is not None:
        return row.but(status="skipped", reason=reason)
    triton = importlib.import_module("kernels.flash_attention") if case.attention in TRITON_BACKWARDS else None
    failed = True
    try:
        if triton:
            triton.forget_configs()
        build = (functools.partial(model_workload, case, device, builds, flop_cache) if isinstance(case, Case)
                 else functools.partial(attention_workload, case, device))
        measured = measure(build, benchmark, settings, case.id, case.slowdown)
        failed = False
        row = row.but(**dataclasses.asdict(measured))
        if triton:  # the autotuner's choice, which can differ between runs of the same code
            chosen = triton.last_configs().items()
            row = row.but(triton_configs="; ".join(f"{kernel}: {config}" for kernel, config in chosen))
        return row
    except Exception as err:  # an OOM or a broken case is recorded, and the sweep goes on
        status = "oom" if is_oom(err) else "error"
        if status == "error":
            traceback.print_exc()
        return row.but(status=status, reason=one_line(err))
    finally:
        if builds is not None:
            builds.release(failed)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def round_plan(warmup_steps_s: Sequence[float], settings: Settings) -> tuple[int, int]:
    """Steps per round (a round lasts MIN_ROUND_S at least) and rounds (settings.max_time of them, within
    min_rounds and max_rounds), sized from the median warm-up step after the first, which pays for compiling
    and autotuning: one slow or fast warm-up step (a host speed step, a neighbour) does not size the case."""
    step_s = float(np.median(warmup_steps_s[1:] or warmup_steps_s))
    iterations = max(1, math.ceil(MIN_ROUND_S / step_s))
    rounds = math.ceil(settings.max_time / (step_s * iterations))
    return iterations, min(settings.max_rounds, max(settings.min_rounds, rounds))


@dataclass(frozen=True)
class Measured:
    """What measure() found: a Row's measured fields, under the Row's own names and defaults, so a row takes
    them whole (`row.but(**dataclasses.asdict(measured))`); an unknown name fails where it is made."""

    status: str = "ok"
    reason: str = ""
    flops: int | None = None
    batch_tokens: int | None = None
    rounds_s: tuple[float, ...] = ()
    iterations: int | None = None
    warmup_rounds: int | None = None
    warmup_s: float | None = None
    build_s: float | None = None
    timed_s: float | None = None
    flops_s: float | None = None
    peak_mem_bytes: int | None = None
    peak_mem_warmup_bytes: int | None = None
    cpu_steal_pct: float | None = None
    device_rounds_s: tuple[float, ...] = ()
    device_method: str | None = None
    sm_clock_mhz: float | None = None
    throttle: str | None = None
    instructions: float | None = None
    compile_s: float | None = None
    graph_breaks: int | None = None
    recompiles: int | None = None


def measure(build: Callable[[], Workload], benchmark, settings: Settings, case_id: str = "",
            slowdown: float = 0.0) -> Measured:
    """Build the workload, warm it up, time it with the benchmark fixture (host time, end to end) until the
    stopping rule says enough, time its device time apart (bench/run/devicetime.py), then count its FLOPs:
    the measured fields of a Row, with the seconds each part took. Peak memory: of the timed rounds, and of
    the build and warm-up. Under `ab`, both sides time a case in the same iterations and rounds (the session
    sets no target there) and hand the turn over between rounds (bench/verdicts/turns.py). `slowdown`: validate's trust
    stage's known slowdown (`slowed`), added after warm-up."""
    device = settings.device
    on_gpu = device.type == "cuda"
    memory = PeakMemory(device)
    memory.start()  # before the build: the peak covers weights, inputs, activations and grads
    build_start = time.perf_counter()
    work = build()
    build_s = time.perf_counter() - build_start
    if work.memory_baseline is not None:  # a shared build: its weights count as this case's too
        memory.baseline = work.memory_baseline

    def warmup_round() -> float:
        start = time.perf_counter()
        work.step()
        if on_gpu:
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    with cudnn_benchmark(on_gpu):
        counters = compile_counters if work.compiled else dict  # dynamo loads for compiled cases only
        before = counters()
        after_first: list[dict] = []  # a compiled model compiles in the first call: its counters then
        warmup_steps_s, warmup_s = _warm_up(warmup_round, settings, lambda: after_first.append(counters()))
        first_call_s, after_first = warmup_steps_s[0], after_first[0]
        if slowdown:
            work = dataclasses.replace(work, step=slowed(work, slowdown, device))
        warmup_peak = memory.peak_bytes()
        memory.reset_peak()  # the timed rounds' peak leaves out warm-up's scratch (cuDNN's search, autotuning)
        iterations, rounds = turns.agree(case_id, *round_plan(warmup_steps_s, settings))
        stopper = stopping.Stopper(settings.stop_rule()) if settings.target > 0 else None  # else the planned rounds
        timed: dict = {}
        timed_start = time.perf_counter()
        with _gc_paused():
            if settings.instructions:  # counted under callgrind instead of timed: no rounds
                timed["instructions"] = instructions.count(work.step)
            else:
                read_clocks = functools.partial(telemetry.gpu_clocks, _nvml_index(device)) if on_gpu else None
                timed, clocks = _host_rounds(work.step, benchmark, device, iterations,
                                             settings.max_rounds if stopper else rounds, case_id, warmup_round,
                                             read_clocks, stopper)
            peak_mem = memory.peak_bytes()  # of the timed rounds, before device time's capture and profiling
            if on_gpu and timed.get("rounds_s"):
                timed.update(_device_time(work, device, iterations, len(timed["rounds_s"])))
                clocks.append(read_clocks())  # after the device rounds too
            if on_gpu and not settings.instructions:
                timed.update(telemetry.throttling(*clocks))
        timed_s = time.perf_counter() - timed_start
    after = counters()
    compiling = {"compile_s": first_call_s, "graph_breaks": after_first["graph_breaks"] - before["graph_breaks"],
                 "recompiles": after["frames"] - after_first["frames"]} if work.compiled else {}
    notes = [timed.pop("device_note", "")]
    flops_start = time.perf_counter()
    try:
        flops = work.flops()
    except Exception as err:  # counting uses naive attention, which may not fit where the timed case did
        if not is_oom(err):
            raise
        flops = None
        notes.insert(0, "FLOPs not counted: out of memory while counting")
    fields = {"reason": "; ".join(filter(None, notes)), "flops": flops, "batch_tokens": work.tokens,
              "warmup_rounds": len(warmup_steps_s), "build_s": build_s, "timed_s": timed_s,
              "flops_s": time.perf_counter() - flops_start, **timed, **compiling}
    if settings.instructions:
        return Measured(**fields)
    return Measured(**fields, peak_mem_bytes=peak_mem, peak_mem_warmup_bytes=warmup_peak, iterations=iterations,
                    warmup_s=warmup_s)


def _warm_up(warmup_round: Callable[[], float], settings: Settings,
             after_first: Callable[[], object]) -> tuple[list[float], float]:
    """Warm-up steps until the step is warm (stopping.warm: two successive steps agree) after
    settings.warmup_rounds of them and settings.warmup_s seconds, or until it has taken the case's timing cap
    (two steps at least) or MAX_WARMUP_STEPS: each step's seconds, and the whole warm-up's. `after_first` is
    called once, after the first step."""
    start, steps_s = time.perf_counter(), []
    while True:
        steps_s.append(warmup_round())
        if len(steps_s) == 1:
            after_first()
        elapsed = time.perf_counter() - start
        if len(steps_s) < settings.warmup_rounds or elapsed < settings.warmup_s:
            continue
        capped = len(steps_s) >= stopping.MAX_WARMUP_STEPS or (len(steps_s) >= 2 and elapsed >= settings.max_time)
        if capped or stopping.warm(steps_s):
            return steps_s, elapsed


class _Enough(Exception):
    """Raised after a round by the benchmark's teardown when the stopping rule is met: pytest-benchmark's
    pedantic mode times a fixed number of rounds and has no other way out."""


def _host_rounds(step: Step, benchmark, device: torch.device, iterations: int, rounds: int, case_id: str,
                 rewarm: Step, read_clocks: Callable[[], tuple | None] | None,
                 stopper: stopping.Stopper | None = None) -> tuple[dict, list]:
    """Host rounds by pytest-benchmark (up to `rounds`, fewer when `stopper` says so; handing the turn over
    between rounds under `ab`) and the CPU time stolen while they ran; on a GPU, its clocks (`read_clocks`)
    read before and after them. On a CPU the device time is the host time."""
    on_gpu = device.type == "cuda"
    handover = turns.handover(case_id, rewarm) if turns.active() else None
    start = time.perf_counter()

    def after_round() -> None:
        if handover:
            handover()
        if stopper and stopper.done(benchmark.stats.stats.data, time.perf_counter() - start):
            raise _Enough

    ticks = telemetry.cpu_ticks()
    clocks = [read_clocks()] if read_clocks else []
    try:
        benchmark.pedantic(TimedRound(step, iterations, device), rounds=rounds, iterations=iterations,
                           warmup_rounds=0, **({"teardown": after_round} if handover or stopper else {}))
    except _Enough:
        benchmark.has_error = False  # pedantic marks any exception an error; this one is the planned end
    stolen = telemetry.steal_pct(ticks, telemetry.cpu_ticks())
    if read_clocks:
        clocks.append(read_clocks())
    # --benchmark-disable runs the round once, untimed: no rounds. pytest-benchmark's data are per iteration.
    rounds_s = tuple(benchmark.stats.stats.data) if benchmark.stats is not None else ()
    return {"cpu_steal_pct": stolen, "rounds_s": rounds_s, **({} if on_gpu else {"device_method": "host"})}, clocks


def _device_time(work: Workload, device: torch.device, iterations: int, rounds: int) -> dict:
    """The GPU's own time per step (devicetime.measure_device), over up to DEVICE_ROUNDS rounds."""
    timed = devicetime.measure_device(work.step, device, iterations, min(rounds, DEVICE_ROUNDS), work.capture_refused)
    return {"device_rounds_s": timed.rounds_s, "device_method": timed.method, "device_note": timed.note}


def _nvml_index(device: torch.device) -> int:
    """NVML's index of a CUDA device (they differ under CUDA_VISIBLE_DEVICES)."""
    try:
        return torch.cuda._get_nvml_device_index(device)
    except Exception:  # torch's private mapping failed (UUIDs in the variable and no NVML): CUDA's own index
        return device.index or 0


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No garbage collection during the timed rounds (a collection would land in one round)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """Let cuDNN pick its fastest algorithms during warm-up (and keep them for the timed rounds and the
    profiled pass), then restore the global setting."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled or saved
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved
