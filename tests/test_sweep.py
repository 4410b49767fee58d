"""The sweep as a user runs it, in a subprocess: option errors, reports/<run-id>/ files, skips."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--benchmark-max-time", "0.01", "--benchmark-min-rounds", "2"]


def run_bench(*args: str, path: str = "bench/test_models.py") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", path, "--benchmark-only", "-q", "-rs", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--models", "cnn,alexnet", "--models: unknown name 'alexnet'; valid names: cnn, lstm, gru, encoder, decoder, "
                                "resnet50, efficientnet_b0, convnext_tiny, vit_b_16 (or all)"),
    ("--run-id", "../x", "--run-id: '../x' must be letters, digits, '-', '_' or '.'"),
])
@pytest.mark.e2e
def test_bad_option_fails_at_once_with_one_line_naming_the_valid_choices(option, value, message):
    """A list option and a value option through pytest; test_options.py checks every option's message."""
    done = run_bench(option, value, "--collect-only", path="bench")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert done.stderr.strip().splitlines() == [f"ERROR: {message}"]


@pytest.mark.e2e
def test_sweep_writes_one_row_per_case_with_skips_and_raw_rounds(tmp_path):
    done = run_bench("--models", "cnn,encoder", "--phases", "fwd", "--precisions", "fp32", "--batch-sizes", "2",
                     "--attn", "naive,sdpa_cudnn,triton", "--reports-dir", str(tmp_path), "--run-id", "r1", *FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 cases (2 ok, 2 skipped) -> " in done.stdout
    assert f"report: {tmp_path / 'r1' / 'report.html'}" in done.stdout  # written at the end of the session
    assert (tmp_path / "r1" / "summary.md").is_file() and (tmp_path / "r1" / "calibration.json").is_file()
    results = pd.read_csv(tmp_path / "r1" / "results.csv")
    assert list(results["case_id"]) == ["cnn-fwd-fp32-b2", "encoder-fwd-fp32-b2-naive",
                                        "encoder-fwd-fp32-b2-sdpa_cudnn", "encoder-fwd-fp32-b2-triton"]
    assert list(results["status"]) == ["ok", "ok", "skipped", "skipped"]
    assert results.loc[3, "reason"] == "triton needs a CUDA GPU"
    assert "skipped: triton needs a CUDA GPU" in done.stdout  # the reason is the test's skip message
    report = json.loads((tmp_path / "r1" / "benchmark.json").read_text())
    timed = {b["param"]: b for b in report["benchmarks"]}
    assert set(timed) == {"cnn-fwd-fp32-b2", "encoder-fwd-fp32-b2-naive"}
    raw = timed["cnn-fwd-fp32-b2"]["stats"]["data"]
    assert len(raw) == results.loc[0, "rounds"] and sorted(raw)[len(raw) // 2] > 0
    assert timed["cnn-fwd-fp32-b2"]["extra_info"]["flops"] == results.loc[0, "flops"]


@pytest.mark.e2e
def test_a_given_run_id_is_never_overwritten(tmp_path):
    (tmp_path / "taken").mkdir()
    done = run_bench("--models", "cnn", "--phases", "fwd", "--precisions", "fp32", "--batch-sizes", "2",
                     "--reports-dir", str(tmp_path), "--run-id", "taken", *FAST)
    assert done.returncode != 0
    assert "--run-id:" in done.stdout + done.stderr and "already exists" in done.stdout + done.stderr
    assert list((tmp_path / "taken").iterdir()) == []


@pytest.mark.e2e
def test_attention_micro_benchmark_lists_every_implementation_and_counts_flashattention_flops(tmp_path):
    # One sequence length and head dim keeps it short (test_cases.py checks the whole shape grid).
    done = run_bench("--phases", "fwdbwd", "--reports-dir", str(tmp_path), "--run-id", "attn", *FAST,
                     "-k", "s256 and d64", path="bench/test_attention.py")
    assert done.returncode == 0, done.stdout + done.stderr
    results = pd.read_csv(tmp_path / "attn" / "results.csv")
    # 2 dtypes x 2 masks at seqlen 256 and head dim 64, for each of the 8 implementations
    assert len(results) == 4 * 8 and set(results["seqlen"]) == {256} and set(results["head_dim"]) == {64}
    assert set(results["attention"]) == {"naive", "sdpa", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn",
                                         "sdpa_math", "triton", "triton_1pass"}
    assert set(results.loc[results["attention"].str.startswith("triton"), "status"]) == {"skipped"}
    ok = results[results["status"] == "ok"]
    assert set(ok["attention"]) >= {"naive", "sdpa"}
    row = ok[(ok["attention"] == "sdpa") & ok["causal"] & (ok["seqlen"] == 256) & (ok["head_dim"] == 64)].iloc[0]
    forward = 4 * row["batch"] * row["heads"] * 256 * 256 * 64 / 2  # halved under the causal mask
    assert row["flops"] == forward * 3.5  # forward plus a backward of 2.5x
    assert row["tflops"] == pytest.approx(row["flops"] / row["median_s"] / 1e12)
    assert row["tokens_per_s"] == pytest.approx(row["batch"] * 256 / row["median_s"])


@pytest.mark.e2e
def test_a_sweep_killed_part_way_still_reports_and_gates_on_the_cases_it_finished(tmp_path):
    command = [sys.executable, "-m", "pytest", "bench/test_models.py", "--benchmark-only", "-q", "--models", "cnn",
               "--phases", "fwd", "--precisions", "fp32", "--batch-sizes", "1,2,3,4,5,6,7,8,9,10",
               "--benchmark-max-time", "0.5", "--reports-dir", str(tmp_path), "--run-id", "killed"]
    sweep = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "killed" / "results.csv"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and sweep.poll() is None:
            if results.exists() and len(pd.read_csv(results)) >= 2:
                break
            time.sleep(0.1)
    finally:
        sweep.kill()  # SIGKILL: no hook, no benchmark.json
        sweep.wait(timeout=60)
    finished = pd.read_csv(results)
    assert 2 <= len(finished) < 10 and not (tmp_path / "killed" / "benchmark.json").exists()
    for command in (["report", "killed"], ["gate", "killed", "killed"]):
        done = subprocess.run([sys.executable, "-m", "bench", *command, "--reports-dir", str(tmp_path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert f"0 slower, 0 faster, {len(finished)} unchanged, 0 inconclusive of {len(finished)} cases" in done.stdout
    summary = (tmp_path / "killed" / "summary.md").read_text()
    assert f"- {len(finished)} cases on " in summary and f": {len(finished)} ok." in summary
