"""The harness: FLOP counts against hand computations, training steps, and OOM cases recorded."""

import copy
import dataclasses
import gc
import time

import pytest
import torch
from torch import nn

from bench.results.row import Row
from bench.run import devicetime, harness
from bench.run.harness import (
    Measured,
    PeakMemory,
    Settings,
    TimedRound,
    Workload,
    attention_workload,
    count_flops,
    is_oom,
    make_step,
    measure,
    round_plan,
    run_case,
)
from bench.sweep.attention import ATTENTION, AttentionImpl
from bench.sweep.cases import AttentionCase, Case
from bench.sweep.models import MODELS
from bench.sweep.models.cnn import SimpleCNN
from bench.sweep.models.rnn import SentimentRNN, recurrent_flops
from bench.sweep.models.spec import Batch, ModelSpec
from bench.sweep.models.transformer import SelfAttention, TransformerConfig
from bench.sweep.precision import PRECISIONS

CPU = torch.device("cpu")
FAST = Settings(device=CPU, max_time=0.01, min_rounds=2, warmup_rounds=1)


def conv_flops(c_in, c_out, side):
    return 2 * c_out * side * side * c_in * 9


def test_cnn_flops_match_a_hand_count():
    per_image = (conv_flops(3, 32, 32) + conv_flops(32, 32, 32) + conv_flops(32, 64, 16)
                 + conv_flops(64, 64, 16) + 2 * 4096 * 512 + 2 * 512 * 10)
    model, x = SimpleCNN().eval(), torch.randn(4, 3, 32, 32)
    assert count_flops(lambda: model(x), model) == 4 * per_image
    # The backward doubles every layer, except the input gradient of the first conv, which nobody needs.
    fwdbwd = count_flops(lambda: model(x).sum().backward(), model, backward=True)
    assert fwdbwd == 3 * 4 * per_image - 4 * conv_flops(3, 32, 32)


@pytest.mark.parametrize("attn", ["naive", "sdpa", "sdpa_flash", "sdpa_math"])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_layer_flops_match_a_hand_count_for_every_implementation(attn, causal):
    # torch's FlopCounterMode reports 0 for scaled_dot_product_attention on CPU; the count must not.
    batch, seq, d = 3, 20, 256
    layer, x = SelfAttention(TransformerConfig(), attn, causal), torch.randn(batch, seq, d)
    projections = 2 * batch * seq * d * 3 * d + 2 * batch * seq * d * d
    scores_and_values = 2 * (2 * batch * seq * seq * d) // (2 if causal else 1)  # FlashAttention's convention
    assert count_flops(lambda: layer(x), layer) == projections + scores_and_values
    # the backward: two matmuls per forward matmul, the causal half again
    fwdbwd = count_flops(lambda: layer(x.requires_grad_()).sum().backward(), layer, backward=True)
    assert fwdbwd == 3 * (projections + scores_and_values) and isinstance(fwdbwd, int)  # FLOPs stay integers


def test_a_depthwise_conv_backward_counts_two_forwards_not_one_per_group():
    """torch's own formula counts a depthwise conv's weight gradient 8x over here (bench.run.flops fixes it)."""
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    x = torch.ones(1, 8, 16, 16, requires_grad=True)
    forward = 2 * (8 * 16 * 16) * 9  # each output: 9 multiply-adds over its one input channel
    assert count_flops(lambda: conv(x).sum().backward(), conv, backward=True) == 3 * forward


def test_rnn_flops_use_the_analytic_recurrent_count():
    model = SentimentRNN("lstm").eval()
    batch = MODELS["lstm"].batch("quick", 3, CPU, torch.Generator().manual_seed(0))
    steps, hidden = int(batch.inputs[1].sum()), 256
    per_step = 2 * 4 * hidden * ((128 + hidden) + (2 * hidden + hidden))  # layer 0 and 1, one direction
    analytic = recurrent_flops(model, batch)
    assert analytic == {"rnn": 2 * steps * per_step}
    total = count_flops(lambda: model(*batch.inputs), model, analytic)
    assert total == analytic["rnn"] + 2 * 3 * 512 * 2  # plus the classifier's matmul


@pytest.mark.parametrize("precision", ["fp32", "amp_fp16", "amp_bf16"])
def test_training_step_updates_the_weights(precision):
    spec = MODELS["cnn"]
    model = spec.build("quick", None)
    batch = spec.batch("quick", 4, CPU, torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in model.parameters()]
    step = make_step("step", model, batch, spec, PRECISIONS[precision], CPU)
    for _ in range(3):  # under fp16, GradScaler skips the first step while it lowers its scale
        step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


class Hungry(nn.Module):
    """Asks the allocator for far more memory than any machine has."""

    def forward(self, x):
        return x + torch.empty(1 << 52, dtype=torch.uint8, device=x.device).sum()


def broken_build(size, attn):
    raise ValueError("bad shape")


def tiny_spec(name, build):
    return ModelSpec(name=name, build=build, batch=lambda size, n, device, gen: Batch((torch.ones(n),), torch.ones(n)),
                     batch_sizes={"quick": (1,)}, loss=lambda out, target: out.sum())


class Recorder(nn.Module):
    """A model that keeps what it was built with and the first draw of the global generator then."""

    built: list = []

    def __init__(self, size, attn):
        super().__init__()
        self.args, self.draw = (size, attn), torch.randn(1)
        self.weight = nn.Parameter(torch.ones(1))
        Recorder.built.append(self)

    def forward(self, x):
        return x * self.weight


def test_a_model_is_built_from_seed_0_with_the_case_s_size_and_attention_on_its_device(monkeypatch):
    devices = []
    spec = ModelSpec(name="rec", build=Recorder,
                     batch=lambda size, n, device, gen: devices.append(device) or Batch((torch.ones(n),), None),
                     batch_sizes={"full": (1,)}, loss=lambda out, target: out.sum())
    monkeypatch.setitem(MODELS, "rec", spec)
    monkeypatch.setattr(Recorder, "built", [])
    meta = torch.device("meta")
    torch.manual_seed(123)
    harness.model_workload(Case("rec", "fwd", "fp32", 1, "sdpa", "full"), meta)
    model, = Recorder.built
    assert model.args == ("full", "sdpa") and devices == [meta] and model.weight.device == meta
    assert torch.equal(model.draw, torch.randn(1, generator=torch.Generator().manual_seed(0)))


def test_oom_case_is_recorded_and_sweep_continues(monkeypatch, benchmark):
    monkeypatch.setitem(MODELS, "hungry", tiny_spec("hungry", lambda size, attn: Hungry()))
    oom = run_case(Case("hungry", "fwd", "fp32", 1), benchmark, FAST)
    assert oom.status == "oom" and "allocate" in oom.reason
    assert oom.case_id == "hungry-fwd-fp32-b1" and oom.figures == {}
    ok = run_case(Case("cnn", "fwdbwd", "fp32", 2), benchmark, FAST)
    assert ok.status == "ok", ok.reason
    assert ok.rounds_s == tuple(benchmark.stats.stats.data) and len(ok.rounds_s) >= 2  # the raw rounds are kept
    assert ok.figures["rounds"] == len(ok.rounds_s)


def test_case_the_device_cannot_run_is_skipped_with_its_reason():
    row = run_case(Case("encoder", "fwd", "amp_bf16", 2, "triton"), None, FAST)
    assert (row.status, row.reason) == ("skipped", "triton needs a CUDA GPU")
    assert (row.kind, row.model, row.attention, row.device) == ("model", "encoder", "triton", "cpu")


def test_broken_case_is_recorded_as_error(monkeypatch):
    monkeypatch.setitem(MODELS, "broken", tiny_spec("broken", broken_build))
    row = run_case(Case("broken", "fwd", "fp32", 1), None, FAST)
    assert (row.status, row.reason) == ("error", "ValueError: bad shape")


def test_a_broken_case_keeps_its_first_line_cut_to_200_characters_and_prints_its_traceback(monkeypatch, capsys):
    def wordy_build(size, attn):
        raise ValueError("x" * 300 + "\nsecond line")

    monkeypatch.setitem(MODELS, "wordy", tiny_spec("wordy", wordy_build))
    row = run_case(Case("wordy", "fwd", "fp32", 1), None, FAST)
    assert (row.status, row.reason) == ("error", "ValueError: " + "x" * 200)
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize("phase", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("causal", [False, True])
def test_the_attention_workload_calls_its_implementation_with_the_case_shape_and_mask(monkeypatch, phase, causal):
    calls = []

    def spy(q, k, v, *, causal):
        calls.append((q.shape, q.dtype, causal, torch.is_inference_mode_enabled()))
        return q * k * v

    monkeypatch.setitem(ATTENTION, "spy", AttentionImpl("spy", spy))
    attention_workload(AttentionCase("spy", phase, "fp16", 8, 16, causal, 2, 3), CPU).step()
    assert calls == [((2, 3, 8, 16), torch.float16, causal, phase == "fwd")]


def test_cpu_peak_memory_sees_a_large_allocation():
    memory = PeakMemory(CPU)
    memory.start()
    block = torch.ones(50_000_000)  # 200 MB, touched
    del block
    assert 190e6 < memory.peak_bytes() < 400e6


def test_a_flop_count_that_runs_out_of_memory_keeps_the_timing(benchmark):
    def out_of_memory() -> int:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    row = measure(lambda: Workload(step=lambda: None, flops=out_of_memory), benchmark, FAST)
    assert row.status == "ok" and len(row.rounds_s) >= 2
    assert row.flops is None
    assert row.reason == "FLOPs not counted: out of memory while counting"


def test_an_analytic_count_stands_in_even_where_the_counter_saw_nothing(capsys):
    model = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    assert count_flops(lambda: model(x), model, {"recurrence": 1000}) == 2 * 2 * 4 * 4 + 1000
    assert capsys.readouterr().out == ""  # the counter prints no table


def test_rnn_backward_counts_three_times_the_analytic_forward():
    model = SentimentRNN("gru").train()
    batch = MODELS["gru"].batch("quick", 3, CPU, torch.Generator().manual_seed(0))
    analytic = recurrent_flops(model, batch)
    classifier = 2 * 3 * 512 * 2
    fwdbwd = count_flops(lambda: model(*batch.inputs).sum().backward(), model, analytic, backward=True)
    assert fwdbwd == 3 * analytic["rnn"] + 3 * classifier  # the classifier: forward, grad input, grad weight


class Weights(nn.Module):
    """Holds 200 MB of weights and does nothing with them: its peak is all build."""

    def __init__(self):
        super().__init__()
        self.weights = nn.Parameter(torch.ones(50_000_000), requires_grad=False)

    def forward(self, x):
        return x


def held_weights() -> Workload:
    model = Weights()
    return Workload(step=lambda: model(torch.ones(1)), flops=lambda: 0)


def test_peak_memory_covers_the_build(benchmark):
    row = measure(held_weights, benchmark, FAST)
    assert 190e6 < row.peak_mem_bytes < 400e6 and 190e6 < row.peak_mem_warmup_bytes < 400e6


def test_the_timed_rounds_peak_leaves_out_the_warm_ups_scratch(benchmark):
    def build() -> Workload:
        calls = []

        def step():  # the first call allocates 300 MB of scratch, as cuDNN's algorithm search or autotuning do
            scratch = torch.ones(75_000_000 if not calls else 1_000)
            calls.append(len(scratch))

        return Workload(step=step, flops=lambda: 0)

    row = measure(build, benchmark, FAST)
    assert row.peak_mem_warmup_bytes > 290e6 and row.peak_mem_bytes < 50e6


class FakeProc:
    """Stands in for pathlib.Path in the harness: /proc/self/status reads STATUS; writing raises, as off
    Linux where there is no clear_refs to reset the peak through."""

    STATUS = "Name:\tpython\nVmRSS:\t    2048 kB\nVmHWM:\t    4096 kB\n"

    def __init__(self, path):
        self.path = path

    def read_text(self):
        return self.STATUS

    def write_text(self, text):
        raise OSError("read-only")


def test_proc_status_fields_are_read_in_kibibytes(monkeypatch):
    monkeypatch.setattr("bench.run.harness.Path", FakeProc)
    assert PeakMemory._status_bytes("VmHWM") == 4096 * 1024 and PeakMemory._status_bytes("VmRSS") == 2048 * 1024
    with pytest.raises(OSError, match="^/proc/self/status has no VmSwap$"):
        PeakMemory._status_bytes("VmSwap")


def test_where_the_peak_cannot_be_reset_the_cpu_peak_is_unknown(monkeypatch):
    monkeypatch.setattr("bench.run.harness.Path", FakeProc)
    memory = PeakMemory(CPU)
    memory.start()
    assert memory.peak_bytes() is None


def test_peak_memory_of_one_case_does_not_carry_into_the_next():
    memory = PeakMemory(CPU)
    memory.start()
    block = torch.ones(75_000_000)  # 300 MB, touched, then freed
    del block
    assert memory.peak_bytes() > 290e6
    memory.start()  # the next case
    small = torch.ones(1_000_000)
    assert memory.peak_bytes() < 50e6
    del small


def test_rounds_are_sized_to_fill_the_time_and_bounded(benchmark):
    calls = []

    def step():
        calls.append(None)
        time.sleep(0.002)

    settings = Settings(device=CPU, max_time=0.1, min_rounds=3, warmup_rounds=2)
    row = measure(lambda: Workload(step=step, flops=lambda: 0), benchmark, settings)
    # 0.1 s of rounds of at least 2 ms: at most 50, and well above min_rounds unless the machine stalls
    assert 5 <= len(row.rounds_s) <= 50 and len(calls) == len(row.rounds_s) + 2
    assert all(r >= 0.002 for r in row.rounds_s)


@pytest.mark.parametrize(("warmup_steps_s", "max_time", "plan"), [
    ([5.0, 0.001, 0.001, 0.010], 0.1, (2, 50)),  # the median after the first: 1 ms, not the last step's 10 ms
    ([0.004], 0.2, (1, 50)),  # one warm-up step is all there is
    ([0.5, 0.0005, 0.0005], 1.0, (4, 100)),  # 500 rounds of 2 ms cut to max_rounds
    ([1.0, 2.0], 1.0, (1, 5)),  # half a round raised to min_rounds
], ids=["median-not-last", "one-step", "max-rounds", "min-rounds"])
def test_rounds_are_planned_from_the_median_warm_up_step_after_the_first(warmup_steps_s, max_time, plan):
    settings = Settings(device=CPU, max_time=max_time, min_rounds=5, max_rounds=100)
    assert round_plan(warmup_steps_s, settings) == plan


def test_cpu_steal_is_read_just_before_and_after_the_timed_rounds(monkeypatch, benchmark):
    readings, steps = iter([(100, 1000), (130, 1200)]), []  # 30 of 200 ticks stolen
    monkeypatch.setattr("bench.machine.telemetry.cpu_ticks", lambda: (steps.append("read"), next(readings))[1])
    settings = Settings(device=CPU, max_time=0.01, min_rounds=2, warmup_rounds=2)
    fields = measure(lambda: Workload(step=lambda: steps.append("step"), flops=lambda: 0), benchmark, settings)
    rounds = fields.iterations * len(fields.rounds_s)
    # the warm-up, a reading, the rounds (and any extra call pytest-benchmark makes), a reading
    warm = fields.warmup_rounds
    assert steps[:warm + 1] == ["step"] * warm + ["read"] and steps[-1] == "read" and steps.count("read") == 2
    assert warm >= 2 and steps.count("step") >= warm + rounds
    assert fields.cpu_steal_pct == pytest.approx(15.0)


def busy(seconds: float) -> None:
    """Spin for `seconds` (sleep cannot wait a few microseconds)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_50us_step_is_repeated_so_a_round_lasts_2_milliseconds_and_timed_per_step(benchmark):
    calls = []

    def step():
        calls.append(gc.isenabled())
        busy(50e-6)

    settings = Settings(device=CPU, max_time=0.05, min_rounds=3, warmup_rounds=2)
    row = measure(lambda: Workload(step=step, flops=lambda: 0), benchmark, settings)
    iterations, rounds = row.iterations, len(row.rounds_s)
    assert 20 <= iterations <= 41  # ceil(2 ms / a warm-up round of 50 us or a little more)
    assert all(50e-6 <= r < 500e-6 for r in row.rounds_s)  # per step, not per round
    # warm-up, the timed rounds, and pytest-benchmark's one extra call for the result
    warm = row.warmup_rounds
    assert len(calls) == warm + rounds * iterations + 1 and warm >= 2
    assert all(calls[:warm]) and not any(calls[warm:-1]) and gc.isenabled()  # no GC while timed
    assert row.device_method == "host" and row.device_rounds_s == ()  # a CPU's device time is its host time


def test_a_disabled_benchmark_runs_the_step_once_and_keeps_no_rounds():
    class Disabled:  # pytest-benchmark under --benchmark-disable: one untimed call, no stats
        stats = None

        def pedantic(self, target, rounds, iterations, warmup_rounds):
            target()

    calls = []
    row = measure(lambda: Workload(step=lambda: calls.append(None), flops=lambda: 5), Disabled(), FAST)
    assert row.rounds_s == () and row.reason == "" and row.flops == 5 and len(calls) == row.warmup_rounds + 1


def test_warm_up_lasts_its_seconds_as_well_as_its_rounds(benchmark):
    settings = Settings(device=CPU, max_time=0.01, min_rounds=2, warmup_rounds=1, warmup_s=0.05)
    row = measure(lambda: Workload(step=lambda: time.sleep(0.005), flops=lambda: 0), benchmark, settings)
    assert 0.05 <= row.warmup_s < 0.5 and 5 <= row.warmup_rounds <= 11


def test_an_instruction_count_replaces_the_timed_rounds_after_the_warm_up(monkeypatch):
    calls, counted = [], []

    def count(step):  # stands in for callgrind: runs the step twice, as a count of rounds would
        counted.append((len(calls), gc.isenabled()))
        step()
        step()
        return 1234.5

    monkeypatch.setattr("bench.run.instructions.count", count)
    settings = Settings(device=CPU, warmup_rounds=3, instructions=True)
    fields = measure(lambda: Workload(step=lambda: calls.append(None), flops=lambda: 7, tokens=4), None, settings)
    warm = fields.warmup_rounds
    assert counted == [(warm, False)] and len(calls) == warm + 2  # the warm-up, then only the count: nothing timed
    assert warm >= 3 and fields == Measured(flops=7, batch_tokens=4, warmup_rounds=warm, instructions=1234.5,
                                            build_s=fields.build_s, timed_s=fields.timed_s, flops_s=fields.flops_s)


def test_a_timed_round_waits_for_the_gpu_once_per_round(monkeypatch):
    synced, steps = [], []
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append((len(steps), device)))
    target = TimedRound(lambda: steps.append(None), 3, cuda)
    for _ in range(7):  # two rounds of three, then pytest-benchmark's extra call
        target()
    assert synced == [(3, cuda), (6, cuda)]


def test_on_a_gpu_warm_up_and_rounds_search_cudnn_wait_for_the_device_and_read_its_allocator(monkeypatch,
                                                                                              benchmark):
    cuda, log = torch.device("cuda"), []
    for name, result in (("synchronize", None), ("reset_peak_memory_stats", None), ("max_memory_allocated", 4096)):
        monkeypatch.setattr(torch.cuda, name, lambda device=None, name=name, result=result:
                            log.append((name, device)) or result)
    monkeypatch.setattr(torch.cuda, "_get_nvml_device_index", lambda device: 3)
    readings = iter([(1980.0, 0x1), (1755.0, 0x4 | 0x40), (1900.0, 0x0)])  # idle before, power-capped and hot
    # after the host rounds, fine after the device rounds
    monkeypatch.setattr("bench.machine.telemetry.gpu_clocks",
                        lambda index: log.append(("clocks", index)) or next(readings))

    def device_time(step, device, iterations, rounds, refused):  # stands in for the graph's replays
        log.append(("device time", (iterations, rounds, torch.backends.cudnn.benchmark)))
        return devicetime.DeviceTime((1e-3, 3e-3, 2e-3), "profiler", "not captured: RuntimeError: sync")

    monkeypatch.setattr("bench.run.devicetime.measure_device", device_time)
    settings = Settings(device=cuda, max_time=0.01, min_rounds=2, warmup_rounds=2)
    fields = measure(lambda: Workload(step=lambda: log.append(("step", torch.backends.cudnn.benchmark)),
                                      flops=lambda: 0), benchmark, settings)
    assert (fields.peak_mem_bytes, fields.peak_mem_warmup_bytes) == (4096, 4096)
    assert fields.device_rounds_s == (1e-3, 3e-3, 2e-3) and fields.device_method == "profiler"
    assert fields.reason == "not captured: RuntimeError: sync"
    assert (fields.sm_clock_mhz, fields.throttle) == (1755.0, "sw power cap; hw thermal slowdown")
    # the device time is taken after the host rounds, with their iterations, cuDNN's choices still in force
    device_calls = [value for name, value in log if name == "device time"]
    assert device_calls == [(fields.iterations, min(len(fields.rounds_s), harness.DEVICE_ROUNDS), True)]
    assert [name for name, _ in log].index("device time") == len(log) - 2  # then the last clock reading
    assert {value for name, value in log if name == "step"} == {True} and torch.backends.cudnn.benchmark is False
    assert {device for name, device in log if name not in ("step", "clocks", "device time")} == {cuda}
    assert [value for name, value in log if name == "clocks"] == [3, 3, 3]  # NVML's index: before, after, after
    names = [name for name, _ in log]
    assert names.index("device time") > max(i for i, name in enumerate(names) if name == "max_memory_allocated")
    warm = fields.warmup_rounds
    first_steps = [name for name, _ in log[:2 + 2 * warm]]  # a new peak, then each warm-up step waited for
    assert warm >= 2 and first_steps == ["reset_peak_memory_stats", *["step", "synchronize"] * warm,
                                         "max_memory_allocated"]


def test_a_gpu_case_hands_its_cached_memory_back_when_it_ends_even_if_it_fails(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr("bench.run.harness.fingerprint", lambda device_type: {})
    monkeypatch.setattr(harness, "model_workload", lambda case, device, *shared: (_ for _ in ()).throw(RuntimeError()))
    for device, expected in (("cuda", [True]), ("cpu", [])):
        emptied.clear()
        row = run_case(Case("cnn", "fwd", "fp32", 2), None, Settings(torch.device(device)))
        assert (row.status, row.reason, emptied) == ("error", "RuntimeError: ", expected)  # even with no message


CNN_PER_IMAGE = (conv_flops(3, 32, 32) + conv_flops(32, 32, 32) + conv_flops(32, 64, 16) + conv_flops(64, 64, 16)
                 + 2 * 4096 * 512 + 2 * 512 * 10)


@pytest.mark.parametrize(("phase", "flops"), [
    ("fwd", 2 * CNN_PER_IMAGE),
    ("fwdbwd", 3 * 2 * CNN_PER_IMAGE - 2 * conv_flops(3, 32, 32)),  # no input gradient of the first conv
])
def test_a_model_case_row_carries_its_hand_counted_flops(benchmark, phase, flops):
    row = run_case(Case("cnn", phase, "fp32", 2), benchmark, FAST)
    assert (row.status, row.flops, row.batch_tokens, row.kind) == ("ok", flops, None, "model")
    assert row.environment["torch"] == torch.__version__ and row.peak_mem_bytes > 0


@pytest.mark.parametrize(("phase", "factor"), [("fwd", 1), ("fwdbwd", 3)])
def test_an_rnn_case_row_counts_its_recurrence_analytically(benchmark, phase, factor):
    row = run_case(Case("gru", phase, "fp32", 3), benchmark, FAST)
    model = SentimentRNN("gru")
    batch = MODELS["gru"].batch("quick", 3, CPU, torch.Generator().manual_seed(0))
    assert row.flops == factor * (recurrent_flops(model, batch)["rnn"] + 2 * 3 * 512 * 2)
    assert row.batch_tokens == batch.tokens


@pytest.mark.parametrize(("phase", "causal", "factor"), [("fwd", False, 1.0), ("fwdbwd", True, 3.5 / 2)])
def test_an_attention_case_row_counts_flashattention_flops_and_tokens(benchmark, phase, causal, factor):
    case = AttentionCase("sdpa", phase, "bf16", 32, 16, causal, 2, 3)
    row = run_case(case, benchmark, FAST)
    assert (row.status, row.kind, row.model, row.seqlen, row.head_dim) == ("ok", "attention", None, 32, 16)
    assert row.flops == int(4 * 2 * 3 * 32 * 32 * 16 * factor)
    assert row.batch_tokens == 2 * 32 and len(row.rounds_s) >= 2


def test_the_attention_backward_reaches_every_input():
    work = attention_workload(AttentionCase("naive", "fwdbwd", "bf16", 8, 16, False, 1, 2), CPU)
    work.step()
    closure = dict(zip(work.step.__code__.co_freevars, (c.cell_contents for c in work.step.__closure__),
                       strict=True))
    grads = [t.grad for t in closure["leaves"]]
    assert all(g is not None and g.dtype == torch.bfloat16 and g.abs().sum() > 0 for g in grads)
    assert closure["grad_out"].dtype == torch.bfloat16  # no cast inside the timed step


@pytest.mark.parametrize("phase", ["fwd", "fwdbwd"])
def test_attention_inputs_and_output_grad_are_made_on_the_case_s_device(monkeypatch, phase):
    seen = []

    def spy(q, k, v, *, causal):
        seen.append({t.device.type for t in (q, k, v)})
        return q * k * v

    monkeypatch.setitem(ATTENTION, "spy", AttentionImpl("spy", spy))
    work = attention_workload(AttentionCase("spy", phase, "fp16", 8, 16, False, 1, 2), torch.device("meta"))
    work.step()
    assert seen == [{"meta"}]
    if phase == "fwdbwd":
        closure = dict(zip(work.step.__code__.co_freevars, (c.cell_contents for c in work.step.__closure__),
                           strict=True))
        assert closure["grad_out"].device.type == "meta"


def test_attention_inputs_come_from_a_fixed_seed():
    case = AttentionCase("naive", "fwdbwd", "fp16", 8, 16, False, 1, 2)
    first, second = (attention_workload(case, CPU).step for _ in range(2))
    tensors = [dict(zip(step.__code__.co_freevars, (c.cell_contents for c in step.__closure__), strict=True))
               for step in (first, second)]
    (q1, k1, v1), (q2, k2, v2) = (t["leaves"] for t in tensors)
    assert all(torch.equal(a, b) for a, b in ((q1, q2), (k1, k2), (v1, v2)))
    assert torch.equal(tensors[0]["grad_out"], tensors[1]["grad_out"]) and not torch.equal(q1, k1)
    seed_0 = torch.randn((1, 2, 8, 16), generator=torch.Generator().manual_seed(0)).to(torch.float16)
    assert torch.equal(q1, seed_0)  # the seed every run uses, so runs compare


def test_the_forward_phase_runs_in_inference_mode_and_fwdbwd_frees_old_gradients():
    spec = MODELS["cnn"]
    model = spec.build("quick", None)
    batch = spec.batch("quick", 2, CPU, torch.Generator().manual_seed(0))
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(torch.is_inference_mode_enabled()))
    make_step("fwd", model, batch, spec, PRECISIONS["fp32"], CPU)()
    assert seen == [True] and not model.training
    fwdbwd = make_step("fwdbwd", model, batch, spec, PRECISIONS["fp32"], CPU)
    torch.manual_seed(0)  # the same dropout masks both times
    fwdbwd()
    first = model.features[0].weight.grad.clone()
    torch.manual_seed(0)
    fwdbwd()
    torch.testing.assert_close(model.features[0].weight.grad, first)  # zeroed, not accumulated
    assert seen[1:] == [False, False] and model.training
    held = model.features[0].weight.grad
    fwdbwd()
    assert model.features[0].weight.grad is not held  # freed (set to None), not zeroed in place


def test_the_forward_phase_runs_under_the_precisions_autocast_on_the_case_s_device():
    spec = MODELS["cnn"]
    model = spec.build("quick", None)
    batch = spec.batch("quick", 2, CPU, torch.Generator().manual_seed(0))
    dtypes = []
    model.classifier.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    make_step("fwd", model, batch, spec, PRECISIONS["amp_bf16"], CPU)()
    assert dtypes == [torch.bfloat16]


def test_the_training_step_is_the_seeds_adamw_after_clipping_at_norm_1(monkeypatch):
    """One step against the same model stepped by hand: AdamW(lr 1e-3, weight decay 1e-4) on gradients
    clipped to norm 1; the step frees the old gradients."""
    spec = MODELS["cnn"]
    torch.manual_seed(0)
    model = spec.build("quick", None)
    reference = copy.deepcopy(model)
    batch = spec.batch("quick", 4, CPU, torch.Generator().manual_seed(0))
    clipped = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, max_norm: clipped.append(max_norm) or clip(params, max_norm))
    step = make_step("step", model, batch, spec, PRECISIONS["fp32"], CPU)
    torch.manual_seed(1)  # the same dropout mask for both
    step()
    torch.manual_seed(1)
    spec.loss(reference(*batch.inputs), batch.target).backward()
    clip(reference.parameters(), 1.0)
    torch.optim.AdamW(reference.parameters(), lr=1e-3, weight_decay=1e-4).step()
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)
    assert clipped == [1.0]
    held = next(model.parameters()).grad
    step()
    assert next(model.parameters()).grad is not held


@pytest.mark.parametrize(("precision", "tf32"), [("fp32", False), ("tf32", True)])
def test_every_round_runs_forward_and_backward_under_the_precisions_tf32_switches(precision, tf32, benchmark):
    spec = MODELS["cnn"]
    model = spec.build("quick", None)
    batch = spec.batch("quick", 2, CPU, torch.Generator().manual_seed(0))
    seen = []
    switches = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731

    def record(module, args, out):
        seen.append(("forward", switches()))
        out.register_hook(lambda grad: seen.append(("backward", switches())))

    model.register_forward_hook(record)
    saved = switches()
    make_step("fwdbwd", model, batch, spec, PRECISIONS[precision], CPU)()
    assert seen == [("forward", (tf32, tf32)), ("backward", (tf32, tf32))] and switches() == saved
    row = run_case(Case("cnn", "fwd", precision, 2), benchmark, FAST)
    assert row.status == "ok" and row.tf32 is tf32


@pytest.mark.parametrize(("device", "fused"), [("cpu", False), ("cuda", True)])
def test_the_training_step_uses_fused_adamw_on_cuda(device, fused):
    spec = MODELS["cnn"]
    model = spec.build("quick", None)
    batch = spec.batch("quick", 2, CPU, torch.Generator().manual_seed(0))
    step = make_step("step", model, batch, spec, PRECISIONS["fp32"], torch.device(device))
    work = dict(zip(step.__code__.co_freevars, (c.cell_contents for c in step.__closure__), strict=True))["work"]
    optimizer = dict(zip(work.__code__.co_freevars, (c.cell_contents for c in work.__closure__), strict=True))
    assert bool(optimizer["optimizer"].defaults["fused"]) is fused


@pytest.mark.parametrize(("impl", "backward", "phase", "kernels"), [
    ("triton", "split", "fwd", ["fwd"]), ("triton", "split", "fwdbwd", ["fwd", "dkdv", "dq"]),
    ("triton_1pass", "single_pass", "fwdbwd", ["fwd", "single_pass"])])
def test_a_triton_case_records_the_configs_its_kernels_ran_with(monkeypatch, benchmark, impl, backward, phase,
                                                                kernels):
    from bench.sweep import attention

    monkeypatch.setitem(ATTENTION, impl, AttentionImpl(impl, attention.triton_flash(backward)))  # no CUDA needed
    attention._probe.cache_clear()  # in Triton's interpreter, as the kernel tests run
    row = run_case(AttentionCase(impl, phase, "fp16", 20, 16, True, 1, 2), benchmark, FAST)
    attention._probe.cache_clear()
    assert row.status == "ok", row.reason
    assert [part.split(": ", 1)[0] for part in row.triton_configs.split("; ")] == kernels
    assert "BLOCK_M: 16, BLOCK_N: 16" in row.triton_configs and row.cudnn_benchmark is False
    from bench.machine.validate import HostRounds  # a second timer: pytest-benchmark's fixture times once a test

    plain = run_case(Case("cnn", "fwd", "fp32", 2), HostRounds(), FAST)
    assert plain.status == "ok" and plain.triton_configs is None


def test_oom_detection():
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB"))
    assert not is_oom(RuntimeError("shape mismatch")) and not is_oom(ValueError("can't allocate memory"))


def test_a_gpu_row_says_cudnn_searched_and_carries_the_gpu_s_fingerprint(monkeypatch):
    class Elsewhere(Case):
        def unavailable(self, device):
            return f"not on {device.type} today"

    asked = []
    monkeypatch.setattr("bench.run.harness.fingerprint", lambda device_type: asked.append(device_type) or {"gpu": "x"})
    row = run_case(Elsewhere("cnn", "fwd", "fp32", 2), None, Settings(torch.device("cuda")))
    assert (row.status, row.reason, row.device) == ("skipped", "not on cuda today", "cuda")
    assert row.cudnn_benchmark is True and asked == ["cuda"] and row.environment == {"gpu": "x"}


def test_a_slowed_cpu_step_busy_waits_its_fraction_of_the_step_after_it():
    step = harness.slowed(Workload(step=lambda: time.sleep(0.01), flops=lambda: 3), 0.5, CPU)
    start = time.perf_counter()
    step()
    assert 0.015 <= time.perf_counter() - start < 0.03


def test_a_slowed_gpu_step_sleeps_on_the_device_for_its_fraction_of_the_step_s_device_time(monkeypatch):
    log = []
    monkeypatch.setattr(devicetime, "measure_device", lambda step, device, iterations, rounds, refused:
                        log.append(("sized", refused)) or devicetime.DeviceTime((2e-3, 4e-3, 3e-3), "graph"))
    monkeypatch.setattr(devicetime, "sleep_cycles_per_s", lambda device: 1.5e9)
    monkeypatch.setattr(torch.cuda, "_sleep", lambda cycles: log.append(("sleep", cycles)))
    work = Workload(step=lambda: log.append("step"), flops=lambda: 0, capture_refused="an optimizer step")
    harness.slowed(work, 0.05, torch.device("cuda"))()
    # sized as the step's device time is measured (the refusal passed on); 5 % of the 3 ms median, at 1.5 GHz
    assert log == [("sized", "an optimizer step"), "step", ("sleep", int(0.05 * 3e-3 * 1.5e9))]
    monkeypatch.setattr(devicetime, "measure_device", lambda *args: devicetime.DeviceTime((), "", "no profiler"))
    with pytest.raises(RuntimeError, match="^the slowdown could not be sized: no device time \\(no profiler\\)$"):
        harness.slowed(work, 0.05, torch.device("cuda"))


def test_a_slowed_case_is_sized_after_its_warm_up_and_timed_slower(benchmark):
    calls = []
    settings = Settings(device=CPU, max_time=0.02, min_rounds=3, warmup_rounds=2)
    fields = measure(lambda: Workload(step=lambda: calls.append(None) or time.sleep(0.004), flops=lambda: 0),
                     benchmark, settings, slowdown=0.5)
    assert fields.warmup_rounds == 2 and len(calls) >= 2 + harness.SLOWDOWN_SIZING_STEPS
    assert all(r >= 0.004 * 1.5 for r in fields.rounds_s)  # 4 ms and half of it again, each step


@pytest.mark.parametrize(("phase", "mode", "refused"), [
    ("fwd", "eager", ""), ("fwdbwd", "compile", ""),
    ("step", "eager", "an optimizer step: AdamW is not capturable"),
    ("fwd", "cudagraphs", "torch.compile's mode reduce-overhead replays CUDA graphs of its own"),
    ("fwd", "compile-max-autotune", "torch.compile's mode max-autotune replays CUDA graphs of its own"),
])
def test_device_time_does_not_try_to_capture_an_optimizer_step_nor_a_mode_with_cuda_graphs(phase, mode, refused):
    work = harness.model_workload(Case("cnn", phase, "fp32", 2, mode=mode), CPU)
    assert work.capture_refused.startswith(refused) and bool(work.capture_refused) == bool(refused)


def test_no_warm_up_asked_still_warms_up_once_to_size_the_rounds(benchmark):
    fields = measure(lambda: Workload(step=lambda: time.sleep(0.001), flops=lambda: 0), benchmark,
                     Settings(device=CPU, max_time=0.01, min_rounds=2, warmup_rounds=0))
    assert 1 <= fields.warmup_rounds <= 20 and fields.iterations >= 1 and len(fields.rounds_s) >= 2


def test_what_measure_hands_over_is_a_row_s_fields_with_the_row_s_defaults():
    """A row takes a Measured whole: every field is the row's, and an unmeasured one leaves the row as it was."""
    row_fields = {f.name: f for f in dataclasses.fields(Row)}
    for f in dataclasses.fields(Measured):
        assert f.name in row_fields and f.default == row_fields[f.name].default, f.name


def test_a_quiet_step_stops_when_its_median_is_precise_enough(benchmark):
    settings = Settings(device=CPU, max_time=5.0, min_rounds=5, target=0.05)
    row = measure(lambda: Workload(step=lambda: busy(0.003), flops=lambda: 0), benchmark, settings)
    assert 6 <= len(row.rounds_s) <= 30 and row.timed_s < 1.0  # not the 5 s cap: about 1,600 rounds
    assert Row("c", "model", "fwd", "fp32", 1, "cpu", rounds_s=row.rounds_s, ci_target=0.05).figures["converged"]
    assert benchmark.has_error is False  # the planned stop is not an error to pytest-benchmark


def test_without_a_target_the_rounds_fill_the_cap(benchmark):
    settings = Settings(device=CPU, max_time=0.1, min_rounds=5, target=0.0)
    row = measure(lambda: Workload(step=lambda: busy(0.003), flops=lambda: 0), benchmark, settings)
    assert len(row.rounds_s) == 34  # ceil(0.1 s / 3 ms)


def test_warm_up_ends_when_the_step_is_warm_not_after_a_fixed_count(benchmark):
    durations = iter([0.05, 0.0101, 0.01] + [0.01] * 100)  # compiling, then two steps alike: warm
    calls = []

    def step():
        calls.append(None)
        busy(next(durations))

    settings = Settings(device=CPU, max_time=1.0, min_rounds=2)
    row = measure(lambda: Workload(step=step, flops=lambda: 0), benchmark, settings)
    assert row.warmup_rounds == 3 and 0.07 <= row.warmup_s < 0.2 and len(calls) > 3


def test_a_slow_step_warms_up_twice_at_most_once_past_its_timing_cap(benchmark):
    durations = iter([0.1, 0.05, 0.08] + [0.05] * 100)  # never two alike in a row until the fourth
    settings = Settings(device=CPU, max_time=0.12, min_rounds=2)
    row = measure(lambda: Workload(step=lambda: busy(next(durations)), flops=lambda: 0), benchmark, settings)
    assert row.warmup_rounds == 2  # 0.15 s is past the 0.12 s cap: not warm, but warm-up ends


def test_cases_differing_only_in_phase_and_precision_share_one_build():
    builds = harness.Builds()
    made = []

    def build():
        made.append(None)
        return nn.Linear(2, 2), Batch(inputs=(torch.ones(1, 2),), target=torch.zeros(1, dtype=torch.long))

    first = builds.get(Case("cnn", "fwd", "fp32", 2), CPU, build)
    assert builds.get(Case("cnn", "fwdbwd", "amp_bf16", 2), CPU, build) is first and len(made) == 1
    assert builds.get(Case("cnn", "fwd", "fp32", 4), CPU, build) is not first and len(made) == 2
    first.model.weight.grad = torch.ones(2, 2)
    builds.last.model.weight.grad = torch.ones(2, 2)
    builds.release()
    assert builds.last.model.weight.grad is None  # the next case starts without this one's gradients
    builds.release(failed=True)
    assert builds.last is None


class Untimed:
    """pytest-benchmark under --benchmark-disable: one untimed call, no stats."""

    stats = None

    def pedantic(self, target, **kwargs):
        target()


def test_a_shared_build_is_handed_on_by_run_case_and_dropped_after_a_failure(benchmark, monkeypatch):
    builds = harness.Builds()
    fwd = run_case(Case("cnn", "fwd", "fp32", 2), Untimed(), FAST, builds)
    model = builds.last.model
    fwdbwd = run_case(Case("cnn", "fwdbwd", "fp32", 2), benchmark, FAST, builds)
    assert fwd.status == fwdbwd.status == "ok" and builds.last.model is model
    assert fwd.build_s > 0 and fwdbwd.build_s < fwd.build_s  # the second case built nothing
    assert all(p.grad is None for p in model.parameters())
    monkeypatch.setattr(harness, "make_step", lambda *args: (_ for _ in ()).throw(RuntimeError("broken")))
    assert run_case(Case("cnn", "fwd", "amp_bf16", 2), None, FAST, builds).status == "error"
    assert builds.last is None


def test_a_compiled_case_builds_its_own_model():
    builds, made = harness.Builds(), []
    builds.get(Case("cnn", "fwd", "fp32", 2), CPU, lambda: made.append(1) or (nn.Linear(1, 1), None))
    harness.model_workload(Case("cnn", "fwd", "fp32", 2, mode="compile"), CPU, builds)
    assert len(made) == 1 and builds.last.key[0] == "cnn"  # the shared build untouched, not reused


@pytest.mark.parametrize(("flags", "emulated"), [(frozenset({"avx2"}), True), (frozenset({"avx2", "amx_bf16"}), False)])
def test_a_row_says_whether_its_precision_is_emulated(monkeypatch, flags, emulated):
    monkeypatch.setattr("bench.sweep.precision.cpu_flags", lambda: flags)
    case = Case("cnn", "fwd", "amp_bf16", 2, left_out="not timed here")  # the row's identity is all this needs
    row = run_case(case, None, FAST)
    assert row.emulated is emulated and row.status == "skipped"
    assert run_case(dataclasses.replace(case, precision="fp32"), None, FAST).emulated is False
