"""An offline page per profiled case, made from the Chrome-trace JSON torch.profiler writes: a Plotly
timeline with the library inlined (so it opens from disk, with no network, where TensorBoard's profiler
plugin stays blank) and the tables people opened that plugin for, plus a GPU's busy and idle share."""

from __future__ import annotations

import gzip
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.results.categories import categorise
from bench.results.rundir import RunDir, atomic_write
from bench.views.htmlpage import page, table_html

GPU_WORK = ("kernel", "gpu_memcpy", "gpu_memset")  # what occupies a GPU stream
STEP = "ProfilerStep#"  # torch.profiler's annotation of each profiled step, on the CPU and on the GPU
TOP = 20  # rows of the operator and kernel tables
HOVER_NAME = 120  # characters of a name in the timeline's hover box (kernel names run to hundreds)
TABLE_NAME = 200  # characters of a name in a table; the trace keeps the whole of it


def load_trace(path: Path) -> dict:
    """A trace as torch.profiler wrote it, plain or gzipped (tensorboard_trace_handler's use_gzip)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)


def trace_file(case_dir: Path) -> Path | None:
    """The case's trace in its folder (the newest, should it have been profiled twice), or None."""
    traces = sorted(case_dir.glob("*.pt.trace.json*"), key=lambda p: p.stat().st_mtime)
    return traces[-1] if traces else None


def events(trace: dict) -> pd.DataFrame:
    """The trace's complete events, one row each: name, cat, lane (a CPU thread or a GPU stream), ts and
    dur (us), input shapes, nesting depth in its lane, and self_us (dur less that of events nested in it)."""
    rows = [{"name": e["name"], "cat": e.get("cat", ""), "pid": e["pid"], "tid": e["tid"], "ts": float(e["ts"]),
             "dur": float(e["dur"]), "shapes": _shapes(e.get("args", {}))}
            for e in trace["traceEvents"] if e.get("ph") == "X" and isinstance(e.get("pid"), int)]
    frame = pd.DataFrame(rows, columns=["name", "cat", "pid", "tid", "ts", "dur", "shapes"])
    on_gpu = frame["cat"].isin(GPU_WORK)
    frame["lane"] = np.where(on_gpu, "GPU " + frame["pid"].astype(str) + " stream " + frame["tid"].astype(str),
                             np.where(frame["cat"] == "gpu_user_annotation", "GPU " + frame["pid"].astype(str)
                                      + " steps", "CPU thread " + frame["tid"].astype(str)))
    frame = frame.sort_values(["lane", "ts", "dur"], ascending=[True, True, False], ignore_index=True)
    frame["depth"], frame["self_us"] = _nesting(frame)
    return frame


def _shapes(args: dict) -> str:
    dims = [d for d in args.get("Input Dims", []) if d]
    return ", ".join(str(d) for d in dims)


def _nesting(frame: pd.DataFrame) -> tuple[list[int], list[float]]:
    """Each event's depth in its lane and its self time: a stack of open events per lane, as a trace
    viewer stacks them."""
    depth, self_us = [0] * len(frame), frame["dur"].tolist()
    ends = (frame["ts"] + frame["dur"]).tolist()
    stack: list[int] = []
    lane = None
    for i, (this_lane, ts, dur) in enumerate(zip(frame["lane"], frame["ts"], frame["dur"], strict=True)):
        if this_lane != lane:
            stack, lane = [], this_lane
        while stack and ends[stack[-1]] <= ts:
            stack.pop()
        if stack:
            self_us[stack[-1]] -= dur
        depth[i] = len(stack)
        stack.append(i)
    return depth, self_us


def profiled_steps(frame: pd.DataFrame) -> pd.DataFrame:
    """The CPU's annotation of each profiled step, in time order."""
    return frame[(frame["cat"] == "user_annotation") & frame["name"].str.startswith(STEP)].sort_values("ts")


def step_window(frame: pd.DataFrame) -> tuple[float, float]:
    """From the start of the first profiled step to the end of the last (the CPU's steps, which wait for
    the GPU), or the whole trace where it has no steps."""
    steps = profiled_steps(frame)
    spans = steps if len(steps) else frame
    return float(spans["ts"].min()), float((spans["ts"] + spans["dur"]).max())


def busy_us(frame: pd.DataFrame, start: float, end: float) -> float:
    """Time within [start, end] in which any stream of the GPU runs a kernel, copy or memset."""
    work = frame[frame["cat"].isin(GPU_WORK)]
    busy, reach = 0.0, start  # reach: the end of the time counted so far
    for begin, finish in sorted(zip(work["ts"], work["ts"] + work["dur"], strict=True)):
        finish = min(finish, end)
        busy += max(0.0, finish - max(begin, reach))
        reach = max(reach, finish)
    return busy


def gpu_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """What Holistic Trace Analysis reports first: the GPU's busy and idle share of the profiled steps,
    kernels launched and their median duration, and whether the GPU idles more than it computes
    (the CPU, launching, is the bottleneck). Empty for a CPU-only trace."""
    kernels = frame[frame["cat"] == "kernel"]
    if not frame["cat"].isin(GPU_WORK).any():
        return pd.DataFrame()
    start, end = step_window(frame)
    busy = busy_us(frame, start, end)
    steps = max(1, len(profiled_steps(frame)))
    figures = {
        "profiled time (ms)": (end - start) / 1e3,
        "GPU busy (ms)": busy / 1e3,
        "GPU busy share": busy / (end - start),
        "GPU idle share": 1 - busy / (end - start),
        "kernels launched": len(kernels),
        "kernels per step": len(kernels) / steps,
        "median kernel (us)": float(kernels["dur"].median()),  # NaN (a blank) where only copies ran
        "bound by": "CPU (the GPU idles more than it computes)" if busy < (end - start) / 2 else "GPU",
    }
    return pd.DataFrame({"figure": list(figures), "value": [_cell(v) for v in figures.values()]})


def _cell(value) -> str:
    """A figure as the tables print numbers (4 significant digits, NaN blank), text as it is."""
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def step_times(frame: pd.DataFrame) -> pd.DataFrame:
    """Each profiled step's wall time on the CPU and, on a GPU, the GPU's busy time within it."""
    steps = profiled_steps(frame)
    table = pd.DataFrame({"step": steps["name"].str.removeprefix(STEP).astype(int), "wall (ms)": steps["dur"] / 1e3})
    if frame["cat"].isin(GPU_WORK).any():
        table["GPU busy (ms)"] = [busy_us(frame, ts, ts + dur) / 1e3 for ts, dur in zip(steps["ts"], steps["dur"],
                                                                                        strict=True)]
    return table.reset_index(drop=True)


def top_operators(frame: pd.DataFrame) -> pd.DataFrame:
    """Operators by self time, grouped by name and input shapes, with calls and total time."""
    ops = frame[frame["cat"] == "cpu_op"]
    table = ops.groupby(["name", "shapes"]).agg(calls=("dur", "size"), self_ms=("self_us", "sum"),
                                                total_ms=("dur", "sum")).reset_index()
    table[["self_ms", "total_ms"]] /= 1e3
    table["self share"] = table["self_ms"] / table["self_ms"].sum()
    table = table.sort_values("self_ms", ascending=False).head(TOP).assign(name=lambda t: _cut(t["name"]))
    return table.rename(columns={"shapes": "input shapes", "self_ms": "self (ms)", "total_ms": "total (ms)"})


def top_kernels(frame: pd.DataFrame) -> pd.DataFrame:
    """GPU kernels, copies and memsets by total time, with calls and median duration."""
    work = frame[frame["cat"].isin(GPU_WORK)]
    table = work.groupby("name").agg(calls=("dur", "size"), total_ms=("dur", "sum"),
                                     median_us=("dur", "median")).reset_index()
    table["total_ms"] /= 1e3
    table["share"] = table["total_ms"] / table["total_ms"].sum()
    table = table.sort_values("total_ms", ascending=False).head(TOP).assign(name=lambda t: _cut(t["name"]))
    return table.rename(columns={"total_ms": "total (ms)", "median_us": "median (us)"})


def _cut(names: pd.Series, length: int = TABLE_NAME) -> pd.Series:
    """Names past `length` characters cut there, with an ellipsis."""
    return names.where(names.str.len() <= length, names.str.slice(0, length - 1) + "\u2026")


def category(frame: pd.DataFrame) -> pd.Series:
    """The breakdown's category of each event; annotations are steps, CUDA API calls are launch."""
    named = frame["name"].map(categorise)
    return named.where(~frame["cat"].isin(["cuda_runtime", "cuda_driver"]), "launch (CUDA API)").where(
        ~frame["cat"].isin(["user_annotation", "gpu_user_annotation"]), "step")


def timeline(frame: pd.DataFrame):
    """A zoomable Gantt chart: a row per lane and nesting depth, a bar per event, coloured by category,
    hover for name, duration and shapes; times in ms from the first step."""
    import plotly.graph_objects as go

    start, _ = step_window(frame)
    frame = frame.assign(row=frame["lane"] + np.where(frame["depth"] > 0, " +" + frame["depth"].astype(str), ""),
                         category=category(frame))
    rows = frame.sort_values(["lane", "depth"])["row"].drop_duplicates().tolist()  # "CPU ..." before "GPU ..."
    fig = go.Figure()
    for name, group in frame.groupby("category"):
        hover = (_cut(group["name"], HOVER_NAME) + "<br>" + group["dur"].round(1).astype(str) + " us"
                 + np.where(group["shapes"] != "", "<br>" + _cut(group["shapes"], HOVER_NAME), ""))
        fig.add_trace(go.Bar(x=group["dur"] / 1e3, base=(group["ts"] - start) / 1e3, y=group["row"], name=name,
                             orientation="h", hovertext=hover, hoverinfo="text", marker_line_width=0))
    fig.update_layout(barmode="overlay", height=max(360, 22 * len(rows) + 140), margin={"l": 10, "r": 10, "t": 30},
                      xaxis_title="ms from the first profiled step", legend_title="category", bargap=0.15,
                      yaxis={"categoryorder": "array", "categoryarray": rows[::-1], "automargin": True})
    return fig


def trace_page(trace_path: Path, title: str, breakdown: pd.DataFrame | None = None) -> str:
    """The whole page of one case: summary, timeline, step times, the GPU's share, the category breakdown
    (as profile.py computed it, when given), top operators and top kernels."""
    trace = load_trace(trace_path)
    frame = events(trace)
    devices = ", ".join(d.get("name", "?") for d in trace.get("deviceProperties", [])) or "CPU only"
    start, end = step_window(frame)
    plot = timeline(frame).to_html(full_html=False, include_plotlyjs=True,
                                   config={"scrollZoom": True, "displaylogo": False})
    sections = [("GPU busy and idle", gpu_summary(frame)),
                ("Step time", step_times(frame)),
                ("Category breakdown (share of self time)", breakdown if breakdown is not None else pd.DataFrame()),
                (f"Top operators by self time (CPU, first {TOP})", top_operators(frame)),
                (f"Top kernels by total time (GPU, first {TOP})", top_kernels(frame))]
    body = [f"<p>{html.escape(trace_path.name)}: {len(frame)} events over {(end - start) / 1e3:.4g} ms of "
            f"profiled steps; devices: {html.escape(devices)}. Drag to zoom, double-click to reset, click a "
            "category to hide it.</p>", "<h2>Timeline</h2>", plot]
    for heading, table in sections:
        if not table.empty or not heading.startswith(("GPU", "Top kernels")):
            body += [f"<h2>{html.escape(heading)}</h2>", table_html(table)]
    return page(title, body)


def write_trace_pages(run_dir: RunDir) -> dict[str, Path]:
    """Write traces/<case-id>/index.html for every profiled case of the run; their paths by case id."""
    pages = {}
    for case_dir in sorted(p for p in run_dir.traces_dir.glob("*") if p.is_dir()):
        trace = trace_file(case_dir)
        if trace is None:
            continue
        case_id = case_dir.name
        csv = run_dir.breakdown_csv(case_id)
        breakdown = pd.read_csv(csv) if csv.exists() else None
        atomic_write(run_dir.trace_page(case_id), trace_page(trace, f"archbench trace: {case_id}", breakdown))
        pages[case_id] = run_dir.trace_page(case_id)
    return pages
