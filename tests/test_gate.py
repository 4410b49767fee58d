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
from bench.results.row import Row
from bench.results.rundir import RunDir, RunError, RunWriter
from bench.sweep.cases import Case
from bench.verdicts.gate import GateResult, Verdict, environment_differences, gate, judge, relative_iqr


def rounds(n=50, median=0.01, spread=0.02, seed=0):
    """Round times with a few percent of Gaussian noise around a median."""
    return median * (1 + spread * np.random.default_rng(seed).standard_normal(n))


def test_a_known_10_percent_slowdown_beyond_a_5_percent_threshold_is_slower():
    verdict = judge("case", rounds(seed=1), 1.10 * rounds(seed=2), threshold=0.05)
    assert verdict.verdict == "slower" and verdict.ratio == pytest.approx(1.10, abs=0.01)


def test_a_speedup_beyond_the_threshold_s_reciprocal_is_faster_and_one_within_it_is_not():
    # 1 / 1.25 = 0.8: a ratio of 0.82 is within a 25 % threshold, 0.78 beyond it
    base = rounds(n=400, spread=0.001, seed=1)
    assert judge("case", base, 0.82 * rounds(n=400, spread=0.001, seed=2), 0.25).verdict == "unchanged"
    assert judge("case", base, 0.78 * rounds(n=400, spread=0.001, seed=2), 0.25).verdict == "faster"


def test_an_effect_exactly_at_the_threshold_does_not_fail():
    base = np.ones(50)
    assert judge("case", base, 1.25 * base, threshold=0.25).verdict == "unchanged"
    assert judge("case", base, 0.8 * base, threshold=0.25).verdict == "unchanged"  # 1 / 1.25


@pytest.mark.parametrize("seed", range(10))
def test_an_a_a_pair_whose_rounds_drift_together_passes_where_a_test_over_rounds_cried_wolf(seed):
    """Two runs of the same code: each run's level moves 3 % (the process), its rounds wander together
    around it. A U test over the rounds calls most such pairs different; the per-run medians at 5 % do not."""
    rng = np.random.default_rng(seed)

    def run():
        level, noise, series = np.exp(rng.normal(0, 0.015)), 0.0, []
        for _ in range(60):
            noise = 0.9 * noise + rng.normal(0, 0.005)
            series.append(0.01 * level * np.exp(noise))
        return np.array(series)

    assert judge("case", run(), run(), threshold=0.05).verdict == "unchanged"


def test_a_change_within_the_threshold_from_runs_that_spread_more_than_it_is_inconclusive():
    base = np.array([1.0, 1.0, 1.3, 1.3, 1.0, 1.3])  # IQR 0.3 over a median of 1.15: 26 %
    verdict = judge("case", base, base * 1.02, threshold=0.1)
    assert verdict.verdict == "inconclusive" and verdict.spread == pytest.approx(0.3 / 1.15)
    assert judge("case", base, base * 1.2, threshold=0.1).verdict == "slower"  # beyond it: slower all the same
    # the spread (26 %) just above the threshold is inconclusive, just below it unchanged
    assert judge("case", base, base * 1.02, threshold=0.25).verdict == "inconclusive"
    assert judge("case", base, base * 1.02, threshold=0.27).verdict == "unchanged"


def test_either_run_s_spread_makes_a_small_change_inconclusive_and_the_default_metric_is_host_time():
    noisy, quiet = np.array([1.0, 1.0, 1.3, 1.3, 1.0, 1.3]), np.full(6, 1.15)
    for base, cand in ((noisy, quiet * 1.02), (quiet, noisy * 1.02)):
        verdict = judge("case", base, cand, threshold=0.1)
        assert (verdict.verdict, verdict.spread, verdict.metric) == ("inconclusive", pytest.approx(0.3 / 1.15), "host")


def test_relative_iqr_by_hand():
    assert relative_iqr(np.array([1.0, 2.0, 4.0, 10.0])) == pytest.approx((5.5 - 1.75) / 3.0)


def test_the_ratio_is_of_medians_not_means():
    # the baseline's tail (a sixth of its rounds 10x slower) drags its mean to 2.5 ms; its median is 1 ms
    base = np.array([0.001] * 50 + [0.010] * 10)
    cand = 0.0012 * (1 + 0.001 * np.random.default_rng(0).standard_normal(60))
    verdict = judge("case", base, cand, threshold=0.1)
    assert verdict.ratio == pytest.approx(1.2, rel=1e-3)
    assert (verdict.baseline_median, verdict.verdict) == (0.001, "slower")


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
    assert "1 slower, 0 faster, 1 unchanged, 0 inconclusive of 2 cases; 0 broken (each run's median per case " \
           "against the threshold: 10% on host time)" in done.stdout
    assert "| `a` | slower |" in done.stdout and "| `b` | unchanged |" in done.stdout
    assert "New cases (not gated): `new`" in done.stdout
    assert "Vanished cases (not gated): `old`" in done.stdout
    assert summary.read_text() == "earlier step\n" + done.stdout.rstrip("\n") + "\n"  # appended


def test_gate_exits_0_when_nothing_regressed(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1)})
    cand = benchmark_json(tmp_path / "cand.json", {"a": rounds(seed=2)})
    done = run_gate(str(base), str(cand))
    assert done.returncode == 0, done.stderr
    assert "against the threshold: 25% on host time)" in done.stdout  # a GPU run's host-time default


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


@pytest.mark.parametrize(("base_device", "cand_device"), [("cpu", "cuda"), ("cuda", "cpu")])
def test_runs_on_mixed_devices_get_the_larger_default_threshold(tmp_path, base_device, cand_device):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1)}, device=base_device)
    cand = benchmark_json(tmp_path / "cand.json", {"a": 1.3 * rounds(seed=2)}, device=cand_device)
    result = gate(str(base), str(cand))
    assert (result.verdicts[0].threshold, result.verdicts[0].verdict) == (0.5, "unchanged")


def test_a_given_threshold_overrides_the_default(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1)}, device="cpu")
    cand = benchmark_json(tmp_path / "cand.json", {"a": 1.3 * rounds(seed=2)}, device="cpu")
    result = gate(str(base), str(cand), threshold=0.1)
    verdict = result.verdicts[0]
    assert (verdict.threshold, verdict.verdict) == (0.1, "slower")


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


def test_the_markdown_table_exactly():
    result = GateResult([Verdict("a", "device", 0.002, 0.003, 1.5, 0.012, 0.05, "slower"),
                         Verdict("b", "host", 0.010, 0.010, 1.0, 0.3, 0.25, "inconclusive")],
                        new=["n1", "n2"], vanished=["v"], broken={"c": "oom: OutOfMemoryError: CUDA out of memory"},
                        differences=["torch: 2.11.0 vs 2.14.1"])
    assert result.markdown("base", "cand") == (
        "### archbench gate: cand vs base\n"
        "\n"
        "Environments differ (compared as asked): torch: 2.11.0 vs 2.14.1\n"
        "\n"
        "1 slower, 0 faster, 0 unchanged, 1 inconclusive of 2 cases; 1 broken (each run's median per case against "
        "the threshold: 5% on device time, 25% on host time).\n"
        "\n"
        "| case | verdict | time | baseline median | candidate median | ratio | threshold | within-run spread |\n"
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n"
        "| `a` | slower | device | 2.000 ms | 3.000 ms | 1.500 | 5% | 1.2% |\n"
        "| `b` | inconclusive | host | 10.000 ms | 10.000 ms | 1.000 | 25% | 30.0% |\n"
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
    result = gate("base", "cand", reports_dir=tmp_path)
    assert ([v.case for v in result.verdicts], result.new, result.vanished) == (["a"], ["fresh"], ["gone"])
    assert result.verdicts[0].threshold == 0.25


def test_a_zero_threshold_is_allowed(tmp_path):
    good = benchmark_json(tmp_path / "good.json", {"a": rounds()})
    assert gate(str(good), str(good), threshold=0.0).verdicts[0].threshold == 0.0


def test_no_common_case_says_which_runs(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds()})
    cand = benchmark_json(tmp_path / "cand.json", {"b": rounds()})
    with pytest.raises(RunError, match=f"^{base} and {cand} share no benchmark: nothing to compare$"):
        gate(str(base), str(cand))


def run_folder(reports: Path, run_id: str, cases: dict, torch_version: str = "2.14.1", size: str = "quick",
               device: str = "cpu", device_rounds: dict | None = None, method: str = "graph") -> str:
    """A run folder as a sweep writes it: results.csv and rounds/; `cases` maps a case id to its rounds,
    or to a status and reason when it failed; `device_rounds` a case id to its device rounds (GPU)."""
    writer = RunWriter(RunDir.create(reports, run_id, given=True))
    env = {"device_name": "Intel Xeon", "torch": torch_version}
    for case_id, outcome in cases.items():
        row = Row.for_case(Case("cnn", "fwd", "fp32", int(case_id.rsplit("b", 1)[1]), size=size), device, env)
        if isinstance(outcome, tuple):
            row = row.but(status=outcome[0], reason=outcome[1])
        else:
            device_rounds_s = tuple((device_rounds or {}).get(case_id, ()))
            row = row.but(rounds_s=tuple(outcome), device_rounds_s=device_rounds_s,
                          device_method=method if device_rounds_s else None)
        writer.add(row)
    return run_id


def test_gpu_cases_are_gated_on_device_time_where_both_runs_measured_it_at_its_own_threshold(tmp_path):
    """A host-bound case whose host time moved 40 % (the VM's CPU) while its device time held: unchanged on
    device time; a case with device time in one run only is gated on host time, at the host-time threshold."""
    host_moved = {"cnn-fwd-fp32-b8": rounds(seed=1), "cnn-fwd-fp32-b16": rounds(seed=2)}
    run_folder(tmp_path, "base", host_moved, device="cuda",
               device_rounds={"cnn-fwd-fp32-b8": rounds(median=0.002, spread=0.002, seed=3),
                              "cnn-fwd-fp32-b16": rounds(median=0.004, seed=4)})
    run_folder(tmp_path, "cand", {case: 1.4 * r for case, r in host_moved.items()}, device="cuda",
               device_rounds={"cnn-fwd-fp32-b8": 1.01 * rounds(median=0.002, spread=0.002, seed=5)})
    result = gate("base", "cand", reports_dir=tmp_path)
    verdicts = {v.case: (v.metric, v.threshold, v.verdict) for v in result.verdicts}
    assert verdicts == {"cnn-fwd-fp32-b8": ("device", 0.05, "unchanged"),
                        "cnn-fwd-fp32-b16": ("host", 0.25, "slower")}
    by_case = {v.case: v for v in result.verdicts}
    assert by_case["cnn-fwd-fp32-b8"].baseline_median == pytest.approx(0.002, rel=0.01)
    slowed = gate("base", "cand", reports_dir=tmp_path, threshold=0.005)  # 1 % slower on the device
    assert {v.case: v.verdict for v in slowed.verdicts}["cnn-fwd-fp32-b8"] == "slower"
    host = gate("base", "cand", reports_dir=tmp_path, metric="host")  # as asked: host time throughout
    assert {(v.metric, v.threshold, v.verdict) for v in host.verdicts} == {("host", 0.25, "slower")}


def test_the_metric_is_device_or_host(tmp_path, capsys):
    good = benchmark_json(tmp_path / "good.json", {"a": rounds()})
    with pytest.raises(RunError, match="^--metric must be one of device, host, got wall$"):
        gate(str(good), str(good), metric="wall")
    with pytest.raises(SystemExit) as exited:
        main(["gate", str(good), str(good), "--metric", "wall"])
    assert exited.value.code == 2 and "argument --metric: invalid choice: 'wall'" in capsys.readouterr().err


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


def test_device_times_measured_two_ways_are_not_compared_the_host_times_are(tmp_path):
    """A step captured in one run and profiled in the other (a change made it capturable): graph replays
    and busy time are not one quantity, so the case is gated on host time."""
    run_folder(tmp_path, "base", {"cnn-fwd-fp32-b8": rounds(seed=1)}, device="cuda",
               device_rounds={"cnn-fwd-fp32-b8": rounds(median=0.004, seed=2)}, method="profiler")
    run_folder(tmp_path, "cand", {"cnn-fwd-fp32-b8": rounds(seed=3)}, device="cuda",
               device_rounds={"cnn-fwd-fp32-b8": rounds(median=0.002, seed=4)}, method="graph")
    (verdict,) = gate("base", "cand", reports_dir=tmp_path).verdicts
    assert (verdict.metric, verdict.threshold, verdict.verdict) == ("host", 0.25, "unchanged")


@pytest.mark.e2e
def test_the_gate_reads_its_runs_without_loading_torch(tmp_path, bench_main_in_a_fresh_process):
    """Gating reads files only: torch (seconds to import) stays unloaded, however the command line is built."""
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1)})
    cand = benchmark_json(tmp_path / "cand.json", {"a": rounds(seed=2)})
    assert bench_main_in_a_fresh_process("gate", str(base), str(cand)) == (False, 0)
