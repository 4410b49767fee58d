"""The row type: spread and rates derived from raw rounds by hand-checked arithmetic, and its CSV record."""

import math
from pathlib import Path

import pytest

from bench.results.row import COLUMNS, Row, rates, timing_stats
from bench.sweep.cases import AttentionCase, Case

# Unsorted, even in number and skewed: the median (3 ms) is neither the mean (4.25 ms) nor a middle element.
ROUNDS = (0.004, 0.001, 0.010, 0.002)


def test_timing_stats_of_unsorted_even_skewed_rounds():
    stats = timing_stats(ROUNDS)
    assert stats["median_s"] == pytest.approx(0.003)
    assert stats["mean_s"] == pytest.approx(0.00425)
    assert stats["min_s"] == 0.001
    # linear quartiles of 1, 2, 4, 10 ms: 1.75 and 5.5 ms
    assert stats["iqr_s"] == pytest.approx(0.00375)
    assert stats["stddev_s"] == pytest.approx(math.sqrt(48.75 / 3) * 1e-3)
    assert stats["rounds"] == 4


def test_two_rounds_have_a_sample_standard_deviation():
    assert timing_stats([0.001, 0.003])["stddev_s"] == pytest.approx(math.sqrt(2) * 1e-3)


def test_one_round_has_no_spread():
    assert timing_stats([0.5]) == {"median_s": 0.5, "iqr_s": 0.0, "min_s": 0.5, "mean_s": 0.5, "stddev_s": 0.0,
                                   "rounds": 1, "ci_low_s": 0.5, "ci_high_s": 0.5, "ci_halfwidth": 0.0}


def test_rates_at_the_median():
    figures = rates(0.003, batch=8, batch_tokens=512, flops=6e9, peak_tflops=4.0)
    assert figures == pytest.approx({"samples_per_s": 8 / 0.003, "tokens_per_s": 512 / 0.003, "tflops": 2.0,
                                     "pct_of_peak": 50.0})


@pytest.mark.parametrize(("tokens", "flops", "peak"), [(None, None, None), (float("nan"), float("nan"), 4.0),
                                                       (None, 6e9, None), (None, 6e9, 0.0)])
def test_rates_are_empty_where_a_figure_is_unknown(tokens, flops, peak):
    figures = rates(0.003, batch=8, batch_tokens=tokens, flops=flops, peak_tflops=peak)
    assert figures["tokens_per_s"] is None and figures["pct_of_peak"] is None
    assert figures["tflops"] == (None if flops is None or math.isnan(flops) else pytest.approx(2.0))


def test_row_derives_its_figures_from_its_rounds():
    row = Row("cnn-fwd-fp32-b8", "model", "fwd", "fp32", 8, "cpu", rounds_s=ROUNDS, flops=6e9, peak_tflops=4.0)
    assert row.figures["samples_per_s"] == pytest.approx(8 / 0.003)  # the median, not the mean
    assert row.figures["pct_of_peak"] == pytest.approx(50.0)
    assert Row("x", "model", "fwd", "fp32", 8, "cpu", status="oom").figures == {}


def test_rows_of_a_model_case_and_an_attention_case():
    model = Row.for_case(Case("encoder", "fwdbwd", "amp_bf16", 4, "sdpa"), "cpu", {"torch": "2.14.1"})
    assert (model.case_id, model.kind, model.model, model.attention, model.size) == (
        "encoder-fwdbwd-amp_bf16-b4-sdpa", "model", "encoder", "sdpa", "quick")
    assert model.seqlen is None and model.environment == {"torch": "2.14.1"}
    micro = Row.for_case(AttentionCase("naive", "fwd", "bf16", 128, 64, True, 2, 4), "cuda", {})
    assert (micro.kind, micro.model, micro.seqlen, micro.head_dim, micro.causal, micro.heads, micro.batch) == (
        "attention", None, 128, 64, True, 4, 2)


def test_record_has_every_column_in_order_and_no_raw_rounds():
    row = Row("cnn-fwd-fp32-b8", "model", "fwd", "fp32", 8, "cpu", model="cnn", rounds_s=ROUNDS, flops=6e9,
              environment={"torch": "2.14.1", "device_name": "Test CPU"})
    record = row.record("run-1", "2026-01-01T00:00:00")
    assert list(record) == COLUMNS
    assert (record["run_id"], record["timestamp"], record["torch"], record["device_name"]) == (
        "run-1", "2026-01-01T00:00:00", "2.14.1", "Test CPU")
    assert record["median_s"] == pytest.approx(0.003) and record["rounds"] == 4
    assert record["tflops"] == pytest.approx(2.0) and record["pct_of_peak"] is None
    assert "rounds_s" not in record and "environment" not in record


def test_but_changes_only_what_it_names():
    row = Row("x", "model", "fwd", "fp32", 8, "cpu")
    changed = row.but(status="error", reason="boom")
    assert (changed.status, changed.reason, row.status) == ("error", "boom", "ok")


def test_on_a_cpu_the_device_time_is_the_host_time_and_the_case_is_cpu_bound():
    row = Row("cnn-fwd-fp32-b8", "model", "fwd", "fp32", 8, "cpu", rounds_s=ROUNDS, flops=6e9, peak_tflops=4.0,
              device_method="host")
    assert row.figures["device_s"] == pytest.approx(0.003) and row.figures["host_overhead_s"] == 0.0
    assert row.figures["bound"] == "cpu"
    assert row.figures["device_tflops"] == pytest.approx(2.0) and row.figures["device_pct_of_peak"] == pytest.approx(50)


@pytest.mark.parametrize(("device_rounds", "bound"), [
    ((0.0025, 0.0026, 0.0024), "device"),  # the GPU busy 2.5 of the 3 ms: over 80 %
    ((0.0010, 0.0009, 0.0011), "host"),  # 1 of 3 ms: the other 2 ms are the host's
])
def test_a_gpu_row_s_device_time_is_its_device_rounds_median_and_says_what_bounds_the_step(device_rounds, bound):
    row = Row("x", "model", "fwd", "bf16", 8, "cuda", rounds_s=ROUNDS, flops=6e9, peak_tflops=4.0,
              device_rounds_s=device_rounds, device_method="graph")
    device_s = sorted(device_rounds)[1]
    assert row.figures["device_s"] == device_s and row.figures["bound"] == bound
    assert row.figures["host_overhead_s"] == pytest.approx(0.003 - device_s)
    assert row.figures["device_tflops"] == pytest.approx(6e9 / device_s / 1e12)
    assert row.figures["tflops"] == pytest.approx(2.0)  # end to end, beside it


def test_a_gpu_row_without_device_time_has_no_device_figures():
    row = Row("x", "model", "fwd", "bf16", 8, "cuda", rounds_s=ROUNDS, flops=6e9)
    assert not {"device_s", "host_overhead_s", "bound", "device_tflops"} & set(row.figures)
    assert row.record("r", "t")["bound"] is None


def test_every_column_of_results_csv_is_documented_in_reports_readme():
    readme = (Path(__file__).resolve().parent.parent / "reports" / "README.md").read_text()
    documented = {name.strip() for line in readme.splitlines() if line.startswith("| ")
                  for name in line.split("|")[1].split(",")}
    assert [column for column in COLUMNS if column not in documented] == []


def test_a_row_states_its_median_interval_and_whether_it_met_its_target():
    rounds = (0.0101, 0.0099, 0.0100, 0.01015, 0.00985, 0.0100, 0.0101, 0.0099)
    row = Row("c", "model", "fwd", "fp32", 1, "cpu", rounds_s=rounds, ci_target=0.02)
    figures = row.figures
    assert (figures["ci_low_s"], figures["ci_high_s"]) == (0.00985, 0.01015)  # ranks 1 and 8 of 8 (99.2 %)
    assert figures["ci_halfwidth"] == pytest.approx(0.015) and figures["converged"]
    assert row.but(ci_target=0.01).figures["converged"] is False
    assert row.but(ci_target=None).figures["converged"] is None  # fixed rounds: no target to meet
    assert row.but(rounds_s=rounds[:5]).figures["converged"] is False  # five rounds cannot state 95 %


@pytest.mark.parametrize(("changes", "flags"), [
    ({}, ""),
    ({"emulated": True}, "emulated"),
    ({"ci_target": 0.001, "rounds_s": (0.0101, 0.0099) * 4}, "not converged"),
    ({"rounds_s": (0.010, 0.010, 0.013, 0.013, 0.010, 0.013)}, "noisy; not converged"),
    ({"cpu_steal_pct": 7.5, "flops": 1e9, "peak_tflops": 0.05}, "CPU stolen; above peak"),
    ({"device": "cuda", "device_rounds_s": (0.005,), "throttle": "sw power cap"}, "host-bound; throttled"),
])
def test_a_row_flags_what_to_know_before_trusting_it(changes, flags):
    row = Row("c", "model", "fwd", "fp32", 1, "cpu", rounds_s=(0.010,) * 8, ci_target=0.02).but(**changes)
    assert row.figures["flags"] == flags


def test_a_row_faster_than_its_peak_has_no_percentage_above_100():
    row = Row("c", "model", "fwd", "fp32", 1, "cpu", rounds_s=(0.01,) * 6, flops=2e9, peak_tflops=0.1)
    assert row.figures["tflops"] == pytest.approx(0.2) and row.figures["pct_of_peak"] is None
    assert row.figures["flags"] == "above peak" and "above_peak" not in row.figures
