"""The report, from a small fixture run on disk: tables recomputed from raw rounds, speed-ups, files."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.results.row import Row
from bench.results.rundir import RunDir, RunWriter
from bench.views.report import (
    Section,
    _figure_grid,
    _markdown,
    amp_speedups,
    attention_speedups,
    health_sections,
    instruction_sections,
    memory_sections,
    plot_attention,
    plot_breakdowns,
    plot_by_batch,
    profile_breakdowns,
    profile_sections,
    recompute,
    render,
    throughput_sections,
    throughput_tables,
    write_report,
)

# case id -> raw rounds; the medians are 12, 25, 6, 20, 10, 4 and 1 ms. The b16 rounds are unsorted and even
# in number: their median is 25 ms, which neither the middle element nor the middle pair of the list gives.
ROUNDS = {
    "cnn-fwd-fp32-b8": [0.010, 0.011, 0.012, 0.013, 0.100],
    "cnn-fwd-fp32-b16": [0.040, 0.010, 0.020, 0.030],
    "cnn-fwd-amp_bf16-b8": [0.005, 0.006, 0.006, 0.007, 0.050],
    "encoder-fwd-fp32-b4-naive": [0.019, 0.020, 0.021],
    "encoder-fwd-fp32-b4-sdpa": [0.009, 0.010, 0.011],
    "attn-fwd-bf16-causal-d64-s128-naive": [0.004, 0.004, 0.004],
    "attn-fwd-bf16-causal-d64-s128-sdpa": [0.001, 0.001, 0.001],
}

# CPU time stolen while timed: above the report's 5 %, exactly at it, and (every other case) not read.
STEAL_PCT = {"encoder-fwd-fp32-b4-sdpa": 12.5, "cnn-fwd-fp32-b8": 5.0}


def case_row(case_id: str) -> dict:
    parts = case_id.split("-")
    if parts[0] == "attn":
        return {"case_id": case_id, "kind": "attention", "model": None, "phase": parts[1], "precision": parts[2],
                "batch": 2, "attention": parts[-1], "seqlen": 128, "head_dim": 64, "heads": 4, "causal": True,
                "flops": 4e9, "batch_tokens": 256}
    return {"case_id": case_id, "kind": "model", "model": parts[0], "phase": parts[1], "precision": parts[2],
            "batch": int(parts[3][1:]), "attention": parts[4] if len(parts) > 4 else None, "flops": 1e9,
            "batch_tokens": 256 if parts[0] == "encoder" else None}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "fixture-run"
    run.mkdir()
    rows = [{**case_row(case), "status": "ok", "median_s": 999.0, "device_name": "Test CPU", "peak_mem_bytes": 1e6,
             "torch": "2.14.1", "cpu_steal_pct": STEAL_PCT.get(case)} for case in ROUNDS]
    rows.append({**case_row("encoder-fwd-fp32-b4-naive"), "case_id": "encoder-fwd-fp32-b4-triton",
                 "attention": "triton", "status": "skipped", "reason": "triton needs a CUDA GPU"})
    rows.append({**case_row("cnn-fwd-fp32-b8"), "case_id": "cnn-fwd-fp32-b4096", "batch": 4096, "status": "oom",
                 "reason": "OutOfMemoryError: CUDA out of memory"})
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    benchmarks = [{"fullname": f"bench/test_x.py::test_x[{case}]", "stats": {"data": data}}
                  for case, data in ROUNDS.items()]
    (run / "benchmark.json").write_text(json.dumps({"benchmarks": benchmarks}))
    (run / "calibration.json").write_text(json.dumps({"matmul_tflops": {"fp32": 1.0, "bf16": 2.0}}))
    trace = run / "traces" / "encoder-fwd-fp32-b4-sdpa"
    trace.mkdir(parents=True)
    pd.DataFrame({"category": ["attention", "matmul/conv"], "self_us": [30.0, 70.0], "share": [0.3, 0.7]}).to_csv(
        trace / "breakdown.csv", index=False)
    return run


def table_after(markdown: str, heading: str) -> list[str]:
    """The markdown table rows under a heading, header and rule left out."""
    block = markdown.split(f"## {heading}\n\n", 1)[1].split("\n\n", 1)[0]
    return block.splitlines()[2:]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_throughput_is_recomputed_from_the_raw_rounds(run_dir):
    write_report(str(run_dir))
    markdown = (run_dir / "summary.md").read_text()
    rows = {tuple(cells(r)[:2]): cells(r)[2:] for r in table_after(markdown, "Throughput: cnn (samples/s)")}
    assert float(rows[("fwd", "fp32")][0]) == pytest.approx(8 / 0.012, rel=1e-3)  # not the CSV's 999 s median
    assert float(rows[("fwd", "fp32")][2]) == pytest.approx(16 / 0.025, rel=1e-3)
    assert float(rows[("fwd", "amp_bf16")][0]) == pytest.approx(8 / 0.006, rel=1e-3)
    assert "every figure recomputed from its 26 raw rounds" in markdown


def test_recompute_derives_every_figure_of_the_ok_rows_it_has_rounds_for():
    results = pd.DataFrame([  # a skipped row first: it must not stop the loop nor use the rounds it has
        {"case_id": "skipped", "status": "skipped", "batch": 2, "precision": "fp32", "median_s": np.nan},
        {"case_id": "no-rounds", "status": "ok", "batch": 4, "precision": "fp32", "median_s": 0.5, "iqr_s": 0.0,
         "samples_per_s": 8.0},
        {"case_id": "ok", "status": "ok", "batch": 8, "precision": "amp_bf16", "batch_tokens": 800, "flops": 4e9,
         "median_s": 999.0, "iqr_s": 0.0},
    ])
    rounds = {"skipped": np.array([1.0, 2.0]), "ok": np.array([0.030, 0.010, 0.020, 0.040])}
    out = recompute(results, rounds, {"matmul_tflops": {"bf16": 2.0, "fp32": 1.0}}).set_index("case_id")
    ok = out.loc["ok"]
    assert (ok["median_s"], ok["iqr_s"], ok["min_s"], ok["rounds"]) == pytest.approx((0.025, 0.015, 0.010, 4))
    assert ok["samples_per_s"] == pytest.approx(8 / 0.025) and ok["tokens_per_s"] == pytest.approx(800 / 0.025)
    assert ok["tflops"] == pytest.approx(0.16) and ok["pct_of_peak"] == pytest.approx(8.0)  # of bf16's 2 TFLOP/s
    assert ok["median_ms"] == pytest.approx(25.0) and ok["noisy"]
    assert np.isnan(out.loc["skipped", "median_s"])
    assert (out.loc["no-rounds", "samples_per_s"], out.loc["no-rounds", "median_ms"]) == (8.0, 500.0)
    assert not out.loc["no-rounds", "noisy"]


def test_amp_and_attention_speedups(run_dir):
    write_report(str(run_dir))
    markdown = (run_dir / "summary.md").read_text()
    amp = [cells(r) for r in table_after(markdown, "AMP speed-up over fp32")]
    assert len(amp) == 1 and amp[0][0] == "cnn" and float(amp[0][-1]) == pytest.approx(2.0)
    heading = "Attention implementations: time, TFLOP/s and speed-up over naive"
    attention = [cells(r) for r in table_after(markdown, heading)]
    speedups = {(r[0], r[1], r[9]): float(r[-1]) for r in attention}  # r[8]: the mode
    assert speedups == {("model", "encoder", "naive"): 1.0, ("model", "encoder", "sdpa"): pytest.approx(2.0),
                        ("attention", "", "naive"): 1.0, ("attention", "", "sdpa"): pytest.approx(4.0)}
    tflops = {(r[0], r[1], r[9]): float(r[11]) for r in attention}
    assert tflops[("attention", "", "sdpa")] == pytest.approx(4e9 / 0.001 / 1e12)


def test_skipped_oom_noisy_and_profiled_cases_are_listed(run_dir):
    write_report(str(run_dir))
    markdown = (run_dir / "summary.md").read_text()
    not_ok = {cells(r)[0]: cells(r)[1:] for r in table_after(markdown, "Skipped, out-of-memory and failed cases")}
    assert not_ok == {"encoder-fwd-fp32-b4-triton": ["skipped", "triton needs a CUDA GPU"],
                      "cnn-fwd-fp32-b4096": ["oom", "OutOfMemoryError: CUDA out of memory"]}
    noisy_rows = {cells(r)[0]: [float(c) for c in cells(r)[1:]]
                  for r in table_after(markdown, "Noisy cases (IQR above 10% of the median)")}
    assert noisy_rows["cnn-fwd-fp32-b16"] == pytest.approx([25.0, 15.0, 4])  # median ms, IQR ms, rounds
    noisy = list(noisy_rows)
    # numpy quartiles: cnn IQRs are 2 of 12 ms, 15 of 25 ms and 1 of 6 ms; the encoder's 1 of 20 and 1 of 10 pass
    assert noisy == ["cnn-fwd-fp32-b8", "cnn-fwd-fp32-b16", "cnn-fwd-amp_bf16-b8"]
    breakdown = [cells(r) for r in table_after(markdown, "Profile breakdown (% of self time)")]
    assert breakdown == [["encoder-fwd-fp32-b4-sdpa", "30", "70"]]
    heading = "CPU time stolen (the hypervisor gave other guests over 5 % of it while timed)"
    assert [cells(r) for r in table_after(markdown, heading)] == [["encoder-fwd-fp32-b4-sdpa", "10", "12.5"]]


def test_html_is_self_contained_with_every_table_and_plot(run_dir):
    page = write_report(str(run_dir)).read_text()
    markdown = (run_dir / "summary.md").read_text()
    for heading in [line[3:] for line in markdown.splitlines() if line.startswith("## ")]:
        assert f"<h2>{heading}</h2>" in page.replace("&amp;", "&")
    plots = sorted(p.name for p in (run_dir / "plots").iterdir())
    assert plots == ["attention_tflops_vs_seqlen.png", "memory_vs_batch.png", "profile_breakdown.png",
                     "throughput_vs_batch.png"]
    assert page.count('src="data:image/png;base64,') == len(plots)
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def test_headline_figures_are_logged_as_tensorboard_scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_report(str(run_dir))
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "cnn-fwd-fp32-b8/samples_per_s" in tags and len(tags) == 3 * len(ROUNDS)
    (point,) = events.Scalars("cnn-fwd-fp32-b8/samples_per_s")
    assert point.value == pytest.approx(8 / np.median(ROUNDS["cnn-fwd-fp32-b8"]), rel=1e-5) and point.step == 0


def model_rows() -> pd.DataFrame:
    """Ok rows of two models, batches out of order, as recompute leaves them."""
    return pd.DataFrame([
        {"case_id": "cnn-fwd-fp32-b32", "kind": "model", "model": "cnn", "phase": "fwd", "precision": "fp32",
         "batch": 32, "attention": None, "samples_per_s": 300.0},
        {"case_id": "cnn-fwd-fp32-b8", "kind": "model", "model": "cnn", "phase": "fwd", "precision": "fp32",
         "batch": 8, "attention": None, "samples_per_s": 100.0},
        {"case_id": "encoder-fwd-fp32-b4-sdpa", "kind": "model", "model": "encoder", "phase": "fwd",
         "precision": "fp32", "batch": 4, "attention": "sdpa", "samples_per_s": 50.0},
        {"case_id": "attn-fwd-bf16-full-d64-s256-sdpa", "kind": "attention", "model": None, "phase": "fwd",
         "precision": "bf16", "batch": 2, "attention": "sdpa", "seqlen": 256, "head_dim": 64, "causal": False,
         "tflops": 2.0, "samples_per_s": 9.0},
        {"case_id": "attn-fwd-bf16-full-d64-s128-sdpa", "kind": "attention", "model": None, "phase": "fwd",
         "precision": "bf16", "batch": 2, "attention": "sdpa", "seqlen": 128, "head_dim": 64, "causal": False,
         "tflops": 1.0, "samples_per_s": 9.0},
        {"case_id": "attn-fwd-bf16-causal-d64-s128-naive", "kind": "attention", "model": None, "phase": "fwd",
         "precision": "bf16", "batch": 2, "attention": "naive", "seqlen": 128, "head_dim": 64, "causal": True,
         "tflops": 0.5, "samples_per_s": 9.0},
    ])


def lines_of(ax) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_throughput_plot_has_a_panel_per_model_and_a_line_per_config_over_sorted_batches():
    fig = plot_by_batch(model_rows(), "samples_per_s", "samples/s")
    cnn, encoder, *hidden = fig.axes
    assert [ax.get_title() for ax in (cnn, encoder)] == ["cnn", "encoder"] and not any(a.get_visible() for a in hidden)
    assert lines_of(cnn) == {"fwd fp32": ([8, 32], [100.0, 300.0])}
    assert lines_of(encoder) == {"fwd fp32 sdpa": ([4], [50.0])}
    assert (cnn.get_xscale(), [t.get_text() for t in cnn.get_xticklabels()]) == ("log", ["8", "32"])
    assert cnn.xaxis.get_transform().base == 2
    assert (cnn.get_xlabel(), cnn.get_ylabel()) == ("batch size", "samples/s")
    assert [t.get_text() for t in cnn.get_legend().get_texts()] == ["fwd fp32"]
    assert plot_by_batch(model_rows().query("kind == 'attention'"), "samples_per_s", "samples/s") is None


def test_attention_plot_has_a_panel_per_shape_and_a_line_per_implementation():
    fig = plot_attention(model_rows())
    full, causal, *hidden = fig.axes
    assert [ax.get_title() for ax in (full, causal)] == ["fwd bf16 full d64", "fwd bf16 causal d64"]
    assert lines_of(full) == {"sdpa": ([128, 256], [1.0, 2.0])} and lines_of(causal) == {"naive": ([128], [0.5])}
    assert (full.get_xlabel(), full.get_ylabel(), full.get_xscale()) == ("sequence length", "TFLOP/s", "log")
    assert [t.get_text() for t in full.get_xticklabels()] == ["128", "256"]
    assert not any(ax.get_visible() for ax in hidden)
    assert plot_attention(model_rows().query("kind == 'model'")) is None


def test_attention_panels_and_lines_keep_the_order_the_sweep_ran_them_in():
    rows = model_rows().query("kind == 'attention'")
    first = rows.iloc[[2, 0, 1]].copy()  # the causal panel first, then the full one
    first.iloc[0, first.columns.get_loc("attention")] = "sdpa"
    naive = first.iloc[[1]].assign(attention="naive", tflops=0.7)  # a second line in the full panel, after sdpa
    fig = plot_attention(pd.concat([first, naive]))
    causal, full, *_ = fig.axes
    assert [ax.get_title() for ax in (causal, full)] == ["fwd bf16 causal d64", "fwd bf16 full d64"]
    assert [t.get_text() for t in full.get_legend().get_texts()] == ["sdpa", "naive"]


def test_the_breakdown_plot_grows_half_an_inch_a_case():
    for cases in (2, 6):
        shares = pd.DataFrame({"attention": [0.5] * cases, "matmul/conv": [0.5] * cases},
                              index=[f"case{i}" for i in range(cases)])
        assert tuple(plot_breakdowns(shares).get_size_inches()) == pytest.approx((9, 0.5 * cases + 1.5))


def test_a_grid_of_five_panels_is_two_rows_of_four():
    fig, axes = _figure_grid(5)
    assert len(axes) == 8 and [ax.get_visible() for ax in axes] == [True] * 5 + [False] * 3
    assert tuple(fig.get_size_inches()) == pytest.approx((4 * 4.2, 2 * 3.2))


def test_breakdown_plot_stacks_each_case_s_shares_in_percent():
    breakdowns = pd.DataFrame({"attention": [0.25, 0.5], "matmul/conv": [0.75, 0.5]}, index=["a", "b"])
    ax = plot_breakdowns(breakdowns).axes[0]
    assert [p.get_width() for p in ax.patches] == pytest.approx([25.0, 50.0, 75.0, 50.0])
    assert [p.get_x() for p in ax.patches] == pytest.approx([0.0, 0.0, 25.0, 50.0])  # stacked
    assert ax.get_xlabel() == "% of profiled self time"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["attention", "matmul/conv"]
    assert plot_breakdowns(pd.DataFrame()) is None


def test_throughput_table_columns_are_batches_in_order_of_appearance():
    tables = throughput_tables(model_rows())
    assert list(tables) == ["cnn", "encoder"]
    assert list(tables["cnn"].columns) == ["b32 samples/s", "b32 +-%", "b8 samples/s", "b8 +-%"]
    assert tables["encoder"].loc[("fwd", "fp32 sdpa"), "b4 samples/s"] == 50.0


def test_no_amp_or_attention_rows_give_empty_tables():
    fp32_only = model_rows().query("kind == 'model' and attention.isna()")
    assert amp_speedups(fp32_only).empty and attention_speedups(fp32_only).empty


def model_case(model, phase, precision, batch, attention, samples_per_s):
    return {"kind": "model", "model": model, "phase": phase, "precision": precision, "batch": batch,
            "attention": attention, "samples_per_s": samples_per_s}


def test_throughput_tables_keep_the_sweeps_order_of_models_and_batches():
    ok = pd.DataFrame([model_case("resnet50", "fwd", "fp32", 64, None, 10.0),
                       model_case("resnet50", "fwd", "fp32", 8, None, 5.0),
                       model_case("cnn", "fwd", "fp32", 8, None, 1.0)])
    tables = throughput_tables(ok)
    assert list(tables) == ["resnet50", "cnn"]
    assert list(tables["resnet50"].columns) == ["b64 samples/s", "b64 +-%", "b8 samples/s", "b8 +-%"]


def test_amp_speedups_pair_each_case_with_its_own_fp32_case_only():
    ok = pd.DataFrame([
        model_case("cnn", "fwd", "fp32", 8, None, 100.0), model_case("cnn", "fwd", "amp_bf16", 8, None, 300.0),
        model_case("cnn", "fwd", "amp_bf16", 16, None, 500.0),  # no fp32 twin: left out
        *[model_case("encoder", "fwd", precision, 4, attn, speed)
          for precision, attn, speed in (("fp32", "naive", 10.0), ("fp32", "sdpa", 20.0),
                                         ("amp_bf16", "naive", 30.0), ("amp_bf16", "sdpa", 80.0))],
    ])
    amp = amp_speedups(ok)
    assert {(r.model, r.batch, r.attention): r.speedup_vs_fp32 for r in amp.itertuples()} == {
        ("cnn", 8, ""): 3.0, ("encoder", 4, "naive"): 3.0, ("encoder", 4, "sdpa"): 4.0}
    assert amp_speedups(ok[ok["precision"] == "fp32"]).empty


def test_attention_speedups_print_shapes_as_integers_as_read_from_a_csv():
    ok = pd.DataFrame([{"kind": "attention", "model": None, "phase": "fwd", "precision": "bf16", "batch": 2,
                        "seqlen": 128.0, "head_dim": 64.0, "causal": True, "attention": attn, "median_s": median,
                        "median_ms": median * 1e3, "tflops": 1.0} for attn, median in (("naive", 0.004),
                                                                                          ("sdpa", 0.001))])
    rows = attention_speedups(ok)
    assert list(rows["seqlen"]) == ["128", "128"] and list(rows["head_dim"]) == ["64", "64"]
    assert list(rows["speedup_vs_naive"]) == [1.0, 4.0]


def test_profile_breakdowns_give_a_missing_category_no_share(tmp_path):
    for case, categories in (("a", {"attention": 0.25, "matmul/conv": 0.75}), ("b", {"matmul/conv": 1.0})):
        trace = tmp_path / "traces" / case
        trace.mkdir(parents=True)
        pd.DataFrame({"category": list(categories), "share": list(categories.values())}).to_csv(
            trace / "breakdown.csv", index=False)
    frame = profile_breakdowns(tmp_path)
    assert frame.loc["b", "attention"] == 0.0 and frame.loc["a", "attention"] == 0.25


def test_the_environment_section_lists_each_field_with_its_value():
    frame = pd.DataFrame([{"case_id": "x", "status": "ok", "reason": "", "torch": "2.14.1", "driver": np.nan,
                           "cpu": "Xeon"}])
    ok = frame.assign(noisy=False, iqr_s=0.0, median_ms=1.0, rounds=5, cpu_steal_pct=np.nan, throttle=np.nan,
                      sm_clock_mhz=np.nan)
    (environment,) = [s for s in health_sections(frame, ok) if s.title == "Environment"]
    assert environment.table.to_dict("records") == [{"field": "torch", "value": "2.14.1"},
                                                    {"field": "driver", "value": ""},
                                                    {"field": "cpu", "value": "Xeon"}]


def test_markdown_tables_print_four_significant_digits_without_index():
    table = pd.DataFrame({"case": ["a", None], "median_ms": [1.234567, np.nan], "flops": [1234567.0, 2.0],
                          "noisy": [True, False]})
    markdown = _markdown(table)
    assert cells(markdown.splitlines()[0]) == ["case", "median_ms", "flops", "noisy"]  # no index column
    assert cells(markdown.splitlines()[2])[1:3] == ["1.235", "1.235e+06"]
    assert _markdown(table.iloc[0:0]) == "(none)"


def test_a_report_written_twice_says_the_runs_peaks_and_embeds_its_plots(run_dir):
    write_report(str(run_dir))
    write_report(str(run_dir))  # `python -m bench report` on a run that has its report already
    markdown = (run_dir / "summary.md").read_text()
    assert "Calibrated matmul peaks (TFLOP/s): fp32 1, bf16 2." in markdown
    (run_dir / "calibration.json").unlink()
    write_report(str(run_dir))
    assert "Calibrated matmul peaks (TFLOP/s): none." in (run_dir / "summary.md").read_text()
    assert 'src="data:image/png;base64,iVBORw0KGgo' in (run_dir / "report.html").read_text()  # a PNG, inline


def test_render_lays_out_tables_plots_and_empty_sections(tmp_path):
    plot = tmp_path / "p.png"
    plot.write_bytes(b"png")
    table = pd.DataFrame({"a": [1]})
    markdown, page = render("T", "intro", [Section("table", table), Section("plot", pd.DataFrame(), plot),
                                           Section("both", table, plot), Section("empty", pd.DataFrame())])
    assert markdown == ("# T\n\nintro\n\n## table\n\n|   a |\n|----:|\n|   1 |\n\n## plot\n\n![p](plots/p.png)\n\n"
                        "## both\n\n|   a |\n|----:|\n|   1 |\n\n![p](plots/p.png)\n\n## empty\n\n(none)\n\n")
    body = page.split("<body>")[1]
    assert body.count("<table") == 2 and body.count("<img") == 2 and body.count("<p class=note>(none)</p>") == 1
    assert "</table>\n<h2>plot</h2><img" in body and "<h2>empty</h2><p class=note>(none)</p></body>" in body


def test_render_lists_a_section_s_links_in_both_formats():
    links = (("c1", "traces/c1/index.html"), ("a<b", "traces/a'b/index.html"))
    sections = [Section("pages", pd.DataFrame(), links=links), Section("next", pd.DataFrame())]
    markdown, page = render("T", "intro", sections)
    assert markdown.endswith("## pages\n\n- [c1](traces/c1/index.html)\n- [a<b](traces/a'b/index.html)\n\n"
                             "## next\n\n(none)\n\n")
    assert ("<h2>pages</h2><ul><li><a href='traces/c1/index.html'>c1</a></li>"
            "<li><a href='traces/a&#x27;b/index.html'>a&lt;b</a></li></ul><h2>next</h2>") in page


def test_each_profiled_case_with_a_trace_gets_a_page_and_a_link(tmp_path):
    trace = tmp_path / "traces" / "c1"
    trace.mkdir(parents=True)
    (trace / "c1.1.pt.trace.json").write_text(json.dumps({"traceEvents": [
        {"ph": "X", "name": "aten::mm", "cat": "cpu_op", "pid": 1, "tid": 1, "ts": 0, "dur": 5}]}))
    breakdown, pages = profile_sections(RunDir(tmp_path), tmp_path)
    assert breakdown.table.empty and breakdown.title == "Profile breakdown (% of self time)"
    assert pages.title == "Trace pages (timeline, top operators and kernels; open offline)"
    assert pages.links == (("c1", "traces/c1/index.html"),) and pages.table.empty and pages.plot is None
    assert "aten::mm" in (trace / "index.html").read_text()


def test_throughput_plot_sits_under_the_last_table_and_memory_is_plotted_in_mib(monkeypatch, tmp_path):
    plotted = []
    monkeypatch.setattr("bench.views.report.plot_by_batch", lambda frame, value, label: plotted.append(
        (list(frame[value]), label)) or "figure")
    monkeypatch.setattr("bench.views.report._saved", lambda fig, path: path if fig else None)
    ok = pd.DataFrame([{**model_case(m, "fwd", "fp32", 8, None, 1.0), "peak_mem_bytes": 3 * 2**20}
                       for m in ("cnn", "resnet50")])
    sections = throughput_sections(ok, tmp_path)
    assert [s.plot for s in sections] == [None, tmp_path / "throughput_vs_batch.png"]
    (memory,) = memory_sections(ok, tmp_path)
    assert (memory.title, memory.plot) == ("Peak memory", tmp_path / "memory_vs_batch.png")
    assert plotted == [([1.0, 1.0], "samples/s"), ([3.0, 3.0], "peak memory (MiB)")]
    monkeypatch.setattr("bench.views.report._saved", lambda fig, path: None)  # nothing to plot: no section
    assert memory_sections(ok, tmp_path) == []


def test_profile_section_gives_percentages_per_case(tmp_path):
    trace = tmp_path / "traces" / "c1"
    trace.mkdir(parents=True)
    pd.DataFrame({"category": ["attention", "other"], "share": [0.12345, 0.87655]}).to_csv(
        trace / "breakdown.csv", index=False)
    (section,) = profile_sections(RunDir(tmp_path), tmp_path)  # no trace beside it: no page, no link
    assert section.table.to_dict("records") == [{"case": "c1", "attention": 12.3, "other": 87.7}]


def test_an_instruction_run_lists_each_case_s_count_and_a_timed_run_has_no_such_section():
    ok = pd.DataFrame({"case_id": ["a", "b", "c"], "instructions": [21_712_921.6, np.nan, 3.0]})
    section, = instruction_sections(ok)
    assert section.title == "Instructions per step (callgrind)"
    assert section.table.to_dict("list") == {"case_id": ["a", "c"], "instructions": [21_712_922, 3]}
    assert instruction_sections(ok.assign(instructions=np.nan)) == []
    assert instruction_sections(ok.drop(columns="instructions")) == []  # a results.csv from before the column


def test_a_gpu_run_s_report_marks_host_bound_cases_says_how_device_time_was_taken_and_flags_throttling(tmp_path):
    """Three GPU cases written as a sweep writes them: one launch-bound (device time a third of its step),
    one GPU-bound, one whose clocks were held down; the report recomputes device figures from the device
    rounds."""
    writer = RunWriter(RunDir.create(tmp_path, "gpu", given=True))
    cases = {"cnn-fwd-fp32-b8": ((0.003,) * 3, (0.001,) * 3, "graph", ""),
             "resnet50-fwd-fp32-b8": ((0.010,) * 3, (0.0095,) * 3, "profiler", ""),
             "vit_b_16-fwd-fp32-b8": ((0.020,) * 3, (0.019,) * 3, "graph", "sw power cap")}
    for case_id, (host, device, method, throttle) in cases.items():
        writer.add(Row(case_id, "model", "fwd", "fp32", 8, "cuda", model=case_id.split("-")[0], rounds_s=host,
                       device_rounds_s=device, device_method=method, flops=int(1e9), throttle=throttle,
                       sm_clock_mhz=1980.0 if not throttle else 1500.0))
    write_report(tmp_path / "gpu")
    markdown = (tmp_path / "gpu" / "summary.md").read_text()
    host_bound = [cells(line) for line in table_after(markdown, next(
        line[3:] for line in markdown.splitlines() if line.startswith("## Host-bound cases"))) if line]
    assert [row[0] for row in host_bound] == ["cnn-fwd-fp32-b8"]
    assert [float(x) for x in host_bound[0][1:5]] == pytest.approx([3.0, 1.0, 2.0, 100 / 3], rel=1e-3)
    device = {cells(line)[0]: cells(line) for line in table_after(markdown, next(
        line[3:] for line in markdown.splitlines() if line.startswith("## Device time per case")))}
    assert device["resnet50-fwd-fp32-b8"][-1] == "profiler"
    assert float(device["resnet50-fwd-fp32-b8"][-2]) == pytest.approx(1e9 / 0.0095 / 1e12, rel=1e-3)
    throttled = [cells(line) for line in table_after(markdown, next(
        line[3:] for line in markdown.splitlines() if line.startswith("## GPU clocks held down")))]
    assert throttled == [["vit_b_16-fwd-fp32-b8", "20", "1500", "sw power cap"]]


def test_a_cpu_run_has_no_device_sections(run_dir):
    write_report(str(run_dir))
    markdown = (run_dir / "summary.md").read_text()
    assert "## Host-bound cases" not in markdown and "## GPU clocks held down" not in markdown


@pytest.mark.e2e
def test_the_report_and_its_trace_pages_are_written_without_loading_torch(run_dir, bench_main_in_a_fresh_process):
    """The reading side never imports torch (seconds): a report, trace page included, from files alone."""
    trace = run_dir / "traces" / "encoder-fwd-fp32-b4-sdpa"
    shutil.copy(Path(__file__).parent / "data" / "h200-cnn-fwd-amp_bf16-b8.pt.trace.json.gz", trace)
    assert bench_main_in_a_fresh_process("report", str(run_dir)) == (False, 0)
    assert (trace / "index.html").is_file() and (run_dir / "report.html").is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))


def test_the_report_opens_with_what_the_run_found(run_dir):
    write_report(str(run_dir))
    markdown = (run_dir / "summary.md").read_text()
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## What this run found",
                            "## Fastest configuration per model and phase (95 % intervals; the speed-up over the "
                            "slowest bounded by their ends)"]
    found = markdown.split("## What this run found\n\n", 1)[1].split("\n\n", 1)[0]
    assert found.startswith("- 9 cases on Test CPU: 7 ok, 1 skipped, 1 oom.")
    assert "- amp_bf16 against fp32: 2x (median of 1 matched cases, 2-2x)\n" in found  # 12 ms in fp32, 6 in bf16
    assert "- sdpa in the models against naive: 2x (median of 1 matched cases, 2-2x)" in found
    assert "- sdpa in the micro-benchmark against naive: 4x (median of 1 matched cases, 4-4x)" in found
    assert "- Flag 'above peak': 1 cases" in found and "Calibrated matmul peaks (TFLOP/s)" in found
    fastest = {tuple(cells(r)[:2]): cells(r)[2:] for r in table_after(markdown, headings[1][3:])}
    cnn = fastest[("cnn", "fwd")]
    assert (cnn[0], cnn[3]) == ("amp_bf16 b8", "fp32 b16")  # 1,333 against 640 samples/s
    assert float(cnn[6]) == pytest.approx((0.025 / 16) / (0.006 / 8), rel=1e-3)
    low, high = float(cnn[7]), float(cnn[8])
    assert low < float(cnn[6]) < high  # from the two intervals' ends


def test_a_case_faster_than_its_calibrated_peak_is_flagged_never_above_100_percent(run_dir):
    write_report(str(run_dir))
    markdown = (run_dir / "summary.md").read_text()
    flagged = {cells(r)[0]: cells(r)[-1] for r in table_after(markdown, "Flagged cases")}
    assert "above peak" in flagged["attn-fwd-bf16-causal-d64-s128-sdpa"]  # 4 TFLOP/s against bf16's 2
    results = pd.read_csv(run_dir / "results.csv")
    rounds = {case: np.array(data) for case, data in ROUNDS.items()}
    out = recompute(results, rounds, {"matmul_tflops": {"fp32": 1.0, "bf16": 2.0}}).set_index("case_id")
    assert np.isnan(out.loc["attn-fwd-bf16-causal-d64-s128-sdpa", "pct_of_peak"])
    assert out.loc["attn-fwd-bf16-causal-d64-s128-naive", "pct_of_peak"] == pytest.approx(50.0)
    assert (out["pct_of_peak"].dropna() <= 100).all()


def test_throughput_tables_give_each_figure_its_interval(run_dir):
    write_report(str(run_dir))
    markdown = (run_dir / "summary.md").read_text()
    header = markdown.split("## Throughput: cnn (samples/s)\n\n", 1)[1].splitlines()[0]
    assert cells(header) == ["phase", "config", "b8 samples/s", "b8 +-%", "b16 samples/s", "b16 +-%"]


def test_the_headline_says_where_the_cases_time_went(run_dir):
    results = pd.read_csv(run_dir / "results.csv")
    costs = {"case_s": 2.0, "warmup_s": 0.25, "timed_s": 1.0, "build_s": 0.25, "flops_s": 0.125}
    results.assign(**{column: np.where(results["status"] == "ok", value, np.nan)
                      for column, value in costs.items()}).to_csv(run_dir / "results.csv", index=False)
    write_report(str(run_dir))
    found = (run_dir / "summary.md").read_text().split("## What this run found\n\n", 1)[1].split("\n\n", 1)[0]
    # seven ok cases: 14 s in all, 1.75 s warming up, 7 s timed, 1.75 s building, 0.875 s counting
    assert ("- 14 s in cases: warm-up 2 s, timed rounds 7 s, builds 2 s, FLOP counts 1 s, the rest (memory, "
            "recording, profiling) 3 s; outside warm-up and timing 5 s, 75% of the timed time.") in found


def test_a_run_from_before_the_cost_columns_says_nothing_of_them(run_dir):
    write_report(str(run_dir))
    assert "s in cases" not in (run_dir / "summary.md").read_text()
