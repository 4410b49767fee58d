"""The offline trace pages: events nested as a trace viewer stacks them, the GPU's busy and idle share
on a synthetic GPU-shaped trace and on a real H200 trace, tables, one page per profiled case, and in a
real browser: drawn, with no request leaving the machine."""

import gzip
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.results.rundir import RunDir
from bench.run.profile import profile_case
from bench.sweep.cases import Case
from bench.views.report import write_report
from bench.views.tracepage import (
    GPU_WORK,
    _cut,
    busy_us,
    category,
    events,
    gpu_summary,
    load_trace,
    step_times,
    step_window,
    timeline,
    top_kernels,
    top_operators,
    trace_file,
    trace_page,
    write_trace_pages,
)

H200_TRACE = Path(__file__).parent / "data" / "h200-cnn-fwd-amp_bf16-b8.pt.trace.json.gz"  # a real --profile run


def x(name, cat, ts, dur, pid=1, tid=1, **args):
    return {"ph": "X", "name": name, "cat": cat, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}


def gpu_shaped_trace() -> dict:
    """Two 100 us steps on CPU thread 1; two kernels overlapping on streams 7 and 8 (busy 30..50) in the
    first, a copy (150..160) in the second: the GPU is busy 30 of 200 us. A user annotation after the
    steps is not a step."""
    return {"deviceProperties": [{"name": "Fake GPU"}], "traceEvents": [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "python"}},
        x("ProfilerStep#1", "user_annotation", 0, 100),
        x("aten::linear", "cpu_op", 10, 40, **{"Input Dims": [[8, 4], [2, 4], [2]]}),
        x("aten::addmm", "cpu_op", 15, 30, **{"Input Dims": [[2], [8, 4], [4, 2]]}),
        x("cudaLaunchKernel", "cuda_runtime", 20, 5),
        x("ProfilerStep#2", "user_annotation", 100, 100),
        x("aten::addmm", "cpu_op", 110, 10, **{"Input Dims": [[2], [8, 4], [4, 2]]}),
        x("my_region", "user_annotation", 205, 10),  # a user's own annotation, after the steps
        x("gemm<float, 128>", "kernel", 30, 10, pid=0, tid=7),
        x("gemm<float, 128>", "kernel", 35, 15, pid=0, tid=8),
        x("Memcpy DtoH", "gpu_memcpy", 150, 10, pid=0, tid=7),
        x("ProfilerStep#1", "gpu_user_annotation", 30, 20, pid=0, tid=7),
        {"ph": "f", "id": 1, "pid": 0, "tid": 7, "ts": 30, "cat": "ac2g", "name": "ac2g"},
        {"ph": "X", "name": "PyTorch Profiler", "cat": "Trace", "pid": "Spans", "tid": "x", "ts": 0, "dur": 200},
    ]}


def test_events_are_nested_per_lane_with_self_time_less_their_children():
    frame = events(gpu_shaped_trace()).set_index(["lane", "ts"])
    cpu = frame.loc["CPU thread 1"]
    assert cpu.loc[[0.0, 10.0, 15.0, 20.0, 100.0, 110.0], "depth"].tolist() == [0, 1, 2, 3, 0, 1]
    assert cpu.loc[[0.0, 10.0, 15.0, 20.0, 100.0], "self_us"].tolist() == [60, 10, 25, 5, 90]
    assert cpu.loc[10.0, "shapes"] == "[8, 4], [2, 4], [2]"
    assert frame.loc["GPU 0 stream 7"]["name"].tolist() == ["gemm<float, 128>", "Memcpy DtoH"]
    assert frame.loc["GPU 0 stream 8", "depth"].tolist() == [0]  # streams are lanes of their own
    assert frame.loc["GPU 0 steps", "name"].tolist() == ["ProfilerStep#1"]
    assert len(frame) == 11  # the flow event, the metadata and the profiler's span are not drawn


def test_a_complete_event_needs_no_category_or_arguments_and_an_empty_trace_has_the_columns():
    frame = events({"traceEvents": [{"ph": "X", "name": "op", "pid": 1, "tid": 2, "ts": 5, "dur": 3}]})
    assert frame.drop(columns="lane").to_dict("records") == [
        {"name": "op", "cat": "", "pid": 1, "tid": 2, "ts": 5.0, "dur": 3.0, "shapes": "", "depth": 0, "self_us": 3.0}]
    assert list(events({"traceEvents": []}).columns) == ["name", "cat", "pid", "tid", "ts", "dur", "shapes", "lane",
                                                         "depth", "self_us"]


def test_an_event_starting_with_its_parent_nests_inside_it_whatever_the_file_order():
    frame = events({"traceEvents": [x("child", "cpu_op", 0, 4), x("parent", "cpu_op", 0, 10)]}).set_index("name")
    assert frame.loc[["parent", "child"], "depth"].tolist() == [0, 1]
    assert frame.loc[["parent", "child"], "self_us"].tolist() == [6, 4]


def test_busy_time_is_the_union_of_the_streams_clipped_to_the_window():
    frame = events(gpu_shaped_trace())
    assert busy_us(frame, 0, 200) == 30  # 30..50 on two streams, then 150..160
    assert busy_us(frame, 40, 155) == 15  # 40..50 and 150..155
    assert busy_us(frame, 60, 140) == 0


def test_events_are_coloured_by_the_breakdown_s_categories_launches_and_steps_apart():
    frame = pd.DataFrame({"name": ["ProfilerStep#1", "ProfilerStep#1", "cudaLaunchKernel", "cuLaunchKernelEx",
                                   "aten::addmm", "Memcpy DtoH", "my_region"],
                          "cat": ["user_annotation", "gpu_user_annotation", "cuda_runtime", "cuda_driver", "cpu_op",
                                  "gpu_memcpy", "user_annotation"]})
    assert category(frame).tolist() == ["step", "step", "launch (CUDA API)", "launch (CUDA API)", "matmul/conv",
                                        "memory copy", "step"]


def test_the_profiled_window_is_the_steps_or_else_the_whole_trace():
    trace = gpu_shaped_trace()
    assert step_window(events(trace)) == (0, 200)  # not the user's annotation after them
    trace["traceEvents"] = [e for e in trace["traceEvents"] if not e["name"].startswith("ProfilerStep")]
    frame = events(trace)
    assert step_window(frame) == (10, 215)
    summary = gpu_summary(frame).set_index("figure")["value"]
    assert summary["profiled time (ms)"] == "0.205" and summary["kernels per step"] == "2"  # one step, unnamed
    assert (summary["GPU busy share"], summary["GPU idle share"]) == ("0.1463", "0.8537")  # 30 us of 205
    assert min(min(bar.base) for bar in timeline(frame).data) == 0  # the timeline starts where the window does


def test_the_tables_keep_the_first_twenty_rows():
    trace = {"traceEvents": [x(f"op{i}", "cpu_op", 100 * i, i + 1) for i in range(25)]
             + [x(f"k{i}", "kernel", 100 * i, i + 1, pid=0, tid=7) for i in range(25)]}
    frame = events(trace)
    assert top_operators(frame)["name"].tolist() == [f"op{i}" for i in range(24, 4, -1)]
    assert top_kernels(frame)["name"].tolist() == [f"k{i}" for i in range(24, 4, -1)]


def test_the_gpu_summary_says_busy_idle_launches_and_that_the_cpu_bounds_an_idle_gpu():
    summary = gpu_summary(events(gpu_shaped_trace())).set_index("figure")["value"].to_dict()
    assert summary == {"profiled time (ms)": "0.2", "GPU busy (ms)": "0.03", "GPU busy share": "0.15",
                       "GPU idle share": "0.85", "kernels launched": "2", "kernels per step": "1",
                       "median kernel (us)": "12.5", "bound by": "CPU (the GPU idles more than it computes)"}


@pytest.mark.parametrize(("duration", "share", "bound"), [(100, "0.65", "GPU"), (70, "0.5", "GPU"), (50, "0.4", "CPU")])
def test_a_gpu_busy_at_least_half_the_time_is_the_bound(duration, share, bound):
    trace = gpu_shaped_trace()
    trace["traceEvents"].append(x("big", "kernel", 50, duration, pid=0, tid=7))
    summary = gpu_summary(events(trace)).set_index("figure")["value"]
    assert summary["GPU busy share"] == share and summary["bound by"].split()[0] == bound


def test_a_gpu_that_only_copied_has_no_median_kernel():
    trace = gpu_shaped_trace()
    trace["traceEvents"] = [e for e in trace["traceEvents"] if e.get("cat") != "kernel"]
    summary = gpu_summary(events(trace)).set_index("figure")["value"]
    assert summary["kernels launched"] == "0" and summary["median kernel (us)"] == ""
    assert summary["GPU busy (ms)"] == "0.01"


def test_a_cpu_trace_has_no_gpu_summary_and_no_gpu_column():
    trace = gpu_shaped_trace()
    trace["traceEvents"] = [e for e in trace["traceEvents"] if e.get("pid") != 0]
    frame = events(trace)
    assert gpu_summary(frame).empty and top_kernels(frame).empty
    assert step_times(frame).to_dict("list") == {"step": [1, 2], "wall (ms)": [0.1, 0.1]}


def test_step_times_give_each_step_its_wall_time_and_gpu_busy_time():
    assert step_times(events(gpu_shaped_trace())).to_dict("list") == {
        "step": [1, 2], "wall (ms)": [0.1, 0.1], "GPU busy (ms)": [0.02, 0.01]}


def test_top_operators_group_by_name_and_shapes_by_self_time():
    table = top_operators(events(gpu_shaped_trace()))
    assert table.to_dict("records") == [
        {"name": "aten::addmm", "input shapes": "[2], [8, 4], [4, 2]", "calls": 2, "self (ms)": 0.035,
         "total (ms)": 0.04, "self share": pytest.approx(35 / 45)},
        {"name": "aten::linear", "input shapes": "[8, 4], [2, 4], [2]", "calls": 1, "self (ms)": 0.01,
         "total (ms)": 0.04, "self share": pytest.approx(10 / 45)}]


def test_top_kernels_sum_each_name_over_streams():
    table = top_kernels(events(gpu_shaped_trace()))
    assert table.to_dict("records") == [
        {"name": "gemm<float, 128>", "calls": 2, "total (ms)": 0.025, "median (us)": 12.5,
         "share": pytest.approx(25 / 35)},
        {"name": "Memcpy DtoH", "calls": 1, "total (ms)": 0.01, "median (us)": 10.0, "share": pytest.approx(10 / 35)}]


def test_long_names_are_cut_in_the_tables_with_an_ellipsis():
    trace = gpu_shaped_trace()
    trace["traceEvents"].append(x("void k<" + "a" * 300 + ">()", "kernel", 60, 1, pid=0, tid=7))
    names = top_kernels(events(trace))["name"].tolist()
    assert names[-1] == "void k<" + "a" * 192 + "\u2026" and len(names[-1]) == 200
    assert names[:2] == ["gemm<float, 128>", "Memcpy DtoH"]
    assert _cut(pd.Series(["a" * 200, "b" * 201])).tolist() == ["a" * 200, "b" * 199 + "\u2026"]


def test_the_timeline_draws_each_event_where_and_as_long_as_it_ran_with_its_hover_text():
    fig = timeline(events(gpu_shaped_trace()))
    bars = {bar.name: bar for bar in fig.data}
    assert set(bars) == {"step", "launch (CUDA API)", "matmul/conv", "memory copy"}
    assert all(bar.orientation == "h" and bar.hoverinfo == "text" for bar in fig.data)
    copy = bars["memory copy"]  # ms from the first step's start
    assert (list(copy.x), list(copy.base), list(copy.y)) == ([0.01], [0.15], ["GPU 0 stream 7"])
    assert list(copy.hovertext) == ["Memcpy DtoH<br>10.0 us"]
    matmul = bars["matmul/conv"]
    assert list(matmul.y) == ["CPU thread 1 +1", "CPU thread 1 +2", "CPU thread 1 +1", "GPU 0 stream 7",
                              "GPU 0 stream 8"]  # a GEMM kernel is matmul like the operator that launched it
    assert list(matmul.hovertext)[1:4] == ["aten::addmm<br>30.0 us<br>[2], [8, 4], [4, 2]",
                                           "aten::addmm<br>10.0 us<br>[2], [8, 4], [4, 2]",
                                           "gemm<float, 128><br>10.0 us"]
    assert list(matmul.base) == [0.01, 0.015, 0.11, 0.03, 0.035] and list(matmul.x) == [0.04, 0.03, 0.01, 0.01, 0.015]
    assert list(fig.layout.yaxis.categoryarray) == [  # bottom to top: CPU rows above the GPU's
        "GPU 0 stream 8", "GPU 0 stream 7", "GPU 0 steps", "CPU thread 1 +3", "CPU thread 1 +2", "CPU thread 1 +1",
        "CPU thread 1"]
    assert fig.layout.barmode == "overlay"  # nested events are drawn in rows of their own, not stacked


def test_a_real_h200_trace_counts_every_kernel_and_its_one_stream_busy_time():
    raw = json.loads(gzip.decompress(H200_TRACE.read_bytes()))
    gpu = [e for e in raw["traceEvents"] if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    assert {(e["pid"], e["tid"]) for e in gpu} == {(0, 7)}  # one stream: busy time is the sum of durations
    frame = events(load_trace(H200_TRACE))
    summary = gpu_summary(frame).set_index("figure")["value"]
    kernels = sum(e["cat"] == "kernel" for e in gpu)
    assert summary["kernels launched"] == str(kernels) == "144"
    assert float(summary["GPU busy (ms)"]) == pytest.approx(sum(e["dur"] for e in gpu) / 1e3, rel=1e-3)
    assert summary["bound by"].startswith("CPU")  # a batch of 8 through a small CNN: launches dominate
    assert step_times(frame)["step"].tolist() == [2, 3, 4]
    page = trace_page(H200_TRACE, "h200")
    assert "devices: NVIDIA H200." in page and "<h2>GPU busy and idle</h2>" in page


def test_a_profiled_cpu_case_gets_a_page_the_report_links(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    profile_case(Case("cnn", "fwd", "fp32", 2), torch.device("cpu"), run_dir.trace_dir("cnn-fwd-fp32-b2"),
                 active_steps=2)
    pd.DataFrame({"category": ["matmul/conv"], "share": [1.0]}).to_csv(run_dir.breakdown_csv("cnn-fwd-fp32-b2"),
                                                                       index=False)
    (run_dir.traces_dir / "a-failed-case").mkdir()  # a case whose profiling failed (sorted first): no page
    assert write_trace_pages(run_dir) == {"cnn-fwd-fp32-b2": run_dir.trace_page("cnn-fwd-fp32-b2")}
    page = run_dir.trace_page("cnn-fwd-fp32-b2").read_text()
    assert "<h2>GPU busy and idle</h2>" not in page and "<h2>Top kernels" not in page
    assert "aten::conv2d" in page and ">matmul/conv</td>" in page and "devices: CPU only" in page
    assert "<script src=" not in page and "https://" not in page.split("<script")[0]  # plotly.js inlined


def test_the_newest_trace_of_a_case_is_the_one_drawn(tmp_path):
    old, new = tmp_path / "c.9.pt.trace.json", tmp_path / "c.1.pt.trace.json.gz"  # names sort the other way
    old.write_text("{}")
    new.write_bytes(gzip.compress(b"{}"))
    os.utime(old, (1_000_000, 1_000_000))
    assert trace_file(tmp_path) == new and load_trace(new) == {}
    assert trace_file(tmp_path / "none") is None


def test_a_trace_page_draws_its_timeline_and_tables_in_chromium_with_no_request_leaving(open_offline, tmp_path):
    path = tmp_path / "index.html"
    path.write_text(trace_page(H200_TRACE, "h200"))
    page, requests, errors = open_offline(path)
    page.wait_for_selector(".plotly .barlayer .point", timeout=30_000)
    frame = events(load_trace(H200_TRACE))
    assert page.locator(".barlayer .point").count() == len(frame)  # a bar per event
    assert page.locator("h2").all_inner_texts()[:3] == ["Timeline", "GPU busy and idle", "Step time"]
    tables = page.locator("table")  # GPU, steps, operators, kernels (no breakdown was given)
    assert tables.count() == 4 and tables.nth(3).locator("tbody tr").count() == frame["name"][
        frame["cat"].isin(GPU_WORK)].nunique() == 15  # 14 kernels and a copy: all named (fewer than 20)
    page.mouse.move(*_centre(page.locator(".barlayer .point").last))
    page.wait_for_selector(".hoverlayer .hovertext", timeout=10_000)  # hover names the event
    assert requests == [path.as_uri()] and errors == []


def test_report_html_opens_offline_and_links_each_trace_page(open_offline, tmp_path):
    run_dir = RunDir(tmp_path / "run")
    case_id = "cnn-fwd-fp32-b2"
    profile_case(Case("cnn", "fwd", "fp32", 2), torch.device("cpu"), run_dir.trace_dir(case_id), active_steps=1)
    results = pd.DataFrame([{"run_id": "run", "case_id": case_id, "model": "cnn", "phase": "fwd", "precision": "fp32",
                             "batch": 2, "attention": None, "status": "ok", "device": "cpu",
                             "device_name": "cpu"}])
    results.to_csv(run_dir.results_csv, index=False)
    page, requests, errors = open_offline(write_report(run_dir.path))
    link = page.locator(f"a[href='traces/{case_id}/index.html']")
    assert link.inner_text() == case_id
    link.click()
    page.wait_for_selector(".plotly .barlayer .point", timeout=30_000)
    assert page.url == run_dir.trace_page(case_id).as_uri()
    assert all(url.startswith("file://") for url in requests) and errors == []
    assert requests[0] == run_dir.report_html.as_uri() and len(requests) == 2  # report, then the page


def _centre(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
