"""The sweep's pytest options: their help, defaults and validation (unknown names fail in one line)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench import MAX_TIME_S, MIN_ROUNDS
from bench.errors import OptionError
from bench.results.rundir import REPORTS_DIR, default_run_id
from bench.run import instructions, stopping
from bench.run.budget import parse_duration
from bench.sweep.attention import ATTENTION, TRITON_BACKWARDS
from bench.sweep.cases import (
    PHASES,
    SLOWDOWN_ENV,
    AttentionCase,
    Case,
    attention_sweep,
    sweep,
    trim_emulated,
    trim_emulated_attention,
    with_slowed,
)
from bench.sweep.models import MODELS, SIZES
from bench.sweep.modes import MEMORY_FORMATS, MODES
from bench.sweep.precision import PRECISIONS
from bench.verdicts import turns

DEVICES = ("auto", "cpu", "cuda")

# option name -> (valid names, default (None: decided per benchmark), help)
LIST_OPTIONS = {
    "models": (tuple(MODELS), "all", "models to benchmark"),
    "phases": (PHASES, "fwd,fwdbwd",
               "fwd = forward in inference mode; fwdbwd = forward, loss, backward; step = full training step"),
    "precisions": (tuple(PRECISIONS), "fp32,amp_bf16",
                   "fp32 (IEEE), tf32 (TF32 tensor cores), or autocast to fp16 (with GradScaler) or bf16"),
    "attn": (tuple(ATTENTION), None, "attention implementations; default naive,sdpa in the model sweep, "
             "all in the attention micro-benchmark"),
    "modes": (tuple(MODES), "eager", "execution modes of the model sweep: eager, torch.compile (inductor's default "
              "or max-autotune mode), or CUDA graphs (torch.compile's reduce-overhead; CUDA only)"),
}
MODEL_ATTENTION_DEFAULT = "naive,sdpa"


def parse_names(option: str, value: str, valid: tuple[str, ...]) -> list[str]:
    """Split a comma-separated list ('all' for every valid name), rejecting unknown or empty entries."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if names == ["all"]:
        return list(valid)
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        what = f"unknown name '{unknown[0]}'" if unknown else "no name given"
        raise OptionError(f"--{option}: {what}; valid names: {', '.join(valid)} (or all)")
    return list(dict.fromkeys(names))


def parse_counts(option: str, value: str) -> list[int]:
    """Positive integers separated by commas, each once, in the order given."""
    try:
        counts = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise OptionError(f"--{option}: expected positive integers separated by commas, got '{value}'")
    return list(dict.fromkeys(counts))


def parse_batch_sizes(value: str | None) -> list[int] | None:
    return parse_counts("batch-sizes", value) if value else None


def parse_choice(option: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise OptionError(f"--{option}: unknown value '{value}'; valid values: {', '.join(valid)}")
    return value


def resolve_device(value: str) -> torch.device:
    parse_choice("device", value, DEVICES)
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return torch.device(value)


def check_run_id(run_id: str) -> str:
    if not run_id or run_id.startswith(".") or not all(c.isalnum() or c in "-_." for c in run_id):
        raise OptionError(f"--run-id: '{run_id}' must be letters, digits, '-', '_' or '.'")
    return run_id


def check_instructions(device: torch.device) -> None:
    """Instruction counts are of CPU code, in a sweep that runs under callgrind."""
    if device.type != "cpu":
        raise OptionError(f"--instructions: counts CPU instructions; use --device cpu, not {device.type}")
    try:
        instructions.check_under_callgrind()
    except instructions.InstructionsError as err:
        raise OptionError(str(err)) from None


def parse_percent(option: str, value: str) -> float:
    """A share from a percentage ('2', '2%', '0.5'): 0 to 100."""
    try:
        pct = float(str(value).strip().removesuffix("%"))
    except ValueError:
        pct = -1.0
    if not 0 <= pct <= 100:
        raise OptionError(f"--{option}: expected a percentage from 0 to 100 such as 2 or 0.5%, got '{value}'")
    return pct / 100


def check_budget(value: str | None) -> float | None:
    """A budget's seconds; refused under `ab`, whose two sides must time the same cases."""
    if not value:
        return None
    if turns.active():
        raise OptionError("--budget: not under ab, whose two sides must time the same cases in the same rounds")
    return parse_duration("budget", value)


def check_profile_steps(steps: int) -> int:
    if steps < 1:
        raise OptionError(f"--profile-steps: expected a positive integer, got {steps}")
    return steps


@dataclass(frozen=True)
class Preset:
    """A named sweep: model cases in parts (each part's list options make a product of their own), the
    attention micro-benchmark's implementations, phases, dtypes and sequence lengths, and the timing."""

    size: str
    parts: tuple[dict[str, str], ...]
    attention: dict[str, Any]
    max_time: float
    min_rounds: int


# A part's "batches" picks among each model's own batch sizes where --batch-sizes is not given.
BATCH_PICKS = {"smaller": slice(0, 1), "larger": slice(-1, None)}
PRESETS = {
    # Every model at full size: forward and forward+backward under fp32, fp16 and bf16 autocast at its
    # smaller batch, forward+backward in bf16 at its larger one, a training step for two models, every
    # attention implementation in the two attention models; the attention micro-benchmark from 1k to 16k
    # against the two fastest SDPA backends. Sized from an H200's ~2 s per case (its warm-up >= 0.5 s,
    # 0.1 s of timing, the build and the FLOP count): 109 cases, about 4 minutes.
    "gpu": Preset(
        size="full",
        parts=(
            {"models": "all", "phases": "fwdbwd", "precisions": "fp32,amp_fp16,amp_bf16", "attn": "sdpa",
             "batches": "smaller"},
            {"models": "all", "phases": "fwd", "precisions": "amp_bf16", "attn": "sdpa", "batches": "smaller"},
            {"models": "all", "phases": "fwdbwd", "precisions": "amp_bf16", "attn": "sdpa", "batches": "larger"},
            {"models": "encoder,decoder", "phases": "fwdbwd", "precisions": "amp_bf16", "attn": "all",
             "batches": "smaller"},
            {"models": "cnn,encoder", "phases": "step", "precisions": "amp_bf16", "attn": "sdpa", "batches": "smaller"},
        ),
        attention={"attn": "triton,sdpa_flash,sdpa_cudnn", "phases": "fwd,fwdbwd", "dtypes": ("bf16",),
                   "seqlens": (1024, 16384)},
        max_time=0.1,
        min_rounds=3,
    ),
}


def _list_option(get: Callable[[str], Any], part: dict[str, Any], opt: str) -> list[str]:
    """A list option's names: from the command line, else the preset part's, else its default (or all)."""
    valid, default, _ = LIST_OPTIONS[opt]
    return parse_names(opt, get(opt) or part.get(opt) or default or "all", valid)


def _part_cases(get: Callable[[str], Any], part: dict[str, str], size: str, device: torch.device) -> list[Case]:
    """The model cases of one part of a sweep; precisions nobody named that the device emulates, trimmed."""
    names = {opt: _list_option(get, part, opt) for opt in LIST_OPTIONS}
    given_attn = get("attn") or part.get("attn")
    model_attns = names["attn"] if given_attn else parse_names("attn", MODEL_ATTENTION_DEFAULT, ATTENTION)
    cases = sweep(names["models"], names["phases"], names["precisions"],
                  parse_batch_sizes(get("batch_sizes") or part.get("batch_sizes")), model_attns, size,
                  BATCH_PICKS[part["batches"]] if "batches" in part else slice(None), tuple(names["modes"]),
                  parse_choice("memory-format", get("memory_format") or "contiguous", tuple(MEMORY_FORMATS)))
    return cases if get("precisions") or part.get("precisions") else trim_emulated(cases, device)


@dataclass(frozen=True)
class SweepOptions:
    """The validated options: what to sweep, where to run it, how long to time it, where its files go."""

    cases: tuple[Case, ...]
    attention_cases: tuple[AttentionCase, ...]
    device: torch.device
    run_id: str
    run_id_given: bool
    reports_dir: Path
    max_time: float = MAX_TIME_S  # pytest-benchmark's --benchmark-max-time and --benchmark-min-rounds
    min_rounds: int = MIN_ROUNDS
    profile: bool = False
    profile_steps: int = 3
    profile_stacks: bool = False
    instructions: bool = False  # count instructions under callgrind instead of timing
    budget: float | None = None  # seconds the whole sweep may take (--budget)
    ci_target: float | None = None  # --ci-target as a share (0.02); None: the device's (stopping.TARGETS)

    @classmethod
    def from_values(cls, get: Callable[[str], Any], given: Callable[[str], bool] = lambda name: False) -> SweepOptions:
        """Build from an option getter (`config.getoption`; a list option not given is None) and, for the
        options with pytest-benchmark's own defaults, whether the command line gave them; raises
        OptionError on bad input. A preset's values stand in for every option not given."""
        preset = PRESETS[parse_choice("preset", get("preset"), tuple(PRESETS))] if get("preset") else None
        size = parse_choice("size", get("size") or (preset.size if preset else "quick"), SIZES)
        device = resolve_device(get("device"))
        cases = [case for part in (preset.parts if preset else ({},)) for case in _part_cases(get, part, size, device)]
        micro = preset.attention if preset else {}
        attention_cases = attention_sweep(_list_option(get, micro, "attn"), _list_option(get, micro, "phases"), size,
                                          dtypes=micro.get("dtypes"), seqlens=micro.get("seqlens"))
        if not get("precisions") and not micro.get("dtypes"):
            attention_cases = trim_emulated_attention(attention_cases, device)
        timing = {opt: get(f"benchmark_{opt}") if preset is None or given(f"benchmark_{opt}") else getattr(preset, opt)
                  for opt in ("max_time", "min_rounds")}
        reports_dir = Path(get("reports_dir")) if get("reports_dir") else REPORTS_DIR
        if get("instructions"):
            check_instructions(device)
        run_id = check_run_id(get("run_id") or default_run_id())
        if get("run_id") and (reports_dir / run_id).exists():
            raise OptionError(f"--run-id: {reports_dir / run_id} already exists; choose another run id")
        slowdown = float(os.environ.get(SLOWDOWN_ENV) or 0)
        return cls(
            cases=tuple(with_slowed(list(dict.fromkeys(cases)), slowdown)),
            attention_cases=tuple(with_slowed(attention_cases, slowdown)),
            device=device,
            run_id=run_id,
            run_id_given=bool(get("run_id")),
            reports_dir=reports_dir,
            max_time=float(timing["max_time"]),
            min_rounds=int(timing["min_rounds"]),
            profile=bool(get("profile")),
            profile_steps=check_profile_steps(get("profile_steps")),
            profile_stacks=bool(get("profile_stacks")),
            instructions=bool(get("instructions")),
            budget=check_budget(get("budget")),
            ci_target=parse_percent("ci-target", get("ci_target")) if get("ci_target") is not None else None,
        )


def preset_triton_keys(name: str) -> set[tuple[str, torch.dtype, int, bool]]:
    """(backward, dtype, head dim, causal) of every Triton attention the preset runs: what autotuning
    compiles for (tests/hopper_compile.py --preset counts it)."""
    options = SweepOptions.from_values({"preset": name, "device": "cpu", "profile_steps": 3}.get)
    keys = {(TRITON_BACKWARDS[c.attention], c.torch_dtype, c.head_dim, c.causal)
            for c in options.attention_cases if c.attention in TRITON_BACKWARDS}
    for case in options.cases:
        if case.attention in TRITON_BACKWARDS:
            spec = MODELS[case.model]
            dtype = PRECISIONS[case.precision].compute_dtype
            keys.add((TRITON_BACKWARDS[case.attention], dtype, spec.head_dim, spec.causal))
    return keys


def add_options(parser) -> None:
    """Register the sweep's options on pytest's parser, in their own help group."""
    group = parser.getgroup("archbench", "archbench sweep (pytest bench --benchmark-only)")
    for option, (valid, default, text) in LIST_OPTIONS.items():
        shown = f" Default: {default}" if default else ""
        group.addoption(f"--{option}", default=None, metavar="NAMES",
                        help=f"{text}. Comma-separated, or all. Valid: {', '.join(valid)}.{shown}")
    group.addoption("--batch-sizes", default=None, metavar="N,N",
                    help="batch sizes for every model, comma-separated. Default: each model's own for --size")
    group.addoption("--memory-format", default=None, metavar="FORMAT",
                    help="contiguous or channels_last: the layout of the convolutional models' weights and "
                         "images (the others run contiguous). Default: contiguous")
    group.addoption("--device", default="auto", help="auto (cuda if available, else cpu), cpu or cuda")
    group.addoption("--size", default=None,
                    help="quick (small inputs, a CPU sweep in minutes) or full (224px images, seq 512). "
                         "Default: quick, or the preset's")
    group.addoption("--preset", default=None, metavar="NAME",
                    help=f"a named sweep. Valid: {', '.join(PRESETS)} (every model at full size under fp32, "
                         "amp_fp16 and amp_bf16, every attention implementation, the attention micro-benchmark "
                         "at seq 1k-16k, short timing: about 4 minutes on an H100). Options given beside it "
                         "override its values")
    targets = ", ".join(f"{device} {share * 100:g} %%" for device, share in stopping.TARGETS.items())
    group.addoption("--ci-target", default=None, metavar="PCT",
                    help="time each case until its median's 95 %% interval is within +-PCT %% of it (after "
                         "--benchmark-min-rounds rounds), or until --benchmark-max-time seconds (then it is flagged "
                         f"'not converged'); 0 times every case to the cap. Default: by device ({targets})")
    group.addoption("--budget", default=None, metavar="DURATION",
                    help="the whole sweep's time, e.g. 300, 5m or 1h: each case gets what is left over the cases "
                         "left, cases cut short are flagged 'not converged', and once it is spent the cases left "
                         "are recorded as not run")
    group.addoption("--run-id", default=None,
                    help="name of this run's folder under the reports dir. Default: timestamp-host")
    group.addoption("--reports-dir", default=None,
                    help="where run folders go. Default: reports/ in the working directory")
    group.addoption("--profile", action="store_true",
                    help="after timing each case, profile it in a separate pass (torch.profiler) into "
                         "reports/<run-id>/traces/<case-id>/ for TensorBoard")
    group.addoption("--profile-steps", type=int, default=3, metavar="N",
                    help="active profiler steps per case, after 1 wait and 1 warm-up step. Default: 3")
    group.addoption("--profile-stacks", action="store_true", help="record Python stacks in the traces (slower)")
    group.addoption("--instructions", action="store_true",
                    help="count each case's instructions per step under valgrind's callgrind, single-threaded, "
                         "instead of timing it (CPU only; `python -m bench ab --instructions` runs the sweep so)")
