"""The regression gate: its statistics on synthetic rounds, and its exit codes and messages."""

import contextlib
import io
import json
import os
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from bench.__main__ import main
from bench.cases import Case
from bench.gate import (
    GateResult,
    Verdict,
    environment_differences,
    gate,
    holm,
    judge,
    min_p_value,
    ratio_interval,
    u_test,
)
from bench.row import Row
from bench.rundir import RunDir, RunError, RunWriter


def rounds(n=50, median=0.01, spread=0.02, seed=0):
    """Round times with a few percent of Gaussian noise around a median."""
    return median * (1 + spread * np.random.default_rng(seed).standard_normal(n))


def test_a_known_10_percent_slowdown_is_found():
    verdict = judge("case", rounds(seed=1), 1.10 * rounds(seed=2), threshold=0.05, alpha=0.01)
    assert verdict.verdict == "slower"
    assert verdict.ratio == pytest.approx(1.10, abs=0.01)
    assert verdict.ci_low > 1.05 and verdict.p_value < 1e-6


def test_a_speedup_is_reported_as_faster():
    assert judge("case", rounds(seed=1), 0.8 * rounds(seed=2), threshold=0.05, alpha=0.01).verdict == "faster"


@pytest.mark.parametrize("seed", range(20))
def test_equal_distributions_pass(seed):
    verdict = judge("case", rounds(seed=2 * seed), rounds(seed=2 * seed + 1), threshold=0.05, alpha=0.01)
    assert verdict.verdict == "unchanged"


@pytest.mark.parametrize("seed", range(20))
def test_heavy_tailed_noise_does_not_fail(seed):
    rng = np.random.default_rng(seed)
    # Pareto tails: a few rounds many times slower (preemption, page faults), in either run.
    base = 0.01 * (1 + rng.pareto(1.5, 60) * 0.05)
    cand = 0.01 * (1 + rng.pareto(1.5, 60) * 0.05)
    assert judge("case", base, cand, threshold=0.05, alpha=0.01).verdict == "unchanged"


def test_a_slowdown_below_the_threshold_never_fails():
    verdict = judge("case", rounds(n=400, spread=0.001, seed=1), 1.03 * rounds(n=400, spread=0.001, seed=2),
                    threshold=0.05, alpha=0.01)
    assert verdict.ci_low > 1  # clearly real, and yet too small to fail a build
    assert verdict.verdict == "unchanged"


def benchmark_json(path: Path, cases: dict[str, np.ndarray], device: str = "cuda") -> Path:
    """A pytest-benchmark JSON file with raw rounds, as --benchmark-json writes it."""
    payload = {"machine_info": {}, "commit_info": {}, "benchmarks": [
        {"fullname": f"bench/test_models.py::test_model[{name}]", "name": f"test_model[{name}]",
         "extra_info": {"device": device}, "stats": {"data": list(map(float, data))}}
        for name, data in cases.items()]}
    path.write_text(json.dumps(payload))
    return path


def run_gate(*args: str, summary: Path | None = None) -> SimpleNamespace:
    """`python -m bench gate ARGS`, run in this process (so that mutation testing sees the code it runs)."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        os.environ.pop("GITHUB_STEP_SUMMARY", None)
        if summary is not None:
            os.environ["GITHUB_STEP_SUMMARY"] = str(summary)
        code = main(["gate", *args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_gate_exits_1_on_a_regression_and_lists_new_and_vanished_cases(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1), "b": rounds(seed=2), "old": rounds()})
    cand = benchmark_json(tmp_path / "cand.json", {"a": 1.5 * rounds(seed=3), "b": rounds(seed=4), "new": rounds()})
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    done = run_gate(str(base), str(cand), "--threshold", "10", summary=summary)
    assert done.returncode == 1, done.stderr
    assert "1 slower, 0 faster, 1 unchanged, 0 inconclusive of 2 cases; 0 broken (threshold 10%, alpha 0.01, " \
           "Holm-adjusted over the cases)" in done.stdout
    assert "| `a` | slower |" in done.stdout and "| `b` | unchanged |" in done.stdout
    assert "New cases (not gated): `new`" in done.stdout
    assert "Vanished cases (not gated): `old`" in done.stdout
    assert summary.read_text() == "earlier step\n" + done.stdout.rstrip("\n") + "\n"  # appended


def test_gate_exits_0_when_nothing_regressed(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1)})
    cand = benchmark_json(tmp_path / "cand.json", {"a": rounds(seed=2)})
    done = run_gate(str(base), str(cand))
    assert done.returncode == 0, done.stderr
    assert "(threshold 25%, alpha 0.01," in done.stdout  # the GPU default


def test_cpu_runs_get_the_cpu_threshold(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1)}, device="cpu")
    cand = benchmark_json(tmp_path / "cand.json", {"a": 1.3 * rounds(seed=2)}, device="cpu")
    assert gate(str(base), str(cand)).verdicts[0].verdict == "unchanged"  # 30 % is within CPU drift


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing.json", "missing.json: no such run folder, run-id under"),
    (lambda d: (d / "corrupt.json").write_text("{not json") and d / "corrupt.json",
     "corrupt.json: not a pytest-benchmark JSON file (JSONDecodeError)"),
    (lambda d: (d / "other.json").write_text('{"x": 1}') and d / "other.json",
     "other.json: not a pytest-benchmark JSON file (KeyError)"),
    (lambda d: (d / "empty.json").write_text('{"benchmarks": []}') and d / "empty.json",
     "empty.json: holds no benchmarks"),
    (lambda d: (d / "nodata.json").write_text('{"benchmarks": [{"fullname": "t", "stats": {"median": 1}}]}')
     and d / "nodata.json", "nodata.json: t has no raw rounds (save with --benchmark-json or --benchmark-save-data)"),
    (lambda d: d, "no rounds/ or benchmark.json in this run folder"),
])
def test_unusable_input_exits_2_with_one_line_saying_which_and_why(tmp_path, make, message):
    good = benchmark_json(tmp_path / "good.json", {"a": rounds()})
    done = run_gate(str(good), str(make(tmp_path)))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_runs_without_a_common_case_are_incompatible(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds()})
    cand = benchmark_json(tmp_path / "cand.json", {"b": rounds()})
    done = run_gate(str(base), str(cand))
    assert done.returncode == 2 and "share no benchmark: nothing to compare" in done.stderr


def test_bad_alpha_is_unusable(tmp_path):
    good = benchmark_json(tmp_path / "good.json", {"a": rounds()})
    done = run_gate(str(good), str(good), "--alpha", "1.5")
    assert done.returncode == 2 and "--alpha must be between 0 and 1, got 1.5" in done.stderr


def test_the_ratio_is_of_medians_not_means():
    # the baseline's tail (a sixth of its rounds 10x slower) drags its mean to 2.5 ms; its median is 1 ms
    base = np.array([0.001] * 50 + [0.010] * 10)
    cand = 0.0012 * (1 + 0.001 * np.random.default_rng(0).standard_normal(60))
    verdict = judge("case", base, cand, threshold=0.1, alpha=0.01)
    assert verdict.ratio == pytest.approx(1.2, rel=1e-3)
    assert (verdict.baseline_median, verdict.verdict) == (0.001, "slower")


def test_a_speedup_below_the_threshold_is_not_faster():
    verdict = judge("case", rounds(n=400, spread=0.001, seed=1), 0.97 * rounds(n=400, spread=0.001, seed=2),
                    threshold=0.05, alpha=0.01)
    assert verdict.ci_high < 1  # clearly real, and yet within the threshold
    assert verdict.verdict == "unchanged"


def test_a_speedup_beyond_the_threshold_is_faster_on_the_threshold_s_reciprocal():
    # 1 / 1.25 = 0.8: a ratio of 0.82 is within a 25 % threshold, 0.78 beyond it
    base = rounds(n=400, spread=0.001, seed=1)
    assert judge("case", base, 0.82 * rounds(n=400, spread=0.001, seed=2), 0.25, 0.01).verdict == "unchanged"
    assert judge("case", base, 0.78 * rounds(n=400, spread=0.001, seed=2), 0.25, 0.01).verdict == "faster"


@pytest.mark.parametrize(("base_device", "cand_device"), [("cpu", "cuda"), ("cuda", "cpu")])
def test_runs_on_mixed_devices_get_the_larger_default_threshold(tmp_path, base_device, cand_device):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1)}, device=base_device)
    cand = benchmark_json(tmp_path / "cand.json", {"a": 1.3 * rounds(seed=2)}, device=cand_device)
    result = gate(str(base), str(cand))
    assert result.threshold == 0.5 and result.verdicts[0].verdict == "unchanged"


def test_a_given_threshold_overrides_the_default_and_the_half_width_is_of_the_interval(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1)}, device="cpu")
    cand = benchmark_json(tmp_path / "cand.json", {"a": 1.3 * rounds(seed=2)}, device="cpu")
    result = gate(str(base), str(cand), threshold=0.1)
    verdict = result.verdicts[0]
    assert result.threshold == 0.1 and verdict.verdict == "slower"
    assert verdict.ci_half_width == pytest.approx((verdict.ci_high - verdict.ci_low) / 2 / verdict.ratio)


def test_regressions_are_the_slower_verdicts_only(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1), "b": rounds(seed=2), "c": rounds(seed=3)})
    cand = benchmark_json(tmp_path / "cand.json", {"a": 1.5 * rounds(seed=4), "b": 0.5 * rounds(seed=5),
                                                   "c": rounds(seed=6)})
    result = gate(str(base), str(cand))
    assert {v.case: v.verdict for v in result.verdicts} == {"a": "slower", "b": "faster", "c": "unchanged"}
    assert [v.case for v in result.regressions] == ["a"]
    table = result.markdown("base", "cand")
    assert "1 slower, 1 faster, 1 unchanged, 0 inconclusive of 3 cases; 0 broken" in table
    assert table.index("| `a` |") < table.index("| `c` |") < table.index("| `b` |")  # slowest first


def test_a_negative_threshold_is_unusable(tmp_path):
    good = benchmark_json(tmp_path / "good.json", {"a": rounds()})
    with pytest.raises(RunError, match="--threshold must not be negative, got -0.1"):
        gate(str(good), str(good), threshold=-0.1)


def test_bootstrap_interval_by_hand():
    # The baseline's median is always 1; a candidate [1, 2, 3] resampled three times has median 1 or 3 with
    # probability 7/27 each, 2 with 13/27: its 30 % and 70 % quantiles are 2, its 20 % and 80 % are 1 and 3.
    assert ratio_interval(np.ones(5), np.array([1.0, 2.0, 3.0]), alpha=0.6) == (2.0, 2.0)
    assert ratio_interval(np.ones(5), np.array([1.0, 2.0, 3.0]), alpha=0.4) == (1.0, 3.0)
    # and the baseline resampled the same way: the ratio is 1/3, 1/2 or 1
    assert ratio_interval(np.array([1.0, 2.0, 3.0]), np.ones(5), alpha=0.4) == pytest.approx((1 / 3, 1.0))


def test_bootstrap_interval_is_reproducible_and_brackets_the_ratio():
    base, cand = rounds(seed=1), 1.1 * rounds(seed=2)
    low, high = ratio_interval(base, cand, alpha=0.01)
    assert (low, high) == ratio_interval(base, cand, alpha=0.01)  # seeded
    assert low < np.median(cand) / np.median(base) < high


def test_an_effect_exactly_at_the_threshold_does_not_fail():
    base = np.ones(50)
    assert judge("case", base, 1.25 * base, threshold=0.25, alpha=0.01).verdict == "unchanged"
    assert judge("case", base, 0.8 * base, threshold=0.25, alpha=0.01).verdict == "unchanged"  # 1 / 1.25


def test_an_interval_touching_1_is_not_clear_of_it():
    # A candidate median of 2 whose bootstrap median is 1 (the baseline's) a third of the time: at alpha 0.5
    # the interval's lower end is exactly 1, so however large the ratio, the case is not slower.
    base = np.ones(5)
    slower = judge("case", base, np.array([1.0, 1.0, 2.0, 2.0, 2.0]), threshold=0.1, alpha=0.5)
    assert (slower.ratio, slower.ci_low, slower.verdict) == (2.0, 1.0, "unchanged")
    faster = judge("case", base, np.array([0.5, 0.5, 0.5, 1.0, 1.0]), threshold=0.1, alpha=0.5)
    assert (faster.ratio, faster.ci_high, faster.verdict) == (0.5, 1.0, "unchanged")


def test_a_p_value_equal_to_alpha_is_not_significant():
    # four rounds each, one pair out of order: the exact two-sided U test gives p = 2 * 2/70 = 4/70
    base, cand = np.array([1.0, 1.01, 1.02, 1.5]), np.array([1.4, 2.0, 2.01, 2.02])
    verdict = judge("case", base, cand, threshold=0.1, alpha=4 / 70)
    assert verdict.p_value == pytest.approx(4 / 70) and verdict.verdict == "unchanged"
    assert judge("case", base, cand, 0.1, 4.01 / 70).verdict == "slower"


def test_too_few_rounds_for_the_u_test_to_reach_alpha_are_inconclusive():
    # three rounds each: the smallest two-sided p is 2/20 = 0.1, however far apart the runs
    verdict = judge("case", np.array([1.0, 1.01, 1.02]), np.array([2.0, 2.01, 2.02]), threshold=0.1, alpha=0.1)
    assert (verdict.p_value, verdict.verdict) == (0.1, "inconclusive")
    assert min_p_value(3, 3) == 0.1 and min_p_value(5, 5) == 2 / 252 and min_p_value(1, 1) == 1.0
    assert judge("case", np.array([1.0, 1.01, 1.02]), np.array([2.0, 2.01, 2.02]), 0.1, 0.11).verdict == "slower"


def test_holm_adjusts_each_p_value_by_its_rank_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002]) and holm([]) == []
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped: a probability


def test_holm_keeps_many_equal_cases_from_raising_a_false_alarm(tmp_path):
    # 100 cases, each the same distribution in both runs, a zero threshold: only the test stands between
    # noise and a failed build. Unadjusted, about one case in a hundred would reject at alpha 0.01.
    cases = {f"c{i}": rounds(n=30, seed=i) for i in range(100)}
    again = {name: rounds(n=30, seed=1000 + i) for i, name in enumerate(cases)}
    raw = [u_test(cases[name], again[name]) for name in cases]
    base = benchmark_json(tmp_path / "base.json", cases)
    cand = benchmark_json(tmp_path / "cand.json", again)
    result = gate(str(base), str(cand), threshold=0.0)
    assert min(raw) < 0.01  # a false alarm without the correction
    assert not result.failed and {v.verdict for v in result.verdicts} == {"unchanged"}


def test_the_markdown_table_exactly():
    result = GateResult([Verdict("a", 0.002, 0.003, 1.5, 1.4, 1.6, 0.001, "slower"),
                         Verdict("b", 0.010, 0.010, 1.0, 0.9, 1.1, 0.5, "unchanged")],
                        new=["n1", "n2"], vanished=["v"], threshold=0.1, alpha=0.01,
                        broken={"c": "oom: OutOfMemoryError: CUDA out of memory"},
                        differences=["torch: 2.11.0 vs 2.14.1"])
    assert result.markdown("base", "cand") == (
        "### archbench gate: cand vs base\n"
        "\n"
        "Environments differ (compared as asked): torch: 2.11.0 vs 2.14.1\n"
        "\n"
        "1 slower, 0 faster, 1 unchanged, 0 inconclusive of 2 cases; 1 broken (threshold 10%, alpha 0.01, "
        "Holm-adjusted over the cases).\n"
        "\n"
        "| case | verdict | baseline median | candidate median | ratio | CI of ratio | p (U test, Holm) "
        "| within-run CI half-width |\n"
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |\n"
        "| `a` | slower | 2.000 ms | 3.000 ms | 1.500 | 1.400-1.600 | 0.001 | ±6.7% |\n"
        "| `b` | unchanged | 10.000 ms | 10.000 ms | 1.000 | 0.900-1.100 | 0.5 | ±10.0% |\n"
        "\n"
        "Broken in the candidate (ok in the baseline; fails the gate):\n"
        "- `c`: oom: OutOfMemoryError: CUDA out of memory\n"
        "\n"
        "New cases (not gated): `n1`, `n2`\n"
        "\n"
        "Vanished cases (not gated): `v`\n")


def test_gate_reads_run_ids_under_the_reports_folder_and_lists_new_and_vanished(tmp_path):
    for run, cases in (("base", {"a": rounds(seed=1), "gone": rounds()}), ("cand", {"a": rounds(seed=2),
                                                                                     "fresh": rounds()})):
        (tmp_path / run).mkdir()
        benchmark_json(tmp_path / run / "benchmark.json", cases)
    result = gate("base", "cand", alpha=0.02, reports_dir=tmp_path)
    assert ([v.case for v in result.verdicts], result.new, result.vanished) == (["a"], ["fresh"], ["gone"])
    assert (result.alpha, result.threshold) == (0.02, 0.25)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_alpha_must_lie_strictly_between_0_and_1(tmp_path, alpha):
    good = benchmark_json(tmp_path / "good.json", {"a": rounds()})
    with pytest.raises(RunError, match=f"^--alpha must be between 0 and 1, got {alpha}$"):
        gate(str(good), str(good), alpha=alpha)


def test_a_zero_threshold_is_allowed(tmp_path):
    good = benchmark_json(tmp_path / "good.json", {"a": rounds()})
    assert gate(str(good), str(good), threshold=0.0).threshold == 0.0


def test_no_common_case_says_which_runs(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds()})
    cand = benchmark_json(tmp_path / "cand.json", {"b": rounds()})
    with pytest.raises(RunError, match=f"^{base} and {cand} share no benchmark: nothing to compare$"):
        gate(str(base), str(cand))


def run_folder(reports: Path, run_id: str, cases: dict, torch_version: str = "2.14.1", size: str = "quick") -> str:
    """A run folder as a sweep writes it: results.csv and rounds/; `cases` maps a case id to its rounds,
    or to a status and reason when it failed."""
    writer = RunWriter(RunDir.create(reports, run_id, given=True))
    env = {"device_name": "Intel Xeon", "torch": torch_version}
    for case_id, outcome in cases.items():
        row = Row.for_case(Case("cnn", "fwd", "fp32", int(case_id.rsplit("b", 1)[1]), size=size), "cpu", env)
        if isinstance(outcome, tuple):
            row = row.but(status=outcome[0], reason=outcome[1])
        else:
            row = row.but(rounds_s=tuple(outcome))
        writer.add(row)
    return run_id


def test_a_case_that_breaks_in_the_candidate_fails_the_gate_naming_it(tmp_path):
    run_folder(tmp_path, "base", {"cnn-fwd-fp32-b8": rounds(seed=1), "cnn-fwd-fp32-b16": rounds(seed=2),
                                  "cnn-fwd-fp32-b32": ("error", "RuntimeError: was broken before")})
    run_folder(tmp_path, "cand", {"cnn-fwd-fp32-b8": rounds(seed=3),
                                  "cnn-fwd-fp32-b16": ("oom", "OutOfMemoryError: CUDA out of memory"),
                                  "cnn-fwd-fp32-b32": ("error", "RuntimeError: still broken")})
    done = run_gate("base", "cand", "--reports-dir", str(tmp_path))
    assert done.returncode == 1, done.stderr
    assert "0 slower, 0 faster, 1 unchanged, 0 inconclusive of 1 cases; 1 broken" in done.stdout
    assert "- `cnn-fwd-fp32-b16`: oom: OutOfMemoryError: CUDA out of memory\n" in done.stdout
    assert "b32" not in done.stdout.split("Broken in the candidate")[1]  # it never ran in the baseline
    assert "Vanished" not in done.stdout  # broken, not vanished


def test_a_vanished_case_fails_only_with_strict(tmp_path):
    run_folder(tmp_path, "base", {"cnn-fwd-fp32-b8": rounds(seed=1), "cnn-fwd-fp32-b16": rounds(seed=2)})
    run_folder(tmp_path, "cand", {"cnn-fwd-fp32-b8": rounds(seed=3)})
    lenient = run_gate("base", "cand", "--reports-dir", str(tmp_path))
    assert lenient.returncode == 0 and "Vanished cases (not gated): `cnn-fwd-fp32-b16`" in lenient.stdout
    strict = run_gate("base", "cand", "--reports-dir", str(tmp_path), "--strict")
    assert strict.returncode == 1 and "Vanished cases (fail with --strict): `cnn-fwd-fp32-b16`" in strict.stdout


def test_runs_from_different_environments_are_refused_unless_allowed(tmp_path):
    run_folder(tmp_path, "base", {"cnn-fwd-fp32-b8": rounds(seed=1)}, torch_version="2.11.0")
    run_folder(tmp_path, "cand", {"cnn-fwd-fp32-b8": rounds(seed=2)}, size="full")
    refused = run_gate("base", "cand", "--reports-dir", str(tmp_path))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == ("error: base and cand come from different environments (torch: 2.11.0 vs 2.14.1; "
                              "size: quick vs full); compare them anyway with --allow-different-env\n")
    allowed = run_gate("base", "cand", "--reports-dir", str(tmp_path), "--allow-different-env")
    assert allowed.returncode == 0
    assert "Environments differ (compared as asked): torch: 2.11.0 vs 2.14.1; size: quick vs full" in allowed.stdout


def test_environment_differences_skip_missing_columns_and_list_every_value():
    base = pd.DataFrame({"torch": ["2.11.0", "2.14.1"], "size": ["quick", "quick"]})
    cand = pd.DataFrame({"device_name": ["H200", "H200"], "torch": ["2.14.1", "2.14.1"], "size": ["quick"] * 2})
    assert environment_differences(base, cand) == ["torch: 2.11.0, 2.14.1 vs 2.14.1"]
    assert environment_differences(None, cand) == [] and environment_differences(base, None) == []


def test_a_json_baseline_against_a_run_folder_is_compared_and_the_defaults_are_strict_about_env_only(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"cnn-fwd-fp32-b8": rounds(seed=1), "cnn-fwd-fp32-b4": rounds()},
                          device="cpu")
    run_folder(tmp_path, "cand", {"cnn-fwd-fp32-b8": rounds(seed=2),
                                  "cnn-fwd-fp32-b16": ("error", "RuntimeError: boom")})
    result = gate(str(base), "cand", reports_dir=tmp_path)
    assert [v.verdict for v in result.verdicts] == ["unchanged"] and result.vanished == ["cnn-fwd-fp32-b4"]
    assert not result.failed and "Environments differ" not in result.markdown("base", "cand")  # not --strict
    run_folder(tmp_path, "other", {"cnn-fwd-fp32-b8": rounds(seed=3)}, torch_version="2.11.0")
    with pytest.raises(RunError, match="come from different environments"):
        gate("other", "cand", reports_dir=tmp_path)


def test_an_error_in_the_candidate_is_broken_like_an_oom(tmp_path):
    run_folder(tmp_path, "base", {"cnn-fwd-fp32-b8": rounds(seed=1), "cnn-fwd-fp32-b16": rounds(seed=2)})
    run_folder(tmp_path, "cand", {"cnn-fwd-fp32-b8": rounds(seed=3),
                                  "cnn-fwd-fp32-b16": ("error", "RuntimeError: boom")})
    result = gate("base", "cand", reports_dir=tmp_path)
    assert result.broken == {"cnn-fwd-fp32-b16": "error: RuntimeError: boom"} and result.failed
