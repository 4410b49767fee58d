"""The precision registry: autocast dtypes, loss scaling, the peak each precision is judged against."""

import pytest
import torch

from bench.results.peaks import peak_name
from bench.sweep import precision
from bench.sweep.precision import DTYPES, PRECISIONS, dtype_name

CPU = torch.device("cpu")


@pytest.mark.parametrize(("name", "compute", "scaled", "peak"), [
    ("fp32", torch.float32, False, "fp32"), ("tf32", torch.float32, False, "tf32"),
    ("amp_fp16", torch.float16, True, "fp16"), ("amp_bf16", torch.bfloat16, False, "bf16")])
def test_each_precision_computes_in_its_dtype_and_is_judged_against_its_peak(name, compute, scaled, peak):
    precision = PRECISIONS[name]
    assert precision.compute_dtype == compute and peak_name(name) == peak
    assert peak == ("tf32" if precision.tf32 else dtype_name(precision.compute_dtype))  # the rule peak_name follows
    assert precision.scaler(CPU).is_enabled() == scaled
    x = torch.ones(4, 4)
    if precision.unavailable(CPU) is None:
        with precision.autocast(CPU):
            assert (x @ x).dtype == compute


def test_plain_dtype_names_are_their_own_peak_and_unknown_names_have_none():
    assert peak_name("bf16") == "bf16" and peak_name("fp16") == "fp16"
    assert peak_name("fp8") is None and peak_name("amp_fp8") is None
    assert {dtype_name(dtype): name for name, dtype in DTYPES.items()} == {name: name for name in DTYPES}


def test_bf16_autocast_runs_on_this_cpu():
    assert PRECISIONS["amp_bf16"].unavailable(CPU) is None
    assert PRECISIONS["fp32"].unavailable(CPU) is None


def tf32_switches() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize(("name", "tf32"), [("fp32", False), ("tf32", True), ("amp_fp16", False), ("amp_bf16", False)])
@pytest.mark.parametrize("before", [(False, True), (True, False)])  # (False, True) is PyTorch's default
def test_each_precision_sets_both_tf32_switches_and_restores_them(name, tf32, before):
    saved = tf32_switches()
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    try:
        with PRECISIONS[name].math_mode():
            inside = tf32_switches()
        after = tf32_switches()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert inside == (tf32, tf32) and after == before


def test_an_autocast_error_without_a_message_is_a_reason_not_a_crash(monkeypatch):
    from bench.sweep import precision

    monkeypatch.setattr(precision.Precision, "autocast", lambda self, device: (_ for _ in ()).throw(RuntimeError()))
    precision._probe.cache_clear()
    try:
        assert precision._probe("amp_bf16", "cpu") == "amp_bf16: autocast to bfloat16 fails on cpu: "
    finally:
        precision._probe.cache_clear()


AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})  # the 2-core AMD EPYC's: no bf16/fp16 arithmetic


@pytest.mark.parametrize(("flags", "dtype", "emulated"), [
    (AVX2_ONLY, torch.bfloat16, True),
    (AVX2_ONLY, torch.float16, True),  # f16c converts, it does not compute
    (AVX2_ONLY | {"avx512f", "avx512_bf16"}, torch.bfloat16, False),  # Cooper Lake, Zen 4
    (AVX2_ONLY | {"amx_bf16", "amx_tile"}, torch.bfloat16, False),  # Sapphire Rapids
    (AVX2_ONLY | {"amx_bf16", "amx_tile"}, torch.float16, True),  # AMX-FP16 came later (Granite Rapids)
    (AVX2_ONLY | {"avx512_fp16"}, torch.float16, False),
    (AVX2_ONLY, torch.float32, False),
])
def test_emulation_is_read_from_the_cpu_flags(flags, dtype, emulated):
    reason = precision.emulated(dtype, torch.device("cpu"), flags)
    assert (reason is not None) == emulated
    if emulated:
        assert reason.startswith(f"{precision.dtype_name(dtype)} is emulated on this CPU: none of ")


def test_a_gpu_without_bf16_tensor_cores_emulates_it(monkeypatch):
    capability = {"cuda:0": (7, 0), "cuda:1": (9, 0)}  # a V100 beside an H100: each device is asked for itself
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[str(device)])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    v100, h100 = torch.device("cuda:0"), torch.device("cuda:1")
    assert precision.emulated(torch.bfloat16, v100) == "bf16 is emulated on Tesla V100 (no bf16 tensor cores)"
    assert precision.emulated(torch.float16, v100) is None and precision.emulated(torch.bfloat16, h100) is None


@pytest.mark.parametrize(("flags", "emulated"), [
    (frozenset(), False),  # no flags read (not Linux, an odd cpuinfo): unknown, so nothing is trimmed
    (frozenset({"fp", "asimd", "asimdhp", "bf16", "sve"}), False),  # Arm (Graviton 3): both native
    (frozenset({"fp", "asimd"}), True),  # an older Arm core
])
def test_an_unknown_or_arm_cpu_is_not_taken_for_one_that_emulates(flags, emulated):
    assert (precision.emulated(torch.bfloat16, torch.device("cpu"), flags) is not None) == emulated


def test_the_cpu_flags_are_read_from_cpuinfo():
    flags = precision.cpu_flags()
    assert "fpu" in flags or not flags  # x86 lists fpu; elsewhere cpuinfo may have no flags line
