"""compare: two small fixture runs from different machines, lined up, ratioed and normalised by peak."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.results.rundir import RunError
from bench.verdicts.compare import line_up, model_summary, plot_summary, write_comparison

ROOT = Path(__file__).resolve().parent.parent


def fixture_run(reports: Path, run_id: str, device: str, samples_per_s: dict[str, float], bf16_peak: float) -> Path:
    run = reports / run_id
    run.mkdir(parents=True)
    rows = [{"case_id": case, "kind": "model", "model": case.split("-")[0], "phase": "fwd", "precision": "amp_bf16",
             "batch": 8, "attention": None, "device_name": device, "status": "ok", "median_s": 8 / sps,
             "samples_per_s": sps}
            for case, sps in samples_per_s.items()]
    rows.append({"case_id": "vit_b_16-fwd-amp_bf16-b8", "kind": "model", "model": "vit_b_16", "precision": "amp_bf16",
                 "device_name": device, "status": "oom", "reason": "OutOfMemoryError"})
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    (run / "calibration.json").write_text(json.dumps({"matmul_tflops": {"bf16": bf16_peak, "fp32": 50.0}}))
    return run


@pytest.fixture
def two_runs(tmp_path):
    fixture_run(tmp_path, "h100", "NVIDIA H100", {"cnn-fwd-amp_bf16-b8": 1000.0, "resnet50-fwd-amp_bf16-b8": 200.0},
                bf16_peak=800.0)
    fixture_run(tmp_path, "h200", "NVIDIA H200",
                {"cnn-fwd-amp_bf16-b8": 1500.0, "resnet50-fwd-amp_bf16-b8": 300.0, "gru-fwd-amp_bf16-b8": 5.0},
                bf16_peak=1000.0)
    return tmp_path


def test_cases_line_up_with_ratios_against_the_first_run_and_per_peak(two_runs):
    lined, labels, missing = line_up(["h100", "h200"], reports_dir=two_runs)
    assert labels == ["h100 (NVIDIA H100)", "h200 (NVIDIA H200)"]
    assert list(lined["case_id"]) == ["cnn-fwd-amp_bf16-b8", "resnet50-fwd-amp_bf16-b8"]
    assert list(lined["x first | h200 (NVIDIA H200)"]) == pytest.approx([1.5, 1.5])
    assert list(lined["x first / peak | h200 (NVIDIA H200)"]) == pytest.approx([1.5 / 1.25, 1.5 / 1.25])
    assert list(lined["median_ms | h100 (NVIDIA H100)"]) == pytest.approx([8.0, 40.0])
    assert missing == ["gru-fwd-amp_bf16-b8", "vit_b_16-fwd-amp_bf16-b8"]


def test_comparison_files_are_written(two_runs):
    out = write_comparison(["h100", str(two_runs / "h200")], reports_dir=two_runs)
    assert out == two_runs / "compare-h100-h200"
    assert {p.name for p in out.iterdir()} == {"compare.md", "compare.html", "compare.png"}
    markdown = (out / "compare.md").read_text()
    blocks = markdown.split("\n\n")
    assert blocks[:3] == ["# archbench compare", "Runs: h100 (NVIDIA H100); h200 (NVIDIA H200). 2 cases ran ok in "
                          "every run. Ratios of device time (the GPU's own) for 0 cases, of host time for the rest; "
                          "0 cases host-bound in some run (the GPU busy under 80% of a step): their host times "
                          "compare the machines' CPUs, not GPUs.", "Geometric mean of the ratios per model:"]
    summary = blocks[3].splitlines()
    assert summary[0].split("|")[1].strip() == "model" and len(summary) == 4  # header, rule, cnn, resnet50
    assert "x first \\| h200 (NVIDIA H200)" in summary[0]
    for table in (blocks[3], blocks[5]):  # a header cell's own | is escaped: it splits where the rows do
        assert len({len(re.split(r"(?<!\\)\|", line)) for line in table.splitlines()}) == 1
    assert [c.strip() for c in summary[2].split("|")[1:-1]] == ["cnn", "1", "1", "1.5", "1.2"]
    assert blocks[4] == "Every case:" and "| cnn-fwd-amp_bf16-b8      |" in blocks[5]
    assert blocks[6:] == ["Missing or not ok in some run: gru-fwd-amp_bf16-b8, vit_b_16-fwd-amp_bf16-b8",
                          "![throughput ratios](compare.png)\n"]
    page = (out / "compare.html").read_text()
    assert page.index("<h2>Geometric mean of the ratios per model</h2>") < page.index("<h2>Every case</h2>")
    assert page.count("<table") == 2 and "<td>1.5</td>" in page and "<td>0</td>" not in page  # no index column
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_a_comparison_is_regenerated_in_place_and_its_folder_made_where_asked(two_runs, tmp_path):
    runs = [str(two_runs / "h100"), str(two_runs / "h200")]
    elsewhere = tmp_path / "new" / "reports"
    assert write_comparison(runs, reports_dir=elsewhere) == elsewhere / "compare-h100-h200"
    assert write_comparison(runs, reports_dir=elsewhere) == elsewhere / "compare-h100-h200"  # again: same place
    (two_runs / "h100").rename(two_runs / "my run")
    assert write_comparison([str(two_runs / "my run"), runs[1]], reports_dir=elsewhere).name == "compare-my_run-h200"


def test_the_plot_shows_the_summary_a_bar_per_run_and_model(two_runs):
    lined, labels, _ = line_up(["h100", "h200"], reports_dir=two_runs)
    summary = model_summary(lined, labels)
    fig = plot_summary(summary, labels)
    raw, per_peak = fig.axes
    for ax, what in ((raw, "x first"), (per_peak, "x first / peak")):
        heights = [patch.get_height() for patch in ax.patches]
        assert heights == pytest.approx([*summary[f"{what} | {labels[0]}"], *summary[f"{what} | {labels[1]}"]])
        lefts = [patch.get_x() + patch.get_width() / 2 for patch in ax.patches]
        assert lefts == pytest.approx([0.0, 1.0, 0.4, 1.4])  # runs side by side within each model
        assert [t.get_text() for t in ax.get_xticklabels()] == ["cnn", "resnet50"]
        assert [t.get_position()[0] for t in ax.get_xticklabels()] == pytest.approx([0.2, 1.2])
        assert ax.get_ylabel() == "ratio (geometric mean over cases)"
        assert [tuple(line.get_ydata()) for line in ax.get_lines()] == [(1.0, 1.0)]  # the line at 1
    assert raw.get_title() == "throughput vs first run"
    assert per_peak.get_title() == "throughput vs first run / peak ratio"
    assert [t.get_text() for t in raw.get_legend().get_texts()] == labels and per_peak.get_legend() is None


@pytest.mark.parametrize(("runs", "message"), [
    (["h100"], "compare needs at least two runs"),
    (["h100", "h100"], "compare got the same run twice"),
    (["h100", "nowhere"], "nowhere: no such run folder"),
])
def test_bad_run_lists_are_refused(two_runs, runs, message):
    with pytest.raises(RunError, match=f"^{message}"):
        line_up(runs, reports_dir=two_runs)


def test_runs_with_nothing_in_common_are_refused(two_runs):
    fixture_run(two_runs, "other", "CPU", {"lstm-fwd-amp_bf16-b8": 10.0}, bf16_peak=1.0)
    with pytest.raises(RunError, match="^the runs share no case that ran ok in all of them: nothing to compare$"):
        line_up(["h100", "other"], reports_dir=two_runs)


def test_cases_missing_from_a_later_run_are_listed_and_figures_kept(two_runs):
    fixture_run(two_runs, "short", "NVIDIA L4", {"cnn-fwd-amp_bf16-b8": 500.0}, bf16_peak=100.0)
    lined, labels, missing = line_up(["h100", "short"], reports_dir=two_runs)
    assert labels[1] == "short (NVIDIA L4)"
    assert missing == ["resnet50-fwd-amp_bf16-b8", "vit_b_16-fwd-amp_bf16-b8"]  # the first run's, too
    assert list(lined["samples/s | short (NVIDIA L4)"]) == [500.0]


def test_a_run_without_a_device_name_is_labelled_with_a_question_mark(two_runs):
    run = two_runs / "anon"
    run.mkdir()
    pd.DataFrame([{"case_id": "cnn-fwd-amp_bf16-b8", "kind": "model", "model": "cnn", "phase": "fwd",
                   "precision": "amp_bf16", "batch": 8, "status": "ok", "median_s": 0.01, "samples_per_s": 800.0}]
                 ).to_csv(run / "results.csv", index=False)
    assert line_up(["h100", "anon"], reports_dir=two_runs)[1][1] == "anon (?)"


def test_the_micro_benchmark_is_one_group_of_the_summary(tmp_path):
    for run, sps in (("a", 100.0), ("b", 300.0)):
        fixture_run(tmp_path, run, run.upper(), {"cnn-fwd-amp_bf16-b8": sps}, bf16_peak=1.0)
        frame = pd.read_csv(tmp_path / run / "results.csv")
        frame.loc[len(frame)] = {"case_id": "attn-fwd-bf16-full-d64-s128-sdpa", "kind": "attention",
                                 "precision": "bf16", "batch": 2, "device_name": run.upper(), "status": "ok",
                                 "median_s": 2 / (sps / 50), "samples_per_s": sps / 50}
        frame.to_csv(tmp_path / run / "results.csv", index=False)
    lined, labels, _ = line_up(["a", "b"], reports_dir=tmp_path)
    summary = model_summary(lined, labels)
    assert list(summary.index) == ["attention", "cnn"]
    assert list(summary["x first | b (B)"]) == pytest.approx([3.0, 3.0])


@pytest.mark.e2e
def test_an_empty_run_folder_is_refused(two_runs):
    (two_runs / "empty").mkdir()
    done = subprocess.run([sys.executable, "-m", "bench", "compare", str(two_runs / "h100"), str(two_runs / "empty")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("empty: not a run folder (no results.csv)")


def test_the_per_model_summary_is_the_geometric_mean_of_the_ratios(tmp_path):
    # resnet50's two cases run 1.5x and 6x faster on the second machine: geometric mean 3, arithmetic 3.75
    fixture_run(tmp_path, "a", "A", {"resnet50-fwd-amp_bf16-b8": 100.0, "resnet50-fwd-amp_bf16-b16": 100.0,
                                     "cnn-fwd-amp_bf16-b8": 100.0}, bf16_peak=100.0)
    fixture_run(tmp_path, "b", "B", {"resnet50-fwd-amp_bf16-b8": 150.0, "resnet50-fwd-amp_bf16-b16": 600.0,
                                     "cnn-fwd-amp_bf16-b8": 50.0}, bf16_peak=200.0)
    lined, labels, _ = line_up(["a", "b"], reports_dir=tmp_path)
    summary = model_summary(lined, labels)
    assert summary.loc["resnet50", "x first | b (B)"] == pytest.approx(3.0)
    assert summary.loc["resnet50", "x first / peak | b (B)"] == pytest.approx(1.5)
    assert summary.loc["cnn", "x first | b (B)"] == pytest.approx(0.5)
    assert list(summary.loc[:, "x first | a (A)"]) == pytest.approx([1.0, 1.0])


def test_names_keep_their_case_and_nothing_missing_adds_no_line(tmp_path):
    fixture_run(tmp_path, "H100", "NVIDIA H100", {"cnn-fwd-amp_bf16-b8": 100.0}, bf16_peak=1.0)
    fixture_run(tmp_path, "B200", "NVIDIA B200", {"cnn-fwd-amp_bf16-b8": 200.0}, bf16_peak=2.0)
    for run in ("H100", "B200"):  # only the shared case, so nothing is missing
        frame = pd.read_csv(tmp_path / run / "results.csv")
        frame[frame["status"] == "ok"].to_csv(tmp_path / run / "results.csv", index=False)
    out = write_comparison(["H100", "B200"], reports_dir=tmp_path)
    assert out.name == "compare-H100-B200"
    blocks = (out / "compare.md").read_text().split("\n\n")
    assert blocks[-1] == "![throughput ratios](compare.png)\n"
    assert not any(block.startswith("Missing") for block in blocks) and "" not in blocks
    assert (out / "compare.html").read_text().startswith("<html><head><meta charset='utf-8'><title>archbench compare")


def test_where_every_run_has_device_time_the_ratio_is_of_it_and_host_bound_cases_are_marked(two_runs):
    """A launch-bound case: the H200 run's host time 1.5x the H100's (its CPU), its device time 0.8x; a
    device time in one run only leaves the case on host time."""
    h200 = {"cnn-fwd-amp_bf16-b8": (0.0016, "host"), "resnet50-fwd-amp_bf16-b8": (0.02, "device")}
    for run, device in (("h100", {"cnn-fwd-amp_bf16-b8": (0.002, "host")}), ("h200", h200)):
        frame = pd.read_csv(two_runs / run / "results.csv")
        for case, (device_s, bound) in device.items():
            frame.loc[frame["case_id"] == case, ["device_s", "bound", "device_method"]] = [device_s, bound, "graph"]
        frame.to_csv(two_runs / run / "results.csv", index=False)
    lined, labels, _ = line_up(["h100", "h200"], reports_dir=two_runs)
    lined = lined.set_index("case_id")
    assert lined.loc["cnn-fwd-amp_bf16-b8", "time"] == "device"
    assert lined.loc["cnn-fwd-amp_bf16-b8", "x first | h200 (NVIDIA H200)"] == pytest.approx(0.002 / 0.0016)
    assert lined.loc["cnn-fwd-amp_bf16-b8", "device_ms | h100 (NVIDIA H100)"] == pytest.approx(2.0)
    assert lined.loc["resnet50-fwd-amp_bf16-b8", "time"] == "host"  # the H100 run has none
    assert lined.loc["resnet50-fwd-amp_bf16-b8", "x first | h200 (NVIDIA H200)"] == pytest.approx(1.5)
    assert lined["host-bound"].to_dict() == {"cnn-fwd-amp_bf16-b8": True, "resnet50-fwd-amp_bf16-b8": False}
    markdown = (write_comparison(["h100", "h200"], reports_dir=two_runs) / "compare.md").read_text()
    assert "device time (the GPU's own) for 1 cases, of host time for the rest; 1 cases host-bound" in markdown
    frame = pd.read_csv(two_runs / "h100" / "results.csv")  # the same case timed by the profiler there
    frame.loc[frame["case_id"] == "cnn-fwd-amp_bf16-b8", "device_method"] = "profiler"
    frame.to_csv(two_runs / "h100" / "results.csv", index=False)
    lined = line_up(["h100", "h200"], reports_dir=two_runs)[0].set_index("case_id")
    assert lined.loc["cnn-fwd-amp_bf16-b8", "time"] == "host"  # two methods: not one quantity
    assert lined.loc["cnn-fwd-amp_bf16-b8", "x first | h200 (NVIDIA H200)"] == pytest.approx(1.5)


@pytest.mark.e2e
def test_runs_are_compared_without_loading_torch(two_runs, bench_main_in_a_fresh_process):
    assert bench_main_in_a_fresh_process("compare", "h100", "h200", "--reports-dir", str(two_runs)) == (False, 0)
    assert (two_runs / "compare-h100-h200" / "compare.md").is_file()
