"""The regression gate: its statistics on synthetic rounds, and its exit codes and messages."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.gate import gate, judge
from bench.rundir import RunError

ROOT = Path(__file__).resolve().parent.parent


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


def run_gate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "gate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


def test_gate_exits_1_on_a_regression_and_lists_new_and_vanished_cases(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1), "b": rounds(seed=2), "old": rounds()})
    cand = benchmark_json(tmp_path / "cand.json", {"a": 1.5 * rounds(seed=3), "b": rounds(seed=4), "new": rounds()})
    summary = tmp_path / "summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(summary), "PATH": "/usr/bin:/bin"}
    done = run_gate(str(base), str(cand), "--threshold", "10", env=env)
    assert done.returncode == 1, done.stderr
    assert "1 slower, 0 faster, 1 unchanged of 2 cases (threshold 10%, alpha 0.01)" in done.stdout
    assert "| `a` | slower |" in done.stdout and "| `b` | unchanged |" in done.stdout
    assert "New cases (not gated): `new`" in done.stdout
    assert "Vanished cases (not gated): `old`" in done.stdout
    assert summary.read_text() == done.stdout.rstrip("\n") + "\n"


def test_gate_exits_0_when_nothing_regressed(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1)})
    cand = benchmark_json(tmp_path / "cand.json", {"a": rounds(seed=2)})
    done = run_gate(str(base), str(cand))
    assert done.returncode == 0, done.stderr
    assert "(threshold 5%, alpha 0.01)" in done.stdout  # the GPU default


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


def test_a_given_threshold_overrides_the_default_and_the_resolution_is_the_interval_half_width(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1)}, device="cpu")
    cand = benchmark_json(tmp_path / "cand.json", {"a": 1.3 * rounds(seed=2)}, device="cpu")
    result = gate(str(base), str(cand), threshold=0.1)
    verdict = result.verdicts[0]
    assert result.threshold == 0.1 and verdict.verdict == "slower"
    assert verdict.resolution == pytest.approx((verdict.ci_high - verdict.ci_low) / 2 / verdict.ratio)


def test_regressions_are_the_slower_verdicts_only(tmp_path):
    base = benchmark_json(tmp_path / "base.json", {"a": rounds(seed=1), "b": rounds(seed=2), "c": rounds(seed=3)})
    cand = benchmark_json(tmp_path / "cand.json", {"a": 1.5 * rounds(seed=4), "b": 0.5 * rounds(seed=5),
                                                   "c": rounds(seed=6)})
    result = gate(str(base), str(cand))
    assert {v.case: v.verdict for v in result.verdicts} == {"a": "slower", "b": "faster", "c": "unchanged"}
    assert [v.case for v in result.regressions] == ["a"]
    table = result.markdown("base", "cand")
    assert "1 slower, 1 faster, 1 unchanged of 3 cases" in table
    assert table.index("| `a` |") < table.index("| `c` |") < table.index("| `b` |")  # slowest first


def test_a_negative_threshold_is_unusable(tmp_path):
    good = benchmark_json(tmp_path / "good.json", {"a": rounds()})
    with pytest.raises(RunError, match="--threshold must not be negative, got -0.1"):
        gate(str(good), str(good), threshold=-0.1)
