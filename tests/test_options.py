"""Option parsing, called directly: every bad value is one line naming the valid choices."""

import pytest
import torch

from bench.results.rundir import REPORTS_DIR
from bench.sweep.attention import ATTENTION
from bench.sweep.cases import AttentionCase, Case
from bench.sweep.models import MODELS
from bench.sweep.options import (
    OptionError,
    SweepOptions,
    check_profile_steps,
    check_run_id,
    parse_batch_sizes,
    parse_choice,
    parse_names,
    preset_triton_keys,
    resolve_device,
)

VALID = ("cnn", "lstm", "encoder")
DEFAULTS = {"models": None, "phases": None, "precisions": None, "attn": None, "modes": None, "memory_format": None,
            "batch_sizes": None, "preset": None,
            "device": "cpu", "size": None, "run_id": None, "reports_dir": None, "benchmark_max_time": "1.0",
            "benchmark_min_rounds": 5, "profile": False, "profile_steps": 3, "profile_stacks": False,
            "instructions": False}


def options(**values) -> SweepOptions:
    return SweepOptions.from_values({**DEFAULTS, **values}.get)


def test_names_are_split_stripped_deduplicated_and_all_expands():
    assert parse_names("models", " lstm, cnn,lstm ,", VALID) == ["lstm", "cnn"]
    assert parse_names("models", "all", VALID) == list(VALID)


@pytest.mark.parametrize(("value", "what"), [("cnn,alexnet", "unknown name 'alexnet'"), ("", "no name given"),
                                             (" , ", "no name given"), ("all,cnn", "unknown name 'all'")])
def test_bad_names_are_refused_naming_the_valid_ones(value, what):
    with pytest.raises(OptionError) as err:
        parse_names("models", value, VALID)
    assert str(err.value) == f"--models: {what}; valid names: cnn, lstm, encoder (or all)"


def test_batch_sizes():
    assert parse_batch_sizes("8, 2,8") == [8, 2]
    assert parse_batch_sizes(None) is None and parse_batch_sizes("") is None


@pytest.mark.parametrize("value", ["0", "4,0", "-1", "x", "2.5", ","])
def test_bad_batch_sizes_are_refused(value):
    with pytest.raises(OptionError, match=f"--batch-sizes: expected positive integers separated by commas, got "
                                          f"'{value}'"):
        parse_batch_sizes(value)


@pytest.mark.parametrize("run_id", ["r1", "2026-01-01_a.b", "A"])
def test_good_run_ids(run_id):
    assert check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", ".hidden", "..", "a/b", "../x", "a b", "x:y"])
def test_bad_run_ids_are_refused(run_id):
    with pytest.raises(OptionError, match="--run-id: .* must be letters, digits"):
        check_run_id(run_id)


def test_choices_and_devices():
    assert parse_choice("size", "full", ("quick", "full")) == "full"
    with pytest.raises(OptionError, match="^--size: unknown value 'huge'; valid values: quick, full$"):
        parse_choice("size", "huge", ("quick", "full"))
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(OptionError, match="^--device: unknown value 'tpu'; valid values: auto, cpu, cuda$"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(OptionError, match="--device cuda: no CUDA device is available here"):
        resolve_device("cuda")


def test_profile_steps_must_be_positive():
    assert check_profile_steps(1) == 1
    with pytest.raises(OptionError, match="--profile-steps: expected a positive integer, got 0"):
        check_profile_steps(0)


def test_defaults_give_the_quick_sweep():
    opts = options()
    assert opts.reports_dir == REPORTS_DIR and not opts.run_id_given
    assert (opts.max_time, opts.min_rounds, opts.profile) == (1.0, 5, False)
    assert Case("cnn", "fwd", "fp32", 8) in opts.cases
    assert {c.attention for c in opts.cases if c.model == "encoder"} == {"naive", "sdpa"}  # the model default
    assert {c.attention for c in opts.attention_cases} == {"naive", "sdpa", "sdpa_flash", "sdpa_efficient",
                                                           "sdpa_cudnn", "sdpa_math", "triton",
                                                           "triton_1pass"}


def test_values_reach_the_cases_and_the_run(tmp_path):
    opts = options(models="encoder", phases="fwd", precisions="fp32", batch_sizes="3", attn="sdpa", size="full",
                   run_id="mine", reports_dir=str(tmp_path), benchmark_max_time="0.25", benchmark_min_rounds=7,
                   profile=True, profile_steps=2)
    assert opts.cases == (Case("encoder", "fwd", "fp32", 3, "sdpa", "full"),)
    assert opts.attention_cases[0] == AttentionCase("sdpa", "fwd", "fp16", 1024, 64, False, 4, 16)
    assert (opts.run_id, opts.run_id_given, opts.reports_dir) == ("mine", True, tmp_path)
    assert (opts.max_time, opts.min_rounds, opts.profile, opts.profile_steps) == (0.25, 7, True, 2)


def test_a_given_run_id_that_exists_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OptionError, match="--run-id: .*taken already exists; choose another run id"):
        options(run_id="taken", reports_dir=str(tmp_path))


HELP = """\
  --models=NAMES        models to benchmark. Comma-separated, or all. Valid: cnn, lstm, gru, encoder, decoder, resnet50,
                        efficientnet_b0, convnext_tiny, vit_b_16. Default: all
  --phases=NAMES        fwd = forward in inference mode; fwdbwd = forward, loss, backward; step = full training step.
                        Comma-separated, or all. Valid: fwd, fwdbwd, step. Default: fwd,fwdbwd
  --precisions=NAMES    fp32 (IEEE), tf32 (TF32 tensor cores), or autocast to fp16 (with GradScaler) or bf16.
                        Comma-separated, or all. Valid: fp32, tf32, amp_fp16, amp_bf16. Default: fp32,amp_bf16
  --attn=NAMES          attention implementations; default naive,sdpa in the model sweep, all in the attention
                        micro-benchmark. Comma-separated, or all. Valid: naive, sdpa, sdpa_flash, sdpa_efficient,
                        sdpa_cudnn, sdpa_math, triton, triton_1pass.
  --modes=NAMES         execution modes of the model sweep: eager, torch.compile (inductor's default or max-autotune
                        mode), or CUDA graphs (torch.compile's reduce-overhead; CUDA only). Comma-separated, or all.
                        Valid: eager, compile, compile-max-autotune, cudagraphs. Default: eager
  --batch-sizes=N,N     batch sizes for every model, comma-separated. Default: each model's own for --size
  --memory-format=FORMAT
                        contiguous or channels_last: the layout of the convolutional models' weights and images (the
                        others run contiguous). Default: contiguous
  --device=DEVICE       auto (cuda if available, else cpu), cpu or cuda
  --size=SIZE           quick (small inputs, a CPU sweep in minutes) or full (224px images, seq 512). Default: quick, or
                        the preset's
  --preset=NAME         a named sweep. Valid: gpu (every model at full size under fp32, amp_fp16 and amp_bf16, every
                        attention implementation, the attention micro-benchmark at seq 1k-16k, short timing: about 4
                        minutes on an H100). Options given beside it override its values
  --ci-target=PCT       time each case until its median's 95 % interval is within +-PCT % of it (after
                        --benchmark-min-rounds rounds), or until --benchmark-max-time seconds (then it is flagged 'not
                        converged'); 0 times every case to the cap. Default: by device (cpu 2 %, cuda 0.5 %)
  --budget=DURATION     the whole sweep's time, e.g. 300, 5m or 1h: each case gets what is left over the cases left,
                        cases cut short are flagged 'not converged', and once it is spent the cases left are recorded as
                        not run
  --run-id=RUN_ID       name of this run's folder under the reports dir. Default: timestamp-host
  --reports-dir=REPORTS_DIR
                        where run folders go. Default: reports/ in the working directory
  --profile             after timing each case, profile it in a separate pass (torch.profiler) into
                        reports/<run-id>/traces/<case-id>/ for TensorBoard
  --profile-steps=N     active profiler steps per case, after 1 wait and 1 warm-up step. Default: 3
  --profile-stacks      record Python stacks in the traces (slower)
  --instructions        count each case's instructions per step under valgrind's callgrind, single-threaded, instead of
                        timing it (CPU only; `python -m bench ab --instructions` runs the sweep so)"""


def test_pytest_help_lists_the_options_with_their_choices_and_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    assert pytest.main(["--help", "-p", "no:cacheprovider"]) == 0
    out = capsys.readouterr().out
    assert out.split("archbench sweep (pytest bench --benchmark-only):\n", 1)[1].split("\n\n", 1)[0] == HELP


def test_option_defaults_as_pytest_parses_them(capsys):
    seen = {}

    class Capture:
        def pytest_configure(self, config):
            seen.update({name: config.getoption(name) for name in DEFAULTS if not name.startswith("benchmark")})

    pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests/test_plotting.py"], plugins=[Capture()])
    capsys.readouterr()
    # list options, --size and --preset are None until SweepOptions resolves them (a preset's, else the default)
    assert seen == {"models": None, "phases": None, "precisions": None, "attn": None, "modes": None,
                    "memory_format": None, "preset": None, "batch_sizes": None, "device": "auto", "size": None,
                    "run_id": None, "reports_dir": None,
                    "profile": False, "profile_steps": 3, "profile_stacks": False,
                    "instructions": False}


def test_batch_size_1_is_valid():
    assert parse_batch_sizes("1") == [1]


def test_auto_picks_cuda_where_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda") == torch.device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_cuda_without_a_gpu_is_one_exact_line():
    with pytest.raises(OptionError) as err:
        resolve_device("cuda")
    assert str(err.value) == "--device cuda: no CUDA device is available here; use --device cpu or auto"


@pytest.mark.parametrize(("values", "message"), [
    ({"models": "cnn,alexnet"}, "--models: unknown name 'alexnet'; valid names: cnn, lstm, gru, encoder, decoder, "
                                "resnet50, efficientnet_b0, convnext_tiny, vit_b_16 (or all)"),
    ({"phases": "bwd"}, "--phases: unknown name 'bwd'; valid names: fwd, fwdbwd, step (or all)"),
    ({"precisions": "fp8"}, "--precisions: unknown name 'fp8'; valid names: fp32, tf32, amp_fp16, amp_bf16 (or all)"),
    ({"attn": "flash"}, "--attn: unknown name 'flash'; valid names: naive, sdpa, sdpa_flash, sdpa_efficient, "
                        "sdpa_cudnn, sdpa_math, triton, triton_1pass (or all)"),
    ({"batch_sizes": "8,x"}, "--batch-sizes: expected positive integers separated by commas, got '8,x'"),
    ({"size": "huge"}, "--size: unknown value 'huge'; valid values: quick, full"),
    ({"device": "tpu"}, "--device: unknown value 'tpu'; valid values: auto, cpu, cuda"),
    ({"run_id": "../x"}, "--run-id: '../x' must be letters, digits, '-', '_' or '.'"),
    ({"profile_steps": 0}, "--profile-steps: expected a positive integer, got 0"),
])
def test_sweep_options_name_the_bad_option(values, message):
    """The sweep's whole option set, as the plugin reads it: one exact line per bad value (test_sweep.py
    checks that pytest prints it alone)."""
    with pytest.raises(OptionError) as err:
        options(**values)
    assert str(err.value) == message


def test_instructions_are_counted_on_the_cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(OptionError) as err:
        options(instructions=True, device="cuda")
    assert str(err.value) == "--instructions: counts CPU instructions; use --device cpu, not cuda"


def test_instructions_outside_callgrind_are_refused_in_one_line(monkeypatch):
    """Natively (or with no helper to build) the sweep says how it must run."""
    with pytest.raises(OptionError) as err:
        options(instructions=True)
    assert str(err.value).startswith("--instructions") and "callgrind" in str(err.value)
    assert "\n" not in str(err.value)
    assert options().instructions is False


def test_device_and_profile_switches_reach_the_options():
    opts = options(profile_stacks=True)
    assert opts.device == torch.device("cpu") and opts.profile_stacks is True and opts.profile is False


def test_profile_steps_parse_as_a_number(capsys):
    seen = {}

    class Capture:
        def pytest_configure(self, config):
            seen["steps"] = config.getoption("profile_steps")

    pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "--profile-steps", "2", "tests/test_plotting.py"],
                plugins=[Capture()])
    capsys.readouterr()
    assert seen == {"steps": 2}


def test_the_gpu_preset_sweeps_its_parts_at_full_size_with_short_timing():
    opts = options(preset="gpu")
    assert {c.size for c in opts.cases} == {"full"} and (opts.max_time, opts.min_rounds) == (0.1, 3)
    assert len(opts.cases) == len(set(opts.cases)) == 61  # a case in two parts (encoder's bf16 sdpa) once
    smaller = {m: spec.batch_sizes["full"][0] for m, spec in MODELS.items()}
    fwdbwd = {(c.model, c.precision, c.batch) for c in opts.cases if c.phase == "fwdbwd" and c.attention != "naive"}
    assert fwdbwd >= {(m, p, b) for m, b in smaller.items() for p in ("fp32", "amp_fp16", "amp_bf16")}
    assert {(c.model, c.batch) for c in opts.cases if c.model == "cnn" and c.phase == "fwdbwd"} == {("cnn", 128),
                                                                                                  ("cnn", 512)}
    assert {c.attention for c in opts.cases if c.model == "decoder"} == set(ATTENTION)
    assert {(c.model, c.precision) for c in opts.cases if c.phase == "step"} == {("cnn", "amp_bf16"),
                                                                                ("encoder", "amp_bf16")}
    micro = opts.attention_cases
    assert {c.precision for c in micro} == {"bf16"} and {c.seqlen for c in micro} == {1024, 16384}
    assert {c.attention for c in micro} == {"triton", "sdpa_flash", "sdpa_cudnn"}
    assert len(micro) == 2 * 2 * 2 * 2 * 3  # phases x masks x head dims x lengths x implementations


def test_options_given_beside_a_preset_override_it_in_every_part():
    opts = options(preset="gpu", models="cnn", precisions="amp_bf16", attn="sdpa", size="quick")
    assert {(c.model, c.precision, c.size) for c in opts.cases} == {("cnn", "amp_bf16", "quick")}
    assert {c.phase for c in opts.cases} == {"fwd", "fwdbwd", "step"}  # the parts' phases, still
    assert {c.attention for c in opts.attention_cases} == {"sdpa"}
    given = options(preset="gpu", benchmark_max_time="2.0", benchmark_min_rounds=7)
    assert (given.max_time, given.min_rounds) == (0.1, 3)  # not named on the command line: the preset's
    named = SweepOptions.from_values({**DEFAULTS, "preset": "gpu", "benchmark_max_time": "2.0"}.get,
                                     lambda name: name == "benchmark_max_time")
    assert (named.max_time, named.min_rounds) == (2.0, 3)


def test_an_unknown_preset_is_one_line_naming_the_valid_ones():
    with pytest.raises(OptionError) as err:
        options(preset="tpu")
    assert str(err.value) == "--preset: unknown value 'tpu'; valid values: gpu"


def test_the_gpu_preset_compiles_triton_for_both_backwards_in_bf16():
    keys = preset_triton_keys("gpu")
    assert {backward for backward, *_ in keys} == {"split", "single_pass"}
    assert {dtype for _, dtype, _, _ in keys} == {torch.bfloat16}
    assert {head_dim for _, _, head_dim, _ in keys} == {64, 128, MODELS["encoder"].head_dim}
    assert ("split", torch.bfloat16, MODELS["decoder"].head_dim, True) in keys


def test_the_trust_stage_s_variable_adds_a_slowed_copy_after_every_case(monkeypatch):
    monkeypatch.setenv("ARCHBENCH_SLOWDOWN", "0.05")
    slowed = options(models="cnn", phases="fwd", precisions="fp32", batch_sizes="2", attn="naive")
    cnn = Case("cnn", "fwd", "fp32", 2)
    assert slowed.cases == (cnn, Case("cnn", "fwd", "fp32", 2, slowdown=0.05))
    assert [case.id for case in slowed.cases] == ["cnn-fwd-fp32-b2", "cnn-fwd-fp32-b2-slow5"]
    assert [case.id for case in slowed.attention_cases[:2]] == ["attn-fwd-fp16-full-d64-s128-naive",
                                                                "attn-fwd-fp16-full-d64-s128-naive-slow5"]
    monkeypatch.delenv("ARCHBENCH_SLOWDOWN")
    assert options(models="cnn", phases="fwd", precisions="fp32", batch_sizes="2").cases == (cnn,)


NO_HALF = frozenset({"avx", "avx2", "fma", "f16c"})  # the 2-core AMD EPYC: bf16 and fp16 emulated
NATIVE_HALF = NO_HALF | {"amx_bf16", "amx_fp16", "avx512_bf16", "avx512_fp16"}


def test_a_default_sweep_times_an_emulated_precision_forward_at_the_smallest_batch_only(monkeypatch):
    monkeypatch.setattr("bench.sweep.precision.cpu_flags", lambda: NO_HALF)
    swept = options(models="cnn", device="cpu")
    timed = {case.id for case in swept.cases if not case.left_out}
    assert timed == {"cnn-fwd-fp32-b8", "cnn-fwdbwd-fp32-b8", "cnn-fwd-fp32-b32", "cnn-fwdbwd-fp32-b32",
                     "cnn-fwd-amp_bf16-b8"}
    left_out = [case for case in swept.cases if case.left_out]
    assert {case.id for case in left_out} == {"cnn-fwdbwd-amp_bf16-b8", "cnn-fwd-amp_bf16-b32",
                                               "cnn-fwdbwd-amp_bf16-b32"}
    assert left_out[0].unavailable(torch.device("cpu")) == (
        "bf16 is emulated on this CPU: none of avx512_bf16/amx_bf16/bf16 among its flags: the default sweep times "
        "amp_bf16 forward at the smallest batch only; --precisions amp_bf16 times every case")
    micro = {case.precision for case in swept.attention_cases if not case.left_out}
    assert micro == {"bf16"} and len(swept.attention_cases) == 256  # fp16's cases recorded, not timed


@pytest.mark.parametrize(("flags", "values"), [(NATIVE_HALF, {}), (NO_HALF, {"precisions": "fp32,amp_bf16"})],
                         ids=["native", "named"])
def test_a_native_or_named_precision_is_timed_in_full(monkeypatch, flags, values):
    monkeypatch.setattr("bench.sweep.precision.cpu_flags", lambda: flags)
    swept = options(models="cnn", device="cpu", **values)
    assert not any(case.left_out for case in (*swept.cases, *swept.attention_cases))
    assert len(swept.cases) == 8


def test_a_budget_is_refused_under_ab(monkeypatch):
    monkeypatch.setenv("ARCHBENCH_TURNS", "3,4")
    with pytest.raises(OptionError, match=r"^--budget: not under ab, whose two sides must time the same cases"):
        options(budget="5m")
