"""A machine's first run in one command (`python -m bench validate --out DIR`): the GPU tests, the timers
against each other, the Triton kernel against every SDPA backend, the GPU preset's sweep with its report,
an A/A gate and two profiled cases. Each stage is time-boxed and logged; one that fails is recorded and
the next one runs, so a rare GPU session is never lost to one broken stage."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import torch

from bench import children
from bench.errors import one_line
from bench.results.row import timing_stats
from bench.results.rundir import RunDir, RunError, load_results, sweep_options
from bench.run.harness import WARMUP_S, Settings, Workload, is_oom, measure
from bench.sweep.attention import ATTENTION, BACKWARD_FLOPS, TRITON_BACKWARDS, attention_flops, naive
from bench.sweep.cases import SLOWDOWN_ENV, AttentionCase, Case, slowed_suffix
from bench.verdicts.ab import DEFAULT_ALPHA, DEFAULT_PAIRS, DEFAULT_THRESHOLD, ABRun, judge_all, judged_values

ROOT = Path(__file__).resolve().parents[2]  # the checkout whose tests/ and bench/ a validation runs
STAGES = ("environment", "tests", "timers", "kernel", "sweep", "gate", "profile", "trust")
# Seconds each stage may take; a sweep past its budget is interrupted and keeps the cases it finished.
BUDGET_S = {
    "quick": {"environment": 30, "tests": 120, "timers": 60, "kernel": 120, "sweep": 180, "gate": 180,
              "profile": 120, "trust": 300},
    "full": {"environment": 20, "tests": 240, "timers": 45, "kernel": 120, "sweep": 300, "gate": 110, "profile": 40,
             "trust": 480},  # trust alone fits one 540 s call
}
# Square matmuls of about 0.1 ms, 5 ms and 100 ms (bf16 on an H100; fp32 on a 2-core CPU).
TIMER_SIZES = {"cuda": (3072, 12288, 32768), "cpu": (128, 512, 1536)}
# The kernel table follows FlashAttention's benchmarks: batch * seqlen = tokens, heads * head_dim = hidden.
# Three sequence lengths fit the budget on an H200 (five took 190 s, compilation included).
KERNEL_SHAPES = {
    "quick": {"seqlens": (128, 256), "head_dims": (64,), "tokens": 512, "hidden": 256},
    "full": {"seqlens": (1024, 4096, 16384), "head_dims": (64, 128), "tokens": 16384, "hidden": 2048},
}
KERNEL_IMPLS = (*TRITON_BACKWARDS, "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_math")
# pytest arguments of the subprocess stages, by size: the GPU tests, the sweep, one A/A run, the profiled cases.
TEST_ARGS = ["-m", "gpu", "tests/", "-q", "-p", "no:cacheprovider", "-rfs"]
SWEEP_ARGS = {
    "quick": ["bench/test_models.py", "--models", "cnn,encoder", "--precisions", "fp32", "--batch-sizes", "2",
              "--attn", "sdpa", "--benchmark-max-time", "0.05", "--benchmark-min-rounds", "3"],
    "full": ["bench", "--preset", "gpu"],
}
AA_ARGS = {
    "quick": ["bench/test_attention.py", "--attn", "sdpa", "--phases", "fwd", "-k", "d64",
              "--benchmark-max-time", "0.05", "--benchmark-min-rounds", "5"],
    "full": ["bench/test_attention.py", "--attn", "sdpa", "-k", "s1024 or s2048",
             "--benchmark-max-time", "0.2", "--benchmark-min-rounds", "10"],
}
PROFILE_ARGS = {
    "quick": ["bench/test_models.py", "--models", "cnn,encoder", "--phases", "fwdbwd", "--precisions", "fp32",
              "--batch-sizes", "2", "--attn", "sdpa", "--profile", "--benchmark-max-time", "0.05"],
    "full": ["bench/test_models.py", "--models", "resnet50,encoder", "--phases", "fwdbwd", "--precisions",
             "amp_bf16", "--batch-sizes", "32", "--attn", "sdpa", "--profile", "--benchmark-max-time", "0.2"],
}


@dataclass
class Validation:
    """Where the stages write and how long each may take; `results` collects each stage's outcome."""

    out: Path
    device: torch.device
    size: str
    results: list[dict] = field(default_factory=list)

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    def log(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        with open(self.out / "validate.log", "a") as log:
            log.write(line + "\n")

    def budget(self, stage: str) -> float:
        return BUDGET_S[self.size][stage]

    def sweep(self, name: str, args: list[str], budget: float) -> int:
        """Run a pytest sweep into runs/<name> (see `pytest`)."""
        size = [] if "--preset" in args else ["--size", self.size]
        return self.pytest(name, [*args, "--benchmark-only", "-q", "-p", "no:cacheprovider", "--device",
                                  self.device.type, *size, *sweep_options(name, self.runs)], budget)

    def pytest(self, name: str, args: list[str], budget: float) -> int:
        """Run pytest, logging to <name>.log; past the budget it gets SIGINT, which ends the session
        normally (a sweep keeps the results, JSON and report of the cases done), then SIGKILL."""
        command = [sys.executable, "-m", "pytest", *args]
        self.log(" ".join(command))
        code, late = children.run(command, self.out / f"{name}.log", budget, grace_s=60.0, cwd=ROOT)
        if late:
            self.log(f"{name}: past its {budget:.0f} s budget, interrupted")
        self.log(f"{name}: pytest exit code {code}")
        return code


# --- environment ---------------------------------------------------------------------------------------

def environment(v: Validation) -> str:
    """The fingerprint every row carries, the calibrated peaks, and nvidia-smi's view of the card."""
    from bench.machine import calibrate
    from bench.machine.environment import fingerprint

    info = {**fingerprint(v.device.type), "device": v.device.type}
    if v.device.type == "cuda":
        props = torch.cuda.get_device_properties(v.device)
        info.update(multiprocessors=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1))
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False)
        (v.out / "nvidia-smi.txt").write_text(smi.stdout + smi.stderr)
    info["calibration"] = calibrate.load_or_measure(v.device)
    (v.out / "environment.json").write_text(json.dumps(info, indent=2))
    peaks = info["calibration"]["matmul_tflops"]
    return f"{info['device_name']}; matmul TFLOP/s " + ", ".join(f"{k} {peaks[k]:.1f}" for k in peaks)


# --- GPU tests -----------------------------------------------------------------------------------------

def tests(v: Validation) -> str:
    """The tests marked `gpu` (timer agreement, the kernel at real shapes, OOM recording, every model's
    step); without a GPU each is skipped, which rehearses their collection."""
    code = v.pytest("tests", [*TEST_ARGS, "--junitxml", str(v.out / "tests.xml")], v.budget("tests"))
    if not (v.out / "tests.xml").exists():
        raise RunError(f"pytest wrote no report (exit code {code}; see tests.log)")
    suite = ElementTree.parse(v.out / "tests.xml").getroot().find("testsuite")
    detail = ", ".join(f"{suite.get(key)} {key}" for key in ("tests", "failures", "errors", "skipped"))
    if code != 0:
        raise RunError(f"pytest exit code {code}; {detail} (see tests.log)")
    return detail


# --- timers --------------------------------------------------------------------------------------------

class HostRounds:
    """What the harness uses of pytest-benchmark's fixture: `pedantic` times each round of `iterations`
    calls between two time.perf_counter() calls and keeps the time per call in `stats.stats.data`, as
    pytest-benchmark does by default."""

    def __init__(self):
        self.stats = None

    def pedantic(self, fn: Callable[[], None], rounds: int, iterations: int = 1, warmup_rounds: int = 0) -> None:
        for _ in range(warmup_rounds * iterations):
            fn()
        data = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(iterations):
                fn()
            data.append((time.perf_counter() - start) / iterations)
        self.stats = SimpleNamespace(stats=SimpleNamespace(data=data))


def timer_row(n: int, device: torch.device) -> dict:
    """One n x n x n matmul timed by the harness (host clock around rounds; its device time by CUDA-graph
    replays) and by triton.testing.do_bench; on a GPU, how far the harness's figures are from do_bench's."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))

    def step() -> None:
        a @ b

    host = HostRounds()
    measured = measure(lambda: Workload(step, lambda: 2 * n**3), host, Settings(device, warmup_s=WARMUP_S[device.type]))
    harness = timing_stats(measured.rounds_s)
    row = {"case": f"matmul {n}x{n}x{n} {str(dtype).removeprefix('torch.')}", "rounds": harness["rounds"],
           "iterations": measured.iterations,
           "harness_ms": harness["median_s"] * 1e3, "harness_iqr_ms": harness["iqr_s"] * 1e3}
    if device.type == "cuda":
        from triton.testing import do_bench

        row["device_ms"] = float(np.median(measured.device_rounds_s)) * 1e3
        row["device_method"] = measured.device_method
        row["do_bench_ms"] = do_bench(step, warmup=100, rep=max(100, 20 * row["device_ms"]), return_mode="median")
        row["harness_vs_do_bench_pct"] = 100 * (row["harness_ms"] / row["do_bench_ms"] - 1)
        row["device_vs_do_bench_pct"] = 100 * (row["device_ms"] / row["do_bench_ms"] - 1)
        row["overhead_us"] = (row["harness_ms"] - row["device_ms"]) * 1e3  # the host's, per step
    row["tflops"] = 2 * n**3 / (row["harness_ms"] / 1e3) / 1e12
    return row


def timers(v: Validation) -> str:
    """The harness's host and device times against do_bench on matmuls of ~0.1, 5 and 100 ms: the host's
    difference is the overhead of timing from the host, the device's should be none."""
    table = pd.DataFrame([timer_row(n, v.device) for n in TIMER_SIZES[v.device.type]])
    table.to_csv(v.out / "timers.csv", index=False)
    (v.out / "timers.md").write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n")
    return f"{len(table)} cases"


# --- kernel against SDPA -------------------------------------------------------------------------------

def median_ms(fn: Callable[[], object], device: torch.device, grads: list[torch.Tensor] | None = None) -> float:
    """Median milliseconds of fn: do_bench (CUDA events, L2 flushed) on a GPU, torch.utils.benchmark on a CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, grad_to_none=grads, return_mode="median")
    from torch.utils.benchmark import Timer

    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.05).median * 1e3


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.detach().double() - ref.detach()).norm() / ref.detach().norm())


def check_triton(device: torch.device, dtype: torch.dtype, head_dim: int, causal: bool, seqlen: int,
                 impl: str = "triton") -> dict:
    """The kernel's output and gradients (`impl` picks the backward) against float64 naive attention on
    fresh random inputs; an error is recorded in the row."""
    row = {"impl": impl, "seqlen": seqlen, "head_dim": head_dim, "causal": causal}
    try:
        q, k, v, grad = (torch.randn(2, 4, seqlen, head_dim, device=device, dtype=dtype) for _ in range(4))
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = ATTENTION[impl].fn(*leaves, causal=causal)
        out.backward(grad)
        ref_leaves = [t.double().requires_grad_() for t in (q, k, v)]
        ref = naive(*ref_leaves, causal=causal)
        ref.backward(grad.double())
    except Exception as err:
        return {**row, "finite": False, "error": one_line(err)}
    errors = {"out": relative_error(out, ref)}
    for name, leaf, ref_leaf in zip("qkv", leaves, ref_leaves, strict=True):
        errors[f"d{name}"] = relative_error(leaf.grad, ref_leaf.grad)
    return {**row, **{f"err_{k}": e for k, e in errors.items()}, "finite": all(map(math.isfinite, errors.values()))}


def time_attention(impl: str, device: torch.device, dtype: torch.dtype, shape: tuple, causal: bool) -> dict:
    """Forward and backward medians of one implementation on one shape; an OOM or error is recorded."""
    fn = ATTENTION[impl].fn
    batch, heads, seqlen, head_dim = shape
    flops = attention_flops(batch, heads, seqlen, seqlen, head_dim, causal=causal)
    result = {}
    try:
        q, k, v, grad = (torch.randn(shape, device=device, dtype=dtype) for _ in range(4))
        with torch.no_grad():
            result["fwd_ms"] = median_ms(lambda: fn(q, k, v, causal=causal), device)
        leaves = [t.requires_grad_() for t in (q, k, v)]
        out = fn(*leaves, causal=causal)
        result["bwd_ms"] = median_ms(lambda: out.backward(grad, retain_graph=True), device, grads=leaves)
        result["status"], result["reason"] = "ok", ""
    except Exception as err:
        result["status"] = "oom" if is_oom(err) else "error"
        result["reason"] = one_line(err, 160)
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for phase, factor in (("fwd", 1.0), ("bwd", BACKWARD_FLOPS)):
        if f"{phase}_ms" in result:
            result[f"{phase}_tflops"] = factor * flops / (result[f"{phase}_ms"] / 1e3) / 1e12
    return result


def kernel_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """TFLOP/s per shape and implementation, forward and backward, with each Triton variant against the
    best SDPA backend."""
    ok = frame[frame["status"] == "ok"]
    tables = {}
    for phase in ("fwd", "bwd") if not ok.empty else ():
        table = ok.pivot_table(index=["causal", "head_dim", "seqlen"], columns="impl", values=f"{phase}_tflops")
        sdpa = [c for c in table.columns if c.startswith("sdpa")]
        if sdpa:
            best = table[sdpa].max(axis=1)
            table["best_sdpa"] = table[sdpa].idxmax(axis=1)
            for impl in (c for c in TRITON_BACKWARDS if c in table.columns):
                table[f"{impl}_vs_best"] = table[impl] / best
        tables[phase] = table.reset_index()
    return tables


def kernel(v: Validation) -> str:
    """The Triton kernel's accuracy against float64 with each backward, then its TFLOP/s against each SDPA
    backend per shape; the autotuner's winners are saved."""
    shapes, dtype = KERNEL_SHAPES[v.size], torch.bfloat16
    deadline = time.monotonic() + v.budget("kernel")
    rows, checks = [], []
    if ATTENTION["triton"].unavailable(v.device, dtype, 64, False) is None:
        checks = [check_triton(v.device, dtype, head_dim, causal, seqlen, impl)  # 1000: a tail no block divides
                  for impl in TRITON_BACKWARDS for head_dim in shapes["head_dims"] for causal in (False, True)
                  for seqlen in (1000, 1024)]
        pd.DataFrame(checks).to_csv(v.out / "kernel_check.csv", index=False)
        worst = pd.DataFrame(checks).filter(like="err_").max().max()
        v.log(f"kernel check: {sum(c['finite'] for c in checks)}/{len(checks)} finite, worst relative error "
              f"{worst:.2e}")
    grid = [(s, d, c) for s in shapes["seqlens"] for d in shapes["head_dims"] for c in (False, True)]
    for i, (seqlen, head_dim, causal) in enumerate(grid):  # shortest first: a spent budget drops the longest
        if time.monotonic() > deadline:
            v.log(f"kernel: budget spent, {len(grid) - i} of {len(grid)} shapes not timed")
            break
        shape = (shapes["tokens"] // seqlen, shapes["hidden"] // head_dim, seqlen, head_dim)
        for impl in KERNEL_IMPLS:
            reason = ATTENTION[impl].unavailable(v.device, dtype, head_dim, causal)
            timed = {"status": "skipped", "reason": reason} if reason else \
                time_attention(impl, v.device, dtype, shape, causal)
            rows.append({"impl": impl, "causal": causal, "head_dim": head_dim, "seqlen": seqlen,
                         "batch": shape[0], "heads": shape[1], **timed})
    frame = pd.DataFrame(rows)
    frame.to_csv(v.out / "kernel.csv", index=False)
    if v.device.type == "cuda":
        from kernels.flash_attention import AUTOTUNED

        winners = {name: {str(key): str(config) for key, config in tuner.cache.items()}
                   for name, tuner in AUTOTUNED.items()}
        (v.out / "kernel_configs.json").write_text(json.dumps(winners, indent=2))
    tables = kernel_tables(frame)
    markdown = [f"### {phase} TFLOP/s\n\n{table.to_markdown(index=False, floatfmt='.3g')}\n"
                for phase, table in tables.items()]
    (v.out / "kernel.md").write_text("\n".join(markdown) or "(no implementation ran)\n")
    return f"{len(frame)} rows ({(frame['status'] == 'ok').sum()} ok)"


# --- sweep, A/A gate, profile --------------------------------------------------------------------------

def sweep(v: Validation) -> str:
    """The sweep of every model, timed and reported as a user would run it."""
    code = v.sweep("sweep", SWEEP_ARGS[v.size], v.budget("sweep"))
    results = RunDir(v.runs / "sweep").results_csv
    if not results.exists():
        raise RunError(f"the sweep wrote no results (pytest exit code {code}; see sweep.log)")
    frame = pd.read_csv(results)
    return f"pytest exit {code}; " + ", ".join(f"{n} {s}" for s, n in frame["status"].value_counts().items())


def gate(v: Validation) -> str:
    """The attention subset twice, then the gate between them: how far apart the medians of the same
    code land, and whether the gate stays quiet (exit 0) at the device's default threshold."""
    for name in ("aa-1", "aa-2"):
        v.sweep(name, AA_ARGS[v.size], v.budget("gate") / 2)
    done = subprocess.run([sys.executable, "-m", "bench", "gate", "aa-1", "aa-2", "--reports-dir", str(v.runs)],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    (v.out / "gate.md").write_text(done.stdout + done.stderr)
    first, second = (pd.read_csv(RunDir(v.runs / name).results_csv).set_index("case_id") for name in ("aa-1", "aa-2"))
    shift = (second["median_s"] / first["median_s"] - 1).abs().dropna() * 100
    spread = {"cases": int(shift.size), "gate_exit": done.returncode}
    if shift.size:
        spread.update(median_pct=float(shift.median()), p90_pct=float(shift.quantile(0.9)),
                      max_pct=float(shift.max()))
    (v.out / "aa.json").write_text(json.dumps(spread, indent=2))
    return ", ".join(f"{k} {val:.3g}" if isinstance(val, float) else f"{k} {val}" for k, val in spread.items())


def profile(v: Validation) -> str:
    """Two cases with --profile: traces for TensorBoard and the per-category breakdown in the report."""
    code = v.sweep("profile", PROFILE_ARGS[v.size], v.budget("profile"))
    traces = sorted(p.name for p in (v.runs / "profile" / "traces").glob("*")) if code in (0, 2) else []
    if not traces:
        raise RunError(f"no traces written (pytest exit code {code}; see profile.log)")
    return f"traces of {', '.join(traces)}"


# --- trust: does ab, with its GPU defaults, find a 5 % device-time slowdown and stay quiet without one? ---

TRUST_SLOWDOWN = 0.05
# Runs of ab's decision, each of `pairs` pairs of processes: side A times each case as it is, side B as it is
# (the A/A comparison) and slowed (harness.slowed). quick rehearses the stage on a CPU in a few minutes.
TRUST = {"quick": {"runs": 3, "pairs": 2}, "full": {"runs": 10, "pairs": DEFAULT_PAIRS["cuda"]}}
TRUST_CASES = {
    "quick": (Case("cnn", "fwd", "fp32", 2), Case("encoder", "fwd", "fp32", 2, "sdpa"),
              AttentionCase("naive", "fwd", "bf16", 128, 64, False, 2, 4)),
    # host-bound (the GPU busy 19-41 % of a step on the H200), GPU-bound (SDPA at 8k: ~5 ms of tensor-core work
    # a step, cheap to build), our Triton kernel
    "full": (Case("encoder", "fwd", "amp_bf16", 32, "sdpa", "full"),
             AttentionCase("sdpa", "fwd", "bf16", 8192, 128, False, 4, 16),
             AttentionCase("triton", "fwd", "bf16", 4096, 64, False, 4, 16)),
}


def trust_sweep(cases: tuple, size: str, device: torch.device) -> list[str]:
    """pytest arguments that time exactly these cases (and their slowed copies, where the slowdown is set)."""
    models = [case for case in cases if isinstance(case, Case)]
    attns = [case.attention for case in cases if case.attention]
    names = [f"[{case.id}{suffix}]" for case in cases for suffix in ("", slowed_suffix(TRUST_SLOWDOWN))]
    return ["bench/test_models.py", "bench/test_attention.py", "--size", size, "--device", device.type,
            "--models", ",".join(dict.fromkeys(c.model for c in models)), "--phases", "fwd",
            "--precisions", ",".join(dict.fromkeys(c.precision for c in models)),
            "--batch-sizes", ",".join(dict.fromkeys(str(c.batch) for c in models)),
            "--attn", ",".join(dict.fromkeys(attns)), "--benchmark-max-time", "0.1", "-k", " or ".join(names)]


def trust_verdicts(medians: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    """Per run (a round of pairs) and case, ab's verdict with its defaults on the A/A comparison (A's case
    against B's) and on the slowed one (A's case against B's slowed copy)."""
    suffix = slowed_suffix(TRUST_SLOWDOWN)
    rows = []
    for name, group in medians.groupby("round", sort=False):
        as_is = group[group["case"].isin(ids)]
        slowed = group[((group["side"] == "A") & group["case"].isin(ids))
                       | ((group["side"] == "B") & group["case"].isin([i + suffix for i in ids]))]
        for kind, values in (("A/A", as_is), ("slowed", slowed.assign(case=slowed["case"].str.removesuffix(suffix)))):
            for v in judge_all(judged_values(values, "device"), DEFAULT_THRESHOLD, DEFAULT_ALPHA):
                rows.append({"run": name, "kind": kind, "case": v.case, "metric": v.metric, "verdict": v.verdict,
                             "ratio": v.ratio, "ci_low": v.ci_low, "ci_high": v.ci_high, "p": v.p_value})
    return pd.DataFrame(rows)


def trust_table(medians: pd.DataFrame, verdicts: pd.DataFrame, methods: dict[str, dict],
                ids: list[str]) -> pd.DataFrame:
    """Per case: how its device time was measured and what bounds it; over the runs, A/A false alarms and
    slowdowns caught; the slowdown B measured (its slowed copy over the case, on the judged time, median
    over processes); and the spread of the A/A pairs' log-ratios on device and on host time."""
    suffix = slowed_suffix(TRUST_SLOWDOWN)
    side_b = judged_values(medians[medians["side"] == "B"], "device").pivot_table(
        index=["round", "pair"], columns="case", values="value")
    rows = []
    for case in ids:
        aa, slowed = (verdicts[(verdicts["case"] == case) & (verdicts["kind"] == kind)] for kind in ("A/A", "slowed"))
        pairs = medians[medians["case"] == case].pivot_table(index=["round", "pair"], columns="side",
                                                             values=["device_s", "host_s"])
        spread = {f"aa_spread_{what}_pct": 100 * float(np.log(pairs[(f"{what}_s", "B")] / pairs[(f"{what}_s", "A")])
                                                       .std(ddof=1)) if (f"{what}_s", "B") in pairs else math.nan
                  for what in ("device", "host")}
        applied = side_b[case + suffix] / side_b[case] if {case, case + suffix} <= set(side_b) else pd.Series()
        rows.append({"case": case, **methods.get(case, {}), "runs": len(aa),
                     "aa_false_alarms": int((aa["verdict"] == "slower").sum()),
                     "aa_unchanged": int((aa["verdict"] == "unchanged").sum()),
                     "slowed_caught": int((slowed["verdict"] == "slower").sum()),
                     "slowdown_measured_pct": 100 * (float(applied.median()) - 1), **spread})
    return pd.DataFrame(rows)


def trust(v: Validation) -> str:
    """ab's decision with its defaults (pairs, threshold, alpha, device time) over A/A runs and runs with a
    known 5 % slowdown, on a host-bound, a GPU-bound and a Triton case: false alarms, catches, device vs host
    spread, and how each case's device time was measured."""
    config, cases = TRUST[v.size], TRUST_CASES[v.size]
    ids = [case.id for case in cases]
    out = v.out / "trust"
    out.mkdir()
    run = ABRun({"A": ROOT, "B": ROOT}, {"A": sys.executable, "B": sys.executable},
                {"A": "as is", "B": f"as is and slowed {TRUST_SLOWDOWN:.0%}"}, trust_sweep(cases, v.size, v.device),
                out, v.log, metric="device", envs={"B": {SLOWDOWN_ENV: str(TRUST_SLOWDOWN)}})
    deadline = time.monotonic() + v.budget("trust")
    for number in range(1, config["runs"] + 1):
        if time.monotonic() > deadline:
            v.log(f"trust: budget spent after {number - 1} of {config['runs']} runs")
            break
        run.run_pairs(config["pairs"], name=f"run{number}")
    medians = pd.DataFrame(run.medians)
    medians.to_csv(v.out / "trust_medians.csv", index=False)
    verdicts = trust_verdicts(medians, ids)
    verdicts.to_csv(v.out / "trust_verdicts.csv", index=False)
    first = load_results(out / "run1-A-1").set_index("case_id")
    methods = first[first.index.isin(ids)][["bound", "device_method"]].to_dict("index")
    table = trust_table(medians, verdicts, methods, ids)
    table.to_csv(v.out / "trust.csv", index=False)
    (v.out / "trust.md").write_text(
        f"{int(table['runs'].max())} runs of {config['pairs']} pairs; threshold {DEFAULT_THRESHOLD:.0%}, alpha "
        f"{DEFAULT_ALPHA}, device time where measured; B slowed by {TRUST_SLOWDOWN:.0%} of its device time. A "
        "verdict on host time (no device time: a CPU) counts here after one round, where ab would re-run a slower "
        "one before failing.\n\n"
        + table.to_markdown(index=False, floatfmt=".3g") + "\n")
    return (f"{int(table['runs'].max())} runs: {int(table['aa_false_alarms'].sum())} A/A false alarms, "
            f"{int(table['slowed_caught'].sum())} of {int(table['runs'].sum())} slowdowns caught")


STAGE_FUNCTIONS: dict[str, Callable[[Validation], str]] = {
    "environment": environment, "tests": tests, "timers": timers, "kernel": kernel, "sweep": sweep, "gate": gate,
    "profile": profile, "trust": trust,
}


def run(out: Path, device: torch.device, size: str, stages: list[str]) -> int:
    """Run the stages in order into `out` (which must be new or empty); exit 0 only if every stage passed."""
    out = out.resolve()  # the stages' pytest runs start in the repository root, not the working directory
    if out.exists() and any(out.iterdir()):
        raise RunError(f"--out {out}: not empty; validate writes into a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    v = Validation(out, device, size)
    v.log(f"validate: device {device}, size {size}, stages {', '.join(stages)}")
    for stage in stages:
        start = time.monotonic()
        try:
            status, detail = "ok", STAGE_FUNCTIONS[stage](v)
        except Exception as err:
            status, detail = "failed", one_line(err)
            v.log(traceback.format_exc())
        seconds = time.monotonic() - start
        v.results.append({"stage": stage, "status": status, "seconds": round(seconds, 1), "detail": detail})
        v.log(f"{stage}: {status} in {seconds:.0f} s: {detail}")
    summary = pd.DataFrame(v.results)
    sections = [f"# validate: {device}, size {size}\n", summary.to_markdown(index=False), ""]
    for name, title in (("timers.md", "Timers"), ("kernel.md", "Triton kernel against SDPA"), ("gate.md", "A/A gate"),
                        ("trust.md", "Trust: ab's false alarms and catches")):
        if (out / name).exists():
            sections += [f"## {title}\n", (out / name).read_text()]
    (out / "validate.md").write_text("\n".join(sections))
    print(summary.to_markdown(index=False))
    return 0 if (summary["status"] == "ok").all() else 1
