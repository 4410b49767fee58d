"""Calibration: ceilings measured once per machine and cached; % of peak per precision."""

import pytest
import torch

from bench.machine import calibrate
from bench.results.peaks import PEAKS, peak_tflops

CPU = torch.device("cpu")


def test_calibration_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate, "MATMUL_SIZES", {"cpu": (32, 64)})
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
    assert peak_tflops(precision, calibration) == peak


def test_calibration_measures_every_peak_a_row_can_be_judged_against():
    measured = calibrate.MATMUL_PRECISIONS
    assert measured == {"fp32": (torch.float32, False), "tf32": (torch.float32, True),
                        "fp16": (torch.float16, False), "bf16": (torch.bfloat16, False)}
    assert tuple(calibrate.MATMUL_PRECISIONS) == PEAKS


def test_no_peak_without_a_calibration_or_for_an_unknown_precision():
    assert peak_tflops("fp32", {}) is None
    assert peak_tflops("fp8", {"matmul_tflops": {"fp32": 1.0}}) is None


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


META = torch.device("meta")  # tensors without storage: shows where and in what dtype the work would run


def test_matmul_inputs_are_seeded_and_on_the_device(monkeypatch):
    seen = {}
    monkeypatch.setattr(calibrate, "_median_seconds", lambda stmt, a, b: seen.update(stmt=stmt, a=a, b=b) or 1.0)
    calibrate.matmul_tflops(CPU, torch.float32, False, 4)
    gen = torch.Generator().manual_seed(0)
    assert seen["stmt"] == "a @ b"
    assert torch.equal(seen["a"], torch.randn(4, 4, generator=gen)) and torch.equal(seen["b"], torch.randn(4, 4,
                                                                                                         generator=gen))
    calibrate.matmul_tflops(META, torch.float16, False, 4)
    assert seen["a"].device == META and seen["b"].device == META and seen["a"].dtype == torch.float16


def test_copy_moves_bytes_on_the_device(monkeypatch):
    seen = {}
    monkeypatch.setattr(calibrate, "_median_seconds", lambda stmt, dst, src: seen.update(stmt=stmt, dst=dst,
                                                                                         src=src) or 1.0)
    calibrate.copy_gbps(META, 64)
    assert seen["stmt"] == "dst.copy_(src)"
    for t in (seen["src"], seen["dst"]):
        assert (t.device, t.dtype, t.numel()) == (META, torch.uint8, 64)


def test_median_seconds_times_the_statement():
    import time

    seconds = calibrate._median_seconds("time.sleep(0.002)", time=time)
    assert 0.002 <= seconds < 0.02


def test_median_seconds_times_on_the_sweeps_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        calibrate._median_seconds("seen.append(torch.get_num_threads())", seen=seen, torch=torch)
    finally:
        torch.set_num_threads(saved)
    assert set(seen) == {2}


def test_measure_records_the_ceilings_sizes_and_environment(monkeypatch):
    devices = set()
    monkeypatch.setattr(calibrate, "emulated", lambda dtype, device: None)
    monkeypatch.setattr(calibrate, "matmul_tflops", lambda device, dtype, tf32, n, batched: devices.add(device) or {
        (torch.float32, False): 1.0, (torch.float32, True): 2.0, (torch.float16, False): 3.0,
        (torch.bfloat16, False): 4.0}[(dtype, tf32)] * (1024 - abs(n - 512)) / (2 if batched else 1))
    monkeypatch.setattr(calibrate, "copy_gbps", lambda device, nbytes: devices.add(device) or nbytes / 1e6)
    monkeypatch.setattr(calibrate, "fingerprint", lambda device_type: devices.add(device_type) or {
        "torch": torch.__version__, "device_name": "Test CPU"})
    monkeypatch.setattr(calibrate.socket, "gethostname", lambda: "box")
    result = calibrate.measure(CPU)
    assert devices == {CPU, "cpu"}  # every measurement and the fingerprint on the device asked for
    assert result["matmul_tflops"] == {"fp32": 2048.0, "tf32": 2048.0, "fp16": 3072.0, "bf16": 4096.0}  # fp32 and
    # tf32 are one kernel on a CPU
    assert (result["device"], result["host"], result["matmul_sizes"]) == ("cpu", "box", [256, 512, 1024])
    assert result["matmul_kernel"] == {**dict.fromkeys(("fp32", "tf32"), "mm n=512 again"),
                                       **dict.fromkeys(("fp16", "bf16"), "mm n=512")}  # the best
    assert len(result["matmul_tried"]["bf16"]) == 6  # mm and bmm at three sizes
    assert result["threads"] == torch.get_num_threads()
    assert (result["copy_bytes"], result["copy_gbps"]) == (1 << 28, (1 << 28) / 1e6)
    assert result["torch"] == torch.__version__ and result["device_name"]
    assert len(result["measured_at"]) == len("2026-01-01T00:00:00+0000")


def test_the_cache_file_is_named_for_host_device_torch_driver_and_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate.socket, "gethostname", lambda: "box")
    monkeypatch.setattr(calibrate.torch, "get_num_threads", lambda: 2)
    env = {"device_name": "NVIDIA H100 80GB HBM3", "torch": "2.14.1+cu130", "driver": ""}
    monkeypatch.setattr(calibrate, "fingerprint", lambda device_type: env if device_type == "cuda" else {})
    cuda = torch.device("cuda")
    name = "v2-box-NVIDIA_H100_80GB_HBM3-2.14.1_cu130-nodriver-2threads.json"  # v2: best of kernels and sizes
    assert calibrate.cache_path(cuda, tmp_path) == tmp_path / name
    env["driver"] = "580.82"
    assert calibrate.cache_path(cuda, tmp_path).name == "v2-box-NVIDIA_H100_80GB_HBM3-2.14.1_cu130-580.82-2threads.json"


def test_an_emulated_precision_is_judged_against_the_fp32_units_it_runs_on(monkeypatch):
    """On a CPU without bf16/fp16 arithmetic, an emulated matmul reads ~70x below fp32 while SDPA's CPU kernel
    (bf16 converted to fp32 in blocks) runs near fp32: the emulated ceiling would put such rows at 10,000 %
    of peak. The fp32 units' ceiling bounds them all; the emulated dtype is timed at the smallest size only."""
    sizes = []
    speed = {torch.float32: 0.15, torch.float16: 0.0013, torch.bfloat16: 0.0013}

    def fake(device, dtype, tf32, n, batched):
        sizes.append((dtype, n))
        return speed[dtype] * (1.1 if tf32 else 1.0) * (0.9 if batched else 1.0) * n / 1024

    monkeypatch.setattr(calibrate, "matmul_tflops", fake)
    monkeypatch.setattr(calibrate, "emulated", lambda dtype, device: "bf16 is emulated here" if dtype != torch.float32
                        else None)
    best, kernel, tried = calibrate.ceilings(CPU)
    assert best["fp32"] == pytest.approx(0.165) and kernel["fp32"] == "mm n=1024 again"  # the tf32 switch's try
    assert best["bf16"] == best["fp16"] == best["fp32"]
    assert kernel["bf16"] == "fp32 mm n=1024 again: bf16 is emulated here, so it runs on the fp32 units"
    assert tried["bf16"] == {"mm n=256": pytest.approx(0.0013 / 4), "bmm n=256": pytest.approx(0.0013 * 0.9 / 4)}
    assert {n for dtype, n in sizes if dtype == torch.bfloat16} == {256}


def test_on_a_cpu_the_fp32_and_tf32_tries_are_repeats_of_one_kernel(monkeypatch):
    """A CPU has no TF32: both peaks time the same products, and a host that slowed during one of them must
    not leave fp32's ceiling below what the models then reach (0.12 against tf32's 0.15 in one cold run)."""
    speeds = iter([0.12, 0.11, 0.115, 0.10, 0.11, 0.105, 0.11, 0.13, 0.15, 0.09, 0.146, 0.149])

    def fake(device, dtype, tf32, n, batched):
        return next(speeds) if dtype == torch.float32 else 0.001

    monkeypatch.setattr(calibrate, "matmul_tflops", fake)
    monkeypatch.setattr(calibrate, "emulated", lambda dtype, device: None)
    best, kernel, tried = calibrate.ceilings(CPU)
    assert best["fp32"] == best["tf32"] == 0.15 and kernel["fp32"] == "mm n=512 again"
    assert tried["fp32"]["mm n=256"] == 0.12 and len(tried["tf32"]) == 6  # each peak's own tries are kept
