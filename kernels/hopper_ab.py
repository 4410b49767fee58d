"""A/B timing of the attention kernel's changes in one process: `python -m kernels.hopper_ab --out DIR`.

Each change is timed against the default kernel with `triton.testing.do_bench` (forward, and backward from a
kept graph), with cuDNN's SDPA beside them, 3 repeats, bf16, batch 4 x 16 heads, at the shapes the kernel's
goals name; then the host cost per call over 10,000 small calls, planned and unplanned, against SDPA. A
switch of `Variant` is timed with the configs the default chose for the shape (pinned: one compile each);
the spill-free configs the kernel had before are tuned among themselves. Rows reach DIR/ab.csv as they are
measured; a section the time budget cannot start is recorded as skipped. `--smoke` rehearses it all on tiny
shapes (on a CPU: Triton's interpreter, a wall-clock timer).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import triton

import kernels.flash_attention as fa
from bench.sweep.attention import ATTENTION

# The configs before they were chosen by time (each compiled without spills; kernels/README.md).
SPILL_FREE = {
    "fwd": {64: [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 4)],
            128: [(128, 64, 8, 3), (128, 64, 8, 4), (128, 32, 8, 3)]},
    "dkdv": {64: [(64, 128, 8, 3), (32, 128, 8, 3), (64, 64, 8, 3)], 128: [(16, 64, 8, 2), (16, 64, 8, 4)]},
    "dq": {64: [(128, 64, 8, 3), (64, 64, 8, 3), (128, 32, 8, 2)],
           128: [(64, 32, 4, 3), (64, 32, 4, 4), (64, 16, 4, 3)]},
    "single_pass": {64: [(64, 64, 8, 3), (32, 128, 8, 3), (32, 64, 4, 3)], 128: [(16, 64, 8, 2)]},
}
FIELDS = ["section", "shape", "side", "repeat", "phase", "ms", "tflops", "vs_cudnn", "host_us", "setup_s",
          "configs", "note"]


@dataclass(frozen=True)
class Shape:
    head_dim: int
    seqlen: int
    causal: bool
    batch: int = 4
    heads: int = 16

    @property
    def name(self) -> str:
        return f"d{self.head_dim} {'causal' if self.causal else 'full'} {self.seqlen}"

    def flops(self, phase: str) -> float:
        forward = 4 * self.batch * self.heads * self.seqlen ** 2 * self.head_dim / (2 if self.causal else 1)
        return forward * (2.5 if phase == "bwd" else 1.0)


SHAPES = [Shape(128, 4096, False), Shape(128, 16384, False), Shape(64, 1024, True), Shape(64, 4096, False)]
SMOKE_SHAPES = [Shape(64, 40, False, 1, 2), Shape(64, 33, True, 1, 2)]


@dataclass(frozen=True)
class Side:
    """One side of an A/B: a name, the variant's switches it flips, the backward, and how configs are had."""

    name: str
    changes: tuple[tuple[str, bool], ...] = ()
    backward: str = "split"
    configs: str = "tuned"  # tuned (by the autotuner, from TUNED), pinned (the default's), spill_free (tuned)


SIDES = [Side("default"), Side("descriptors", (("descriptors", True),), configs="pinned"),
         Side("spill_free_configs", configs="spill_free"), Side("single_pass", backward="single_pass"),
         Side("single_pass+descriptors", (("descriptors", True),), "single_pass", "pinned"),
         Side("no_heavy_first", (("heavy_first", False),), configs="pinned"),
         Side("half_diagonal", (("half_diagonal", True),), configs="pinned"),
         Side("no_fma_scores", (("fma_scores", False),), configs="pinned"),
         Side("warp_specialize", (("warp_specialize", True),), configs="pinned")]


def relevant(side: Side, shape: Shape) -> bool:
    """Switches that change nothing at this shape are not timed (heavy-first and the half diagonal change
    causal grids only; warp specialisation is compiled for the full mask only)."""
    flipped = dict(side.changes)
    causal_only = "heavy_first" in flipped or "half_diagonal" in flipped
    return not (causal_only and not shape.causal) and not ("warp_specialize" in flipped and shape.causal)


class Timer:
    """do_bench on a GPU (its mean over ~100 ms after a 25 ms warm-up, the L2 flushed between calls); on a
    CPU, the median of a few wall-clock calls."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, fn: Callable[[], object], grad_to_none: list | None = None) -> float:
        if self.device.type == "cuda":
            return triton.testing.do_bench(fn, grad_to_none=grad_to_none)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


@contextlib.contextmanager
def configs_for(side: Side, head_dim: int, chosen: dict[str, triton.Config]) -> Iterator[None]:
    """Each kernel's candidate configs for this side, restored after it (with the autotuner's memory)."""
    saved = {name: (kernel.configs, kernel.cache) for name, kernel in fa.AUTOTUNED.items()}
    saved_tuned = fa.TUNED
    try:
        if side.configs == "pinned":
            for name, kernel in fa.AUTOTUNED.items():
                if name in chosen:
                    kernel.configs = [chosen[name]]
        elif side.configs == "spill_free":
            fa.TUNED = SPILL_FREE
            for name, kernel in fa.AUTOTUNED.items():
                kernel.configs = [fa._config(*c) for c in SPILL_FREE[name][64 if head_dim <= 64 else 128]]
                kernel.configs.append(fa._config(*fa.FALLBACK[name]))
                if not torch.cuda.is_available():  # pruning asks a GPU for its shared memory: one config
                    kernel.configs = kernel.configs[:1]
                kernel.cache = {}
        fa.forget_configs()
        yield
    finally:
        fa.TUNED = saved_tuned
        for name, kernel in fa.AUTOTUNED.items():
            kernel.configs, kernel.cache = saved[name]
        fa.forget_configs()


def inputs(shape: Shape, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    size = (shape.batch, shape.heads, shape.seqlen, shape.head_dim)
    q, k, v, grad = (torch.randn(size, generator=gen).to(device, dtype) for _ in range(4))
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), grad


def time_phases(attn: Callable, shape: Shape, tensors: tuple, timer: Timer) -> dict[str, float]:
    """Forward, and backward alone (from a graph kept for every call), in ms."""
    q, k, v, grad = tensors
    with torch.no_grad():
        forward = timer(lambda: attn(q, k, v, causal=shape.causal))
    out = attn(q, k, v, causal=shape.causal)
    backward = timer(lambda: out.backward(grad, retain_graph=True), grad_to_none=[q, k, v])
    return {"fwd": forward, "bwd": backward}


class Report:
    """ab.csv, written a row at a time so that a run cut short keeps what it measured."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "ab.csv"
        self.file = self.path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, FIELDS)
        self.writer.writeheader()
        self.rows: list[dict] = []

    def add(self, **row: object) -> None:
        self.rows.append(row)
        self.writer.writerow(row)
        self.file.flush()
        print(json.dumps(row), flush=True)


def kernel_sections(shapes: list[Shape], repeats: int, timer: Timer, report: Report, deadline: float,
                    dtype: torch.dtype) -> None:
    """Every side at every shape, cuDNN first; repeats interleave the sides, so drift reaches all alike."""
    for shape in shapes:
        tensors = inputs(shape, timer.device, dtype)
        chosen: dict[str, triton.Config] = {}
        for repeat in range(repeats):
            try:
                # every ratio is to the suite's own sdpa_cudnn (SDPA's math backend on a CPU rehearsal)
                cudnn = ATTENTION["sdpa_cudnn" if timer.device.type == "cuda" else "sdpa_math"].fn
                reference = time_phases(cudnn, shape, tensors, timer)
            except Exception as err:  # no cuDNN kernel here: the sides are still timed, without ratios
                reference = {}
                report.add(section="kernel", shape=shape.name, side="cudnn", repeat=repeat, note=failure(err))
            for phase, ms in reference.items():
                report.add(section="kernel", shape=shape.name, side="cudnn", repeat=repeat, phase=phase, ms=ms,
                           tflops=shape.flops(phase) / ms / 1e9, vs_cudnn=1.0)
            for side in SIDES:
                if not relevant(side, shape):
                    continue
                if time.monotonic() > deadline:
                    report.add(section="kernel", shape=shape.name, side=side.name, repeat=repeat,
                               note="skipped: past the time budget")
                    continue
                try:
                    setup, times, configs = time_side(side, shape, tensors, timer, chosen)
                except Exception as err:  # a side that fails (out of memory, no kernel) is recorded; the rest run
                    report.add(section="kernel", shape=shape.name, side=side.name, repeat=repeat, note=failure(err))
                    continue
                for phase, ms in times.items():
                    report.add(section="kernel", shape=shape.name, side=side.name, repeat=repeat, phase=phase,
                               ms=ms, tflops=shape.flops(phase) / ms / 1e9,
                               vs_cudnn=reference[phase] / ms if reference else None,
                               setup_s=round(setup, 2), configs="; ".join(f"{k}: {v}" for k, v in configs.items()))
        del tensors


def failure(err: Exception) -> str:
    return f"error: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"


def time_side(side: Side, shape: Shape, tensors: tuple, timer: Timer,
              chosen: dict[str, triton.Config]) -> tuple[float, dict[str, float], dict[str, str]]:
    """Seconds the first call took (autotuning and compiling), the phases' ms, and the configs run."""
    with configs_for(side, shape.head_dim, chosen), fa.variant(**dict(side.changes)):
        def attn(q, k, v, *, causal):
            return fa.flash_attention(q, k, v, causal=causal, backward=side.backward)

        start = time.monotonic()
        attn(*tensors[:3], causal=shape.causal).backward(tensors[3])
        timer.sync()
        setup = time.monotonic() - start
        times = time_phases(attn, shape, tensors, timer)
        configs = fa.last_configs()
        if side.configs == "tuned":  # what the pinned sides run
            chosen.update({name: fa.AUTOTUNED[name].best_config for name in configs})
    return setup, times, configs


def host_section(shape: Shape, calls: int, timer: Timer, report: Report, dtype: torch.dtype) -> None:
    """Host cost per call: `calls` back-to-back calls of a shape too small to keep the GPU busy, then one sync."""
    q, k, v, grad = inputs(shape, timer.device, dtype)
    sides = {"sdpa": ATTENTION["sdpa"].fn, "triton": ATTENTION["triton"].fn, "triton_unplanned": ATTENTION["triton"].fn}
    for phase in ("fwd", "fwdbwd"):
        for name, attn in sides.items():
            with fa.variant(plans=name != "triton_unplanned"):
                def call(attn=attn, phase=phase):
                    if phase == "fwd":
                        with torch.no_grad():
                            attn(q, k, v, causal=shape.causal)
                    else:
                        attn(q, k, v, causal=shape.causal).backward(grad)

                call()
                timer.sync()
                start = time.perf_counter()
                for _ in range(calls):
                    call()
                timer.sync()
                per_call = (time.perf_counter() - start) / calls * 1e6
            report.add(section="host", shape=shape.name, side=name, phase=phase, host_us=per_call,
                       note=f"{calls} calls")


def summary(rows: list[dict], device: str) -> str:
    """Median over repeats per shape, side and phase, as a Markdown table, then the host costs."""
    timed: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["section"] == "kernel" and row.get("ms"):
            timed.setdefault((row["shape"], row["side"], row["phase"]), []).append(row)
    lines = [f"# Attention kernel A/B on {device}", "",
             "| shape | side | phase | ms (median) | TFLOP/s | vs cuDNN | repeats | setup s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for (shape, side, phase), group in timed.items():
        ms = statistics.median(r["ms"] for r in group)
        ratios = [r["vs_cudnn"] for r in group if r.get("vs_cudnn")]
        ratio = f"{statistics.median(ratios):.2f}" if ratios else ""
        lines.append(f"| {shape} | {side} | {phase} | {ms:.3f} | {statistics.median(r['tflops'] for r in group):.0f} "
                     f"| {ratio} | {len(group)} | {group[0].get('setup_s', '')} |")
    untimed = [f"- {r['shape']}, {r['side']}, repeat {r['repeat']}: {r['note']}" for r in rows
               if r["section"] == "kernel" and not r.get("ms")]
    lines += ["", "Not timed:", *untimed] if untimed else []
    lines += ["", "| host loop | side | phase | us per call |", "|---|---|---|---:|"]
    lines += [f"| {r['shape']} | {r['side']} | {r['phase']} | {r['host_us']:.1f} |" for r in rows
              if r["section"] == "host"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for ab.csv, ab.md and environment.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10_000, help="calls in the host loop")
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="seconds after which kernel sides are skipped (the host loop still runs)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 20 host calls: a rehearsal")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not fa._interpreting():
        print("error: no CUDA GPU here; set TRITON_INTERPRET=1 to rehearse on the CPU with --smoke", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    environment = {"device": name, "torch": torch.__version__, "triton": triton.__version__,
                   "cuda": torch.version.cuda, "python": platform.python_version(), "date": time.strftime("%F %T")}
    report = Report(args.out)
    (args.out / "environment.json").write_text(json.dumps(environment, indent=1) + "\n")
    deadline = time.monotonic() + args.budget_s
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    timer = Timer(device)
    kernel_sections(SMOKE_SHAPES if args.smoke else SHAPES, args.repeats, timer, report, deadline, dtype)
    host_shape = SMOKE_SHAPES[0] if args.smoke else Shape(64, 128, False, 1, 4)
    host_section(host_shape, min(args.calls, 20) if args.smoke else args.calls, timer, report, dtype)
    (args.out / "ab.md").write_text(summary(report.rows, name))
    print(summary(report.rows, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
