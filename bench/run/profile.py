"""torch.profiler passes over a case, after and apart from its timing: traces for TensorBoard's PyTorch
Profiler tab, and a breakdown of where the time went, from the profiler's own key_averages()."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from bench.results.categories import categorise
from bench.run.harness import WORKLOADS, cudnn_benchmark


def operator_times(prof: profile, on_gpu: bool) -> pd.DataFrame:
    """Self time per operator (CPU) or per kernel and copy (GPU), microseconds, largest first."""
    rows = []
    for event in prof.key_averages():
        if event.key.startswith("ProfilerStep"):
            continue  # the step marker's self time is Python between ops, not an operator
        self_us = getattr(event, "self_device_time_total", 0) if on_gpu else event.self_cpu_time_total
        if self_us > 0:
            rows.append({"name": event.key, "calls": event.count, "self_us": float(self_us)})
    frame = pd.DataFrame(rows, columns=["name", "calls", "self_us"]).sort_values("self_us", ascending=False)
    frame["share"] = frame["self_us"] / frame["self_us"].sum()
    frame["category"] = frame["name"].map(categorise)
    return frame.reset_index(drop=True)


def breakdown(operators: pd.DataFrame) -> pd.DataFrame:
    """Share of self time per category (attention, matmul/conv, normalisation, memory copy, ...)."""
    shares = operators.groupby("category")["self_us"].sum()
    frame = shares.rename("self_us").to_frame()
    frame["share"] = frame["self_us"] / frame["self_us"].sum()
    return frame.sort_values("share", ascending=False).reset_index()


def profile_steps(step, device: torch.device, trace_dir: Path, name: str, active_steps: int = 3,
                  with_stack: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Profile `active_steps` calls of `step` (after one to skip and one to warm up), the trace written into
    trace_dir under `name`; returns the self time per operator and the breakdown by category."""
    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    trace_dir.mkdir(parents=True, exist_ok=True)
    steps = schedule(wait=1, warmup=1, active=active_steps)
    with cudnn_benchmark(on_gpu), profile(  # cuDNN's algorithm choice as in the timed pass
            activities=activities, schedule=steps, record_shapes=True, profile_memory=True, with_stack=with_stack,
            on_trace_ready=tensorboard_trace_handler(str(trace_dir), worker_name=name)) as prof:
        for _ in range(2 + active_steps):
            step()
            if on_gpu:
                torch.cuda.synchronize(device)
            prof.step()
    operators = operator_times(prof, on_gpu)
    return operators, breakdown(operators)


def profile_case(case, device: torch.device, trace_dir: Path, active_steps: int = 3,
                 with_stack: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Profile `active_steps` rounds of a case, its trace written into trace_dir."""
    work = WORKLOADS[type(case)](case, device)
    return profile_steps(work.step, device, trace_dir, case.id, active_steps, with_stack)
