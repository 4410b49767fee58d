"""Checks that need a CUDA GPU (`pytest -m gpu`); skipped, with the reason, everywhere else.
`python -m bench validate` runs them first on a GPU (and on a CPU rehearses their collection)."""


import numpy as np
import pytest
import torch
from test_flash_attention import assert_matches_reference, inputs, output_and_grads

import kernels.flash_attention as flash_attention_module
from bench.machine.validate import TIMER_SIZES, timer_row
from bench.run import devicetime
from bench.run.harness import Settings, model_workload, run_case
from bench.sweep.attention import ATTENTION
from bench.sweep.cases import AttentionCase, Case
from bench.sweep.models import MODELS
from bench.sweep.precision import PRECISIONS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
GPU = torch.device("cuda")
FAST_GPU = Settings(GPU, max_time=0.05, min_rounds=2, warmup_rounds=1)
TIMER_AGREEMENT_PCT = 2.0


@pytest.mark.parametrize("n", TIMER_SIZES["cuda"], ids=["0.1ms", "5ms", "100ms"])
def test_harness_median_and_device_time_agree_with_do_bench(n):
    row = timer_row(n, GPU)
    print(f"\n{row['case']}: harness {row['harness_ms']:.4f} ms, device ({row['device_method']}) "
          f"{row['device_ms']:.4f} ms, do_bench {row['do_bench_ms']:.4f} ms, host overhead {row['overhead_us']:.1f} us")
    assert row["device_method"] == "graph"
    assert abs(row["device_vs_do_bench_pct"]) <= TIMER_AGREEMENT_PCT
    assert abs(row["harness_vs_do_bench_pct"]) <= TIMER_AGREEMENT_PCT


def test_a_step_the_graph_cannot_capture_is_timed_by_the_profiler_alike():
    a, b = (torch.randn(4096, 4096, device=GPU, dtype=torch.bfloat16) for _ in range(2))
    out = torch.empty(1, device=GPU)

    def captured() -> None:
        out.copy_((a @ b)[0, :1])

    def synced() -> None:  # reads a value on the host: no capture
        captured()
        out.item()

    graph = devicetime.measure_device(captured, GPU, iterations=10, rounds=10)
    profiled = devicetime.measure_device(synced, GPU, iterations=10, rounds=10)
    print(f"\ngraph {np.median(graph.rounds_s) * 1e3:.4f} ms, profiler {np.median(profiled.rounds_s) * 1e3:.4f} ms "
          f"({profiled.note})")
    assert (graph.method, profiled.method) == ("graph", "profiler") and profiled.note.startswith("not captured")
    assert np.median(profiled.rounds_s) == pytest.approx(np.median(graph.rounds_s), rel=0.05)


def test_a_launch_bound_case_is_marked_host_bound_and_a_large_matmul_device_bound(benchmark):
    tiny = run_case(AttentionCase("naive", "fwd", "bf16", 64, 64, False, 1, 1), benchmark, FAST_GPU)
    assert (tiny.status, tiny.figures["bound"]) == ("ok", "host"), tiny.reason
    big = run_case(AttentionCase("sdpa", "fwd", "bf16", 8192, 128, False, 8, 16), benchmark, FAST_GPU)
    assert (big.status, big.figures["bound"], big.device_method) == ("ok", "device", "graph"), big.reason


@pytest.fixture
def one_config(monkeypatch):
    """Each kernel with its first config: correctness does not need autotuning, which compiles them all."""
    for kernel in flash_attention_module.AUTOTUNED.values():
        monkeypatch.setattr(kernel, "configs", kernel.configs[:1])
    flash_attention_module.forget_configs()  # plans replay the configs they were made with
    yield
    flash_attention_module.forget_configs()


def test_an_out_of_memory_case_is_recorded_and_the_next_case_runs(benchmark):
    too_big = AttentionCase("naive", "fwd", "fp16", 2**20, 64, False, 1, 8)  # 16 TiB of scores
    assert run_case(too_big, benchmark, FAST_GPU).status == "oom"
    fits = AttentionCase("naive", "fwd", "fp16", 1024, 64, False, 1, 8)
    assert run_case(fits, benchmark, FAST_GPU).status == "ok"


@pytest.mark.parametrize(("model", "precision", "attention"), [
    *[(m, p, "sdpa" if MODELS[m].has_attention else None) for m in MODELS for p in PRECISIONS],
    *[(m, "amp_bf16", a) for m in MODELS if MODELS[m].has_attention for a in ATTENTION if a.startswith("triton")],
])
def test_every_model_runs_a_training_step_on_the_gpu(one_config, model, precision, attention):
    case = Case(model, "fwdbwd", precision, MODELS[model].batch_sizes["full"][0], attention, "full")
    model_workload(case, GPU).step()
    torch.cuda.synchronize()


# Last: it compiles the kernels for every key, the slowest of these tests.
@pytest.mark.parametrize("backward", flash_attention_module.BACKWARDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("head_dim", [64, 128], ids=["d64", "d128"])
@pytest.mark.parametrize("seqlen", [1000, 4096], ids=["s1000", "s4096"])
def test_triton_kernel_matches_float64_at_real_shapes(one_config, seqlen, head_dim, dtype, causal, backward):
    (q, k, v), grad = inputs(seqlen, seqlen, head_dim, batch=2, heads=2)
    assert_matches_reference((q.to(GPU), k.to(GPU), v.to(GPU)), grad.to(GPU), dtype, causal, backward=backward)


@pytest.mark.parametrize("backward", flash_attention_module.BACKWARDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("changes", [{"descriptors": True}, {"warp_specialize": True}, {"heavy_first": False}],
                         ids=lambda changes: "-".join(changes))
def test_every_variant_matches_float64_on_the_gpu(one_config, changes, causal, backward):
    (q, k, v), grad = inputs(1000, 1000, 128, batch=2, heads=2)
    with flash_attention_module.variant(**changes):
        assert_matches_reference((q.to(GPU), k.to(GPU), v.to(GPU)), grad.to(GPU), torch.bfloat16, causal,
                                 backward=backward)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"], ids=["compile", "cudagraphs"])
def test_torch_compile_and_cuda_graphs_run_the_kernel_as_eager_does(one_config, mode):
    """Inductor sees the kernels through the triton_op; reduce-overhead replays them in a CUDA graph."""
    (q, k, v), grad = inputs(1000, 1000, 64, batch=2, heads=2)
    qkv = tuple(t.to(GPU) for t in (q, k, v))

    def attention(q, k, v, causal):
        return flash_attention_module.flash_attention(q, k, v, causal=causal)

    compiled = torch.compile(attention, mode=mode, fullgraph=True)
    eager = output_and_grads(attention, qkv, grad.to(GPU), torch.bfloat16, True)
    for _ in range(3):  # the graph is recorded on a later call than the first
        traced = output_and_grads(compiled, qkv, grad.to(GPU), torch.bfloat16, True)
    for expected, got in zip(eager, traced, strict=True):  # the same kernels and configs: bf16 rounding at most
        torch.testing.assert_close(got, expected)
