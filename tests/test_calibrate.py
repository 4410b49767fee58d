"""Calibration: ceilings measured once per machine and cached; % of peak per precision."""

import pytest
import torch

from bench import calibrate

CPU = torch.device("cpu")


def test_calibration_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate, "MATMUL_SIZE", {"cpu": 64})
    monkeypatch.setattr(calibrate, "COPY_BYTES", {"cpu": 1 << 20})
    first = calibrate.load_or_measure(CPU, cache_dir=tmp_path)
    assert set(first["matmul_tflops"]) == {"fp32", "tf32", "fp16", "bf16"}
    assert all(v > 0 for v in first["matmul_tflops"].values()) and first["copy_gbps"] > 0
    assert calibrate.cache_path(CPU, tmp_path).exists()
    monkeypatch.setattr(calibrate, "measure", lambda device: pytest.fail("measured twice"))
    assert calibrate.load_or_measure(CPU, cache_dir=tmp_path) == first


def test_matmul_tflops_is_two_n_cubed_over_the_time(monkeypatch):
    monkeypatch.setattr(calibrate, "_median_seconds", lambda stmt, **env: 0.5)
    assert calibrate.matmul_tflops(CPU, torch.float32, False, 100) == pytest.approx(2 * 100**3 / 0.5 / 1e12)


@pytest.mark.parametrize(("precision", "peak"), [("fp32", 10.0), ("amp_bf16", 40.0), ("amp_fp16", 20.0),
                                                  ("bf16", 40.0), ("fp16", 20.0)])
def test_a_row_is_judged_against_the_peak_of_its_precision(precision, peak):
    calibration = {"matmul_tflops": {"fp32": 10.0, "tf32": 15.0, "fp16": 20.0, "bf16": 40.0}}
    assert calibrate.peak_tflops(precision, calibration) == peak


def test_no_peak_without_a_calibration_or_for_an_unknown_precision():
    assert calibrate.peak_tflops("fp32", {}) is None
    assert calibrate.peak_tflops("fp8", {"matmul_tflops": {"fp32": 1.0}}) is None


def test_copy_bandwidth_counts_the_read_and_the_write(monkeypatch):
    monkeypatch.setattr(calibrate, "_median_seconds", lambda stmt, **env: 0.5)
    assert calibrate.copy_gbps(CPU, 1 << 20) == pytest.approx(2 * (1 << 20) / 0.5 / 1e9)


def test_refresh_measures_again_and_rewrites_the_cache(tmp_path, monkeypatch):
    measured = iter([{"matmul_tflops": {"fp32": 1.0}}, {"matmul_tflops": {"fp32": 2.0}}])
    monkeypatch.setattr(calibrate, "measure", lambda device: next(measured))
    assert calibrate.load_or_measure(CPU, cache_dir=tmp_path)["matmul_tflops"]["fp32"] == 1.0
    assert calibrate.load_or_measure(CPU, cache_dir=tmp_path, refresh=True)["matmul_tflops"]["fp32"] == 2.0
    assert calibrate.load_or_measure(CPU, cache_dir=tmp_path)["matmul_tflops"]["fp32"] == 2.0


def test_a_damaged_cache_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate, "measure", lambda device: {"matmul_tflops": {"fp32": 3.0}})
    path = calibrate.cache_path(CPU, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{broken")
    assert calibrate.load_or_measure(CPU, cache_dir=tmp_path)["matmul_tflops"]["fp32"] == 3.0


def test_matmul_is_timed_in_the_asked_dtype_and_tf32_switch_is_restored(monkeypatch):
    seen = {}

    def fake(stmt, a, b):
        seen.update(dtype=a.dtype, shape=tuple(a.shape), tf32=torch.backends.cuda.matmul.allow_tf32)
        return 1.0

    monkeypatch.setattr(calibrate, "_median_seconds", fake)
    before = torch.backends.cuda.matmul.allow_tf32
    calibrate.matmul_tflops(CPU, torch.bfloat16, not before, 8)
    assert seen == {"dtype": torch.bfloat16, "shape": (8, 8), "tf32": not before}
    assert torch.backends.cuda.matmul.allow_tf32 == before
