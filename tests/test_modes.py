"""Execution modes and memory formats: the options, the case ids, compiled models against eager ones
(inductor's C++ backend on the CPU), compile time, graph breaks and recompiles counted, a model that
fails to compile recorded, channels_last reaching the convolutions, and the report's modes table."""

import pandas as pd
import pytest
import torch
from torch import nn

from bench.results.rundir import load_results
from bench.run.harness import Settings, Workload, make_step, measure, model_workload, run_case
from bench.sweep import modes
from bench.sweep.cases import Case, sweep
from bench.sweep.models import MODELS
from bench.sweep.modes import MODES
from bench.sweep.options import OptionError, SweepOptions
from bench.sweep.precision import PRECISIONS
from bench.views.report import compile_speedups, throughput_tables

CPU = torch.device("cpu")
FAST = Settings(device=CPU, max_time=0.01, min_rounds=2, warmup_rounds=2)


def options(**values) -> SweepOptions:
    given = {"device": "cpu", "profile_steps": 3, "benchmark_max_time": 1.0, "benchmark_min_rounds": 5, **values}
    return SweepOptions.from_values(given.get)


def test_modes_and_memory_format_are_axes_of_the_model_sweep_and_parts_of_the_case_id():
    cases = options(models="cnn,encoder", phases="fwd", precisions="fp32", batch_sizes="2", attn="sdpa",
                    modes="eager,compile", memory_format="channels_last").cases
    assert [c.id for c in cases] == ["cnn-fwd-fp32-b2-channels_last", "cnn-fwd-fp32-b2-compile-channels_last",
                                     "encoder-fwd-fp32-b2-sdpa", "encoder-fwd-fp32-b2-sdpa-compile"]
    assert [c.memory_format for c in cases] == ["channels_last"] * 2 + ["contiguous"] * 2  # CNNs only
    assert {c.mode for c in options(models="cnn", batch_sizes="2").cases} == {"eager"}  # the default


@pytest.mark.parametrize(("values", "message"), [
    ({"modes": "eager,jit"}, "--modes: unknown name 'jit'; valid names: eager, compile, compile-max-autotune, "
                             "cudagraphs (or all)"),
    ({"memory_format": "nhwc"}, "--memory-format: unknown value 'nhwc'; valid values: contiguous, channels_last"),
])
def test_a_bad_mode_or_memory_format_is_one_line_naming_the_choices(values, message):
    with pytest.raises(OptionError) as err:
        options(models="cnn", **values)
    assert str(err.value) == message


def test_cuda_graphs_are_skipped_on_a_cpu_with_the_reason():
    row = run_case(Case("cnn", "fwd", "fp32", 2, mode="cudagraphs"), None, FAST)
    assert (row.status, row.reason, row.mode) == ("skipped", "cudagraphs: CUDA graphs need a CUDA device", "cudagraphs")
    assert [m.name for m in MODES.values() if m.unavailable(CPU)] == ["cudagraphs"]


def build(name: str, attention: str | None = None) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name].build("quick", attention)


@pytest.mark.parametrize(("name", "attention"), [("cnn", None), ("encoder", "sdpa")])
def test_a_compiled_model_matches_eager_forward_and_gradients(name, attention):
    spec = MODELS[name]
    batch = spec.batch("quick", 2, CPU, torch.Generator().manual_seed(0))
    eager, compiled = build(name, attention), build(name, attention)
    torch._dynamo.reset()
    compiled_fn = MODES["compile"].apply(compiled)
    for model in (eager, compiled):
        model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled_fn(*batch.inputs), eager(*batch.inputs), rtol=1e-4, atol=1e-4)
    for model in (eager, compiled):
        model.train()
    losses = []
    with torch._inductor.config.patch(fallback_random=True):  # dropout draws as eager does
        for fn in (eager, compiled_fn):
            torch.manual_seed(1)
            losses.append(spec.loss(fn(*batch.inputs), batch.target))
            losses[-1].backward()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-4)
    for (path, p_eager), p_compiled in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(p_compiled.grad, p_eager.grad, rtol=1e-3, atol=1e-4, msg=path)


@pytest.mark.parametrize("phase", ["fwd", "fwdbwd"])
def test_a_compiled_case_times_its_first_call_apart_and_counts_the_eager_flops(benchmark, phase):
    row = run_case(Case("cnn", phase, "fp32", 2, mode="compile"), benchmark, FAST)
    assert row.status == "ok", row.reason
    assert row.case_id == f"cnn-{phase}-fp32-b2-compile" and row.mode == "compile"
    assert row.compile_s > max(row.rounds_s)  # compiling happened in the first call, in none of the timed rounds
    assert (row.graph_breaks, row.recompiles) == (0, 0)
    assert row.flops == model_workload(Case("cnn", phase, "fp32", 2), CPU).flops() > 0


def test_graph_breaks_and_recompiles_after_the_first_call_are_counted(benchmark):
    """A step with two graph breaks, and a shape that changes once the first call has compiled."""
    calls = []

    @torch.compile
    def work(x):
        x = x + 1
        torch._dynamo.graph_break()
        x = x * 2
        torch._dynamo.graph_break()
        return x - 1

    def step():
        calls.append(1)
        work(torch.ones(3 if len(calls) == 1 else 5))

    torch._dynamo.reset()
    fields = measure(lambda: Workload(step, lambda: 0, compiled=True), benchmark, FAST)
    assert fields.graph_breaks == 2  # found by the first call's compile (a recompile meets them again)
    assert fields.recompiles >= 1  # the second shape compiled again, after the first call
    assert fields.compile_s > 0


class Refused(nn.Module):
    """What a compiled model that cannot compile does on its first call."""

    def forward(self, *args):
        raise RuntimeError("inductor refused this model")


def test_a_model_that_fails_to_compile_is_an_error_row_and_the_next_case_runs(monkeypatch, benchmark):
    def refuse(model, mode=None):
        return Refused()

    monkeypatch.setattr(modes.torch, "compile", refuse)
    row = run_case(Case("cnn", "fwd", "fp32", 2, mode="compile"), None, FAST)
    assert (row.status, row.reason) == ("error", "RuntimeError: inductor refused this model")
    monkeypatch.undo()
    assert run_case(Case("cnn", "fwd", "fp32", 2), benchmark, FAST).status == "ok"


def test_channels_last_reaches_every_convolution_s_weight_and_input(monkeypatch):
    seen = []

    def record(module, args):
        if isinstance(module, nn.Conv2d):
            seen.append((module.weight.is_contiguous(memory_format=torch.channels_last),
                         args[0].is_contiguous(memory_format=torch.channels_last)))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        model_workload(Case("cnn", "fwd", "fp32", 2, memory_format="channels_last"), CPU).step()
        assert seen == [(True, True)] * 4
        seen.clear()
        model_workload(Case("cnn", "fwd", "fp32", 2), CPU).step()
        assert seen == [(False, False)] * 4
    finally:
        handle.remove()


def test_channels_last_computes_what_contiguous_does():
    spec, outputs = MODELS["cnn"], []
    for layout in (torch.contiguous_format, torch.channels_last):
        model = build("cnn").to(memory_format=layout).eval()
        images = spec.batch("quick", 2, CPU, torch.Generator().manual_seed(0)).inputs[0]
        with torch.no_grad():
            outputs.append(model(images.contiguous(memory_format=layout)))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)


def test_sweep_keeps_non_convolutional_models_contiguous():
    cases = sweep(["gru", "resnet50", "vit_b_16"], ["fwd"], ["fp32"], [1], ["sdpa"], "quick",
                  memory_format="channels_last")
    assert {c.model: c.memory_format for c in cases} == {"gru": "contiguous", "resnet50": "channels_last",
                                                         "vit_b_16": "contiguous"}


def rows(*specs) -> pd.DataFrame:
    """Report rows: (mode, median seconds, compile seconds, graph breaks, recompiles) of one cnn case."""
    return pd.DataFrame([{"kind": "model", "model": "cnn", "phase": "fwd", "precision": "fp32", "batch": 2,
                          "attention": None, "memory_format": "contiguous", "mode": mode, "median_s": median,
                          "median_ms": median * 1e3, "samples_per_s": 2 / median, "compile_s": compile_s,
                          "graph_breaks": breaks, "recompiles": recompiles}
                         for mode, median, compile_s, breaks, recompiles in specs])


def test_the_report_gives_each_compiled_case_its_speedup_over_eager_and_compile_cost():
    table = compile_speedups(rows(("eager", 0.004, None, None, None), ("compile", 0.002, 31.5, 0, 0),
                                  ("compile-max-autotune", 0.001, 95.0, 1, 2)))
    assert table[["mode", "eager_ms", "speedup_vs_eager", "compile_s", "graph_breaks", "recompiles"]].to_dict(
        "records") == [
        {"mode": "compile", "eager_ms": 4.0, "speedup_vs_eager": 2.0, "compile_s": 31.5, "graph_breaks": 0,
         "recompiles": 0},
        {"mode": "compile-max-autotune", "eager_ms": 4.0, "speedup_vs_eager": 4.0, "compile_s": 95.0,
         "graph_breaks": 1, "recompiles": 2}]
    assert compile_speedups(rows(("eager", 0.004, None, None, None))).empty


def test_throughput_tables_keep_modes_apart():
    table = throughput_tables(rows(("eager", 0.004, None, None, None), ("compile", 0.002, 31.5, 0, 0)))["cnn"]
    assert table.index.tolist() == [("fwd", "fp32"), ("fwd", "fp32 compile")]
    assert table["b2 samples/s"].tolist() == [500.0, 1000.0]


def test_a_training_step_compiles_and_updates_the_weights():
    spec, model = MODELS["cnn"], build("cnn")
    batch = spec.batch("quick", 2, CPU, torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in model.parameters()]
    torch._dynamo.reset()
    make_step("step", MODES["compile"].apply(model), batch, spec, PRECISIONS["fp32"], CPU)()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_results_from_before_these_axes_read_as_eager_and_contiguous(tmp_path):
    csv = tmp_path / "results.csv"
    pd.DataFrame([{"case_id": "cnn-fwd-fp32-b2", "kind": "model", "model": "cnn", "status": "ok"},
                  {"case_id": "attn-fwd", "kind": "attention", "model": None, "status": "ok"}]).to_csv(csv, index=False)
    frame = load_results(csv)
    assert frame["mode"].tolist()[0] == "eager" and frame["memory_format"].tolist()[0] == "contiguous"
    assert frame[["mode", "memory_format"]].iloc[1].isna().all()  # the attention micro-benchmark has neither
