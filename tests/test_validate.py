"""python -m bench validate: the CPU rehearsal of the GPU run passes every stage and writes every table;
bad input is refused in one line; the kernel check and the tables work on their own."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.__main__ import main
from bench.machine import validate
from bench.sweep.attention import TRITON_BACKWARDS
from bench.sweep.precision import emulated

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate") / "out"
    stages = ",".join(stage for stage in validate.STAGES if stage != "trust")  # trust: its own test, shorter
    done = subprocess.run([sys.executable, "-m", "bench", "validate", "--device", "cpu", "--size", "quick",
                           "--stages", stages, "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    return out, done


@pytest.mark.e2e
def test_rehearsal_passes_every_stage(rehearsal):
    out, done = rehearsal
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "validate.md").read_text()
    for stage in validate.STAGES[:-1]:
        assert f"| {stage}" in summary
    assert "failed" not in summary
    assert "environment: ok" in (out / "validate.log").read_text()


@pytest.mark.e2e
def test_rehearsal_collects_the_gpu_tests_and_skips_each(rehearsal):
    log = (rehearsal[0] / "validate.log").read_text()
    tests = next(line for line in log.splitlines() if " tests: ok " in line)
    count = int(tests.split(": ")[-1].split()[0])
    assert count >= 70 and tests.endswith(f"{count} tests, 0 failures, 0 errors, {count} skipped")


@pytest.mark.e2e
def test_rehearsal_times_each_matmul_from_the_host(rehearsal):
    timers = pd.read_csv(rehearsal[0] / "timers.csv")
    assert len(timers) == len(validate.TIMER_SIZES["cpu"])
    assert (timers["harness_ms"] > 0).all() and (timers["rounds"] >= 5).all()
    assert timers["harness_ms"].is_monotonic_increasing  # 128^3, 512^3, 1536^3 FLOPs take longer in turn


@pytest.mark.e2e
def test_rehearsal_tables_every_implementation_and_shape(rehearsal):
    kernel = pd.read_csv(rehearsal[0] / "kernel.csv")
    shapes = validate.KERNEL_SHAPES["quick"]
    assert len(kernel) == len(shapes["seqlens"]) * len(shapes["head_dims"]) * 2 * len(validate.KERNEL_IMPLS)
    triton = kernel[kernel["impl"].isin(TRITON_BACKWARDS)]
    assert len(triton) == len(kernel) * 2 // len(validate.KERNEL_IMPLS)
    assert (triton["status"] == "skipped").all() and triton["reason"].str.contains("needs a CUDA GPU").all()
    math_rows = kernel[kernel["impl"] == "sdpa_math"]
    assert (math_rows["status"] == "ok").all() and (math_rows[["fwd_tflops", "bwd_tflops"]] > 0).all().all()
    assert (kernel["batch"] * kernel["seqlen"] == shapes["tokens"]).all()
    assert "### fwd TFLOP/s" in (rehearsal[0] / "kernel.md").read_text()


@pytest.mark.e2e
def test_rehearsal_runs_the_sweep_the_aa_gate_and_the_profile(rehearsal):
    out = rehearsal[0]
    sweep = pd.read_csv(out / "runs" / "sweep" / "results.csv")
    assert len(sweep) == 4 and (sweep["status"] == "ok").all()  # cnn, encoder x fwd, fwdbwd
    assert (out / "runs" / "sweep" / "summary.md").exists()
    aa = json.loads((out / "aa.json").read_text())
    gate_table = (out / "gate.md").read_text()
    timed = 4 if emulated(torch.float16, torch.device("cpu")) else 8  # a CPU emulating fp16 times bf16 only
    assert "archbench gate: aa-2 vs aa-1" in gate_table and gate_table.count("| `attn-") == timed
    # the exit code says what the table says: 1 exactly when a case is slower (an A/A pair on this CPU may drift)
    assert aa["cases"] == timed and aa["gate_exit"] == (1 if "| slower |" in gate_table else 0)
    traces = sorted((out / "runs" / "profile" / "traces").iterdir())
    assert [t.name for t in traces] == ["cnn-fwdbwd-fp32-b2", "encoder-fwdbwd-fp32-b2-sdpa"]
    assert all((t / "index.html").stat().st_size > 1_000_000 for t in traces)  # a page each, plotly.js inlined
    assert "<a href='traces/cnn-fwdbwd-fp32-b2/index.html'>" in (out / "runs" / "profile" / "report.html").read_text()


def test_validate_refuses_a_folder_with_results_in_it(tmp_path, capsys):
    (tmp_path / "old.csv").write_text("x")
    assert main(["validate", "--device", "cpu", "--out", str(tmp_path)]) == 2
    message = f"error: --out {tmp_path}: not empty; validate writes into a new or empty folder\n"
    assert capsys.readouterr().err == message
    assert [p.name for p in tmp_path.iterdir()] == ["old.csv"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--stages", "kernel,bogus"], "error: --stages: unknown name 'bogus'; valid names: environment, tests, "
                                   "timers, kernel, sweep, gate, profile, trust (or all)\n"),
    (["--size", "huge"], "error: --size: unknown value 'huge'; valid values: quick, full\n"),
])
def test_validate_refuses_bad_options_in_one_line(tmp_path, capsys, argv, message):
    assert main(["validate", "--device", "cpu", "--out", str(tmp_path / "v"), *argv]) == 2
    assert capsys.readouterr().err == message
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("impl", TRITON_BACKWARDS)
def test_check_triton_measures_the_kernel_against_float64(impl):
    good = validate.check_triton(torch.device("cpu"), torch.float32, 32, True, 40, impl)  # a ragged tail
    bad = validate.check_triton(torch.device("cpu"), torch.float32, 300, False, 16, impl)
    assert good["finite"] and good["impl"] == impl
    assert max(good[f"err_{k}"] for k in ("out", "dq", "dk", "dv")) < 1e-5
    assert not bad["finite"] and bad["error"].startswith("ValueError: head_dim 300 is not supported")


def test_kernel_tables_set_the_kernel_against_the_best_sdpa_backend():
    frame = pd.DataFrame([
        {"impl": impl, "causal": False, "head_dim": 64, "seqlen": 1024, "status": "ok", "fwd_tflops": fwd,
         "bwd_tflops": bwd}
        for impl, fwd, bwd in (("triton", 300.0, 100.0), ("triton_1pass", 300.0, 120.0), ("sdpa_flash", 400.0, 50.0),
                               ("sdpa_math", 100.0, 80.0))
    ] + [{"impl": "sdpa_cudnn", "causal": False, "head_dim": 64, "seqlen": 1024, "status": "oom"}])
    tables = validate.kernel_tables(frame)
    (fwd,), (bwd,) = (tables[phase].to_dict("records") for phase in ("fwd", "bwd"))
    assert (fwd["best_sdpa"], fwd["triton_vs_best"], fwd["triton"]) == ("sdpa_flash", 0.75, 300.0)
    assert (bwd["best_sdpa"], bwd["triton_vs_best"], bwd["triton_1pass_vs_best"]) == ("sdpa_math", 1.25, 1.5)
    assert "sdpa_cudnn" not in fwd
    assert validate.kernel_tables(frame.assign(status="oom")) == {}


@pytest.mark.e2e
def test_the_trust_stage_rehearses_ab_pairs_with_a_slowed_side_and_tables_each_case(tmp_path, monkeypatch):
    """One run of two pairs (the CPU rehearsal's shortest): side A times the three cases, side B each as is
    and slowed by 5 %; every comparison is judged and each case tabled."""
    monkeypatch.setitem(validate.TRUST, "quick", {"runs": 1, "pairs": 2})
    assert validate.run(tmp_path / "v", torch.device("cpu"), "quick", ["trust"]) == 0
    ids = [case.id for case in validate.TRUST_CASES["quick"]]
    medians = pd.read_csv(tmp_path / "v" / "trust_medians.csv")
    assert medians.groupby("side")["case"].agg(lambda c: sorted(set(c))).to_dict() == {
        "A": sorted(ids), "B": sorted(ids + [i + "-slow5" for i in ids])}
    assert len(medians) == 2 * (3 + 6) and medians["host_s"].gt(0).all() and medians["device_s"].isna().all()
    verdicts = pd.read_csv(tmp_path / "v" / "trust_verdicts.csv")
    assert sorted(verdicts.groupby("kind")["case"].agg(sorted).to_dict().items()) == [("A/A", sorted(ids)),
                                                                                     ("slowed", sorted(ids))]
    assert set(verdicts["metric"]) == {"host"}  # a CPU has no device time of its own
    table = pd.read_csv(tmp_path / "v" / "trust.csv")
    assert list(table["case"]) == ids and set(table["device_method"]) == {"host"} and set(table["bound"]) == {"cpu"}
    assert (table["runs"] == 1).all() and table["aa_spread_host_pct"].gt(0).all()
    assert "## Trust: ab's false alarms and catches" in (tmp_path / "v" / "validate.md").read_text()


def test_trust_counts_false_alarms_and_catches_on_device_time_per_run():
    """Synthetic process medians: device time 1 % noisy, host time 30 % (a host-bound case); B's slowed copy
    5 % slower on the device only. Ten runs of four pairs, judged with ab's defaults."""
    rng = np.random.default_rng(0)
    rows = []
    for run in range(10):
        for pair in range(4):
            for side, case, factor in (("A", "c", 1.0), ("B", "c", 1.0), ("B", "c-slow5", 1.05)):
                device = factor * np.exp(rng.normal(0, 0.01))
                rows.append({"round": f"run{run}", "pair": pair, "side": side, "case": case, "device_s": device,
                             "device_method": "graph", "host_s": 3 * np.exp(rng.normal(0, 0.3))})
    medians = pd.DataFrame(rows)
    verdicts = validate.trust_verdicts(medians, ["c"])
    table = validate.trust_table(medians, verdicts, {"c": {"bound": "host", "device_method": "graph"}}, ["c"])
    row = table.iloc[0]
    assert (row["runs"], row["aa_false_alarms"], row["bound"], row["device_method"]) == (10, 0, "host", "graph")
    assert row["slowed_caught"] >= 9 and set(verdicts["metric"]) == {"device"}
    assert row["slowdown_measured_pct"] == pytest.approx(5, abs=1)
    assert row["aa_spread_device_pct"] == pytest.approx(1.4, abs=0.5)  # sqrt(2) x 1 %
    assert row["aa_spread_host_pct"] == pytest.approx(42, abs=12)
