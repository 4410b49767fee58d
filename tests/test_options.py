"""Option parsing, called directly: every bad value is one line naming the valid choices."""

import pytest
import torch

from bench.cases import AttentionCase, Case
from bench.options import (
    OptionError,
    SweepOptions,
    check_profile_steps,
    check_run_id,
    parse_batch_sizes,
    parse_choice,
    parse_names,
    resolve_device,
)
from bench.rundir import REPORTS_DIR

VALID = ("cnn", "lstm", "encoder")
DEFAULTS = {"models": None, "phases": "fwd,fwdbwd", "precisions": "fp32,amp_bf16", "attn": None, "batch_sizes": None,
            "device": "cpu", "size": "quick", "run_id": None, "reports_dir": None, "benchmark_max_time": "1.0",
            "benchmark_min_rounds": 5, "profile": False, "profile_steps": 3, "profile_stacks": False}


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
                                                           "sdpa_cudnn", "sdpa_math", "triton"}


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
