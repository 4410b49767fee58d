"""Paired A/B runs: the statistics on synthetic process medians with known process-to-process noise and
shifts, and one end-to-end run over two revisions of a throwaway clone."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import mannwhitneyu

from bench.__main__ import main
from bench.results.rundir import RunError
from bench.verdicts.ab import (
    DEFAULT_ALPHA,
    DEFAULT_PAIRS,
    DEFAULT_THRESHOLD,
    ABResult,
    PairVerdict,
    ab,
    holm,
    judge_all,
    judge_counts,
    judge_pairs,
    judged_values,
    log_ratio_test,
    parse_cpus,
    sweep_device,
)

ROOT = Path(__file__).resolve().parent.parent


def processes(rng, k, shift=1.0, process_noise=0.03, rounds=30, autocorrelation=0.9):
    """K processes' rounds of one case: each process draws its own level (what moves between runs), and
    its rounds wander around it as an AR(1) series (what the rounds of one process share)."""
    data = []
    for _ in range(k):
        level = shift * np.exp(rng.normal(0, process_noise))
        noise, series = 0.0, []
        for _ in range(rounds):
            noise = autocorrelation * noise + rng.normal(0, 0.01)
            series.append(level * np.exp(noise))
        data.append(np.array(series))
    return data


def test_pairs_of_process_medians_keep_the_false_alarm_rate_near_alpha_where_pooled_rounds_do_not():
    rng = np.random.default_rng(0)
    paired = pooled = 0
    experiments, alpha = 300, 0.05
    for _ in range(experiments):
        a, b = processes(rng, 6), processes(rng, 6)
        paired += log_ratio_test(np.array([np.median(x) for x in a]), np.array([np.median(x) for x in b])) < alpha
        pooled += mannwhitneyu(np.concatenate(a), np.concatenate(b)).pvalue < alpha
    assert 0.02 <= paired / experiments <= 0.09  # about alpha
    assert pooled / experiments > 0.5  # rounds taken as independent: "significant" most of the time


# The defaults: 16 pairs at alpha 0.05 through 6 % process noise (pairs' log-ratios spread by ~8.5 %, as
# measured on the 2-core CI machine with processes taking turns).
@pytest.mark.parametrize(("process_noise", "pairs", "alpha"), [(0.02, 6, 0.01), (0.03, 10, 0.01),
                                                               (0.06, DEFAULT_PAIRS["cpu"], DEFAULT_ALPHA)])
def test_pairs_find_a_10_percent_slowdown_twice_over_through_process_noise(process_noise, pairs, alpha):
    """A slowdown fails only when the confirming pairs find it too: both rounds must catch it."""
    rng = np.random.default_rng(1)

    def caught() -> bool:
        a = np.array([np.median(x) for x in processes(rng, pairs, process_noise=process_noise)])
        b = np.array([np.median(x) for x in processes(rng, pairs, shift=1.10, process_noise=process_noise)])
        return judge_pairs("c", a, b, threshold=0.05, alpha=alpha, p_value=log_ratio_test(a, b)).verdict == "slower"

    assert sum(caught() and caught() for _ in range(100)) >= 90


def gpu_processes(rng, pairs, shift=1.0):
    """Process medians of device time on a GPU: 1 % between processes (GPU-bound H200 cases agreed within
    0.35-1.6 % across runs), and rounds that hardly move within one."""
    return np.array([np.median(x) for x in processes(rng, pairs, shift, process_noise=0.01, rounds=20,
                                                     autocorrelation=0.5)])


@pytest.mark.parametrize(("cases", "at_least"), [(1, 0.97), (3, 0.97), (10, 0.9)])
def test_with_the_gpu_defaults_a_5_percent_slowdown_is_caught_and_an_a_a_run_stays_quiet(cases, at_least):
    """What docs/gating.md states for the defaults on a GPU (6 pairs, threshold 5 %, alpha 0.05, device time), with
    Holm over the cases: in 200 simulated runs through 1 % process noise, one case of `cases` slowed 5 % is
    found slower in at least `at_least` of them and no other case ever is; the old rule (the ratio beyond
    the whole threshold) caught about half."""
    rng = np.random.default_rng(2)
    caught = false_alarms = old_rule = 0
    for _ in range(200):
        a = [gpu_processes(rng, DEFAULT_PAIRS["cuda"]) for _ in range(cases)]
        b = [gpu_processes(rng, DEFAULT_PAIRS["cuda"], 1.05 if i == 0 else 1.0) for i in range(cases)]
        rows = [{"case": f"c{i}", "pair": k, "side": side, "value": value, "metric": "device"}
                for i in range(cases) for side, values in (("A", a[i]), ("B", b[i])) for k, value in enumerate(values)]
        verdicts = {v.case: v for v in judge_all(pd.DataFrame(rows), DEFAULT_THRESHOLD, DEFAULT_ALPHA)}
        caught += verdicts["c0"].verdict == "slower"
        old_rule += verdicts["c0"].ratio > 1 + DEFAULT_THRESHOLD
        false_alarms += sum(v.verdict == "slower" for case, v in verdicts.items() if case != "c0")
    assert caught >= at_least * 200 and false_alarms == 0
    assert 0.3 <= old_rule / 200 <= 0.7


def test_a_significant_change_under_half_the_threshold_is_not_slower():
    base = np.ones(6)
    cand = np.exp(np.array([0.020, 0.021, 0.019, 0.020, 0.021, 0.019]))  # 2 %, clearly real
    verdict = judge_pairs("c", base, cand, 0.05, 0.05, log_ratio_test(base, cand))
    assert verdict.ci_low > 1 and verdict.verdict == "unchanged"
    faster = judge_pairs("c", base, 1 / cand, 0.05, 0.05, log_ratio_test(base, 1 / cand))
    assert faster.ci_high < 1 and faster.verdict == "unchanged"
    assert judge_pairs("c", base, cand * 1.01, 0.05, 0.05, log_ratio_test(base, cand * 1.01)).verdict == "slower"


def test_the_interval_and_the_detectable_effect_by_hand():
    base = np.array([1.0, 1.0, 1.0, 1.0])
    cand = np.exp(np.array([0.10, 0.12, 0.08, 0.10]))  # mean log-ratio 0.10, sd 0.01633, se 0.008165
    verdict = judge_pairs("c", base, cand, threshold=0.05, alpha=0.01, p_value=log_ratio_test(base, cand))
    t_alpha, t_power = 5.840909, 0.978472  # t(0.995, 3) and t(0.8, 3)
    assert verdict.ratio == pytest.approx(np.exp(0.10))
    assert verdict.ci_low == pytest.approx(np.exp(0.10 - t_alpha * 0.0081650), rel=1e-5)
    assert verdict.mde == pytest.approx(np.expm1((t_alpha + t_power) * 0.0081650), rel=1e-5)
    assert verdict.verdict == "slower" and verdict.pairs == 4


def test_too_few_or_too_noisy_pairs_are_inconclusive_and_identical_ones_unchanged():
    noisy = judge_pairs("c", np.ones(3), np.array([0.8, 1.3, 1.05]), 0.05, 0.01, 0.9)
    assert noisy.verdict == "inconclusive" and noisy.mde > 0.05
    same = judge_pairs("c", np.ones(4), np.ones(4), 0.05, 0.01, log_ratio_test(np.ones(4), np.ones(4)))
    assert (same.verdict, same.ratio, same.mde) == ("unchanged", 1.0, 0.0)
    assert log_ratio_test(np.ones(1), 2 * np.ones(1)) == 1.0 and log_ratio_test(np.ones(3), 2 * np.ones(3)) == 0.0


def test_judge_all_pairs_processes_by_pair_and_adjusts_over_cases():
    rows = [{"case": case, "pair": k, "side": side, "value": value, "metric": "host"}
            for case, shift in (("slow", 1.5), ("same", 1.0)) for k in range(4)
            for side, value in (("A", 1.0 + 0.01 * k), ("B", shift * (1.0 + 0.01 * k) * (1 + 0.001 * k)))]
    verdicts = {v.case: v for v in judge_all(pd.DataFrame(rows), threshold=0.05, alpha=0.01)}
    assert verdicts["slow"].verdict == "slower" and verdicts["same"].verdict == "unchanged"
    assert verdicts["slow"].ratio == pytest.approx(1.5, rel=0.01) and verdicts["slow"].pairs == 4
    assert verdicts["slow"].metric == "host"


def test_device_time_is_judged_where_every_process_measured_it_and_host_time_elsewhere():
    medians = pd.DataFrame([
        {"case": "gpu", "pair": 0, "side": "A", "host_s": 3.0, "device_s": 1.0, "device_method": "graph"},
        {"case": "gpu", "pair": 0, "side": "B", "host_s": 3.1, "device_s": 1.1, "device_method": "graph"},
        {"case": "old", "pair": 0, "side": "A", "host_s": 2.0, "device_s": np.nan,  # a revision before device time
         "device_method": None},
        {"case": "old", "pair": 0, "side": "B", "host_s": 2.2, "device_s": 0.5, "device_method": "graph"},
        {"case": "mixed", "pair": 0, "side": "A", "host_s": 4.0, "device_s": 1.0, "device_method": "graph"},
        {"case": "mixed", "pair": 0, "side": "B", "host_s": 4.1, "device_s": 1.2, "device_method": "profiler"},
    ])
    judged = judged_values(medians, "device").set_index(["case", "side"])
    assert judged["value"].to_dict() == {("gpu", "A"): 1.0, ("gpu", "B"): 1.1, ("old", "A"): 2.0, ("old", "B"): 2.2,
                                         ("mixed", "A"): 4.0, ("mixed", "B"): 4.1}  # two methods: host time
    assert judged["metric"].to_dict() == {("gpu", "A"): "device", ("gpu", "B"): "device", ("old", "A"): "host",
                                          ("old", "B"): "host", ("mixed", "A"): "host", ("mixed", "B"): "host"}
    host = judged_values(medians, "host")
    assert list(host["value"]) == [3.0, 3.1, 2.0, 2.2, 4.0, 4.1] and set(host["metric"]) == {"host"}


def verdict_of(case, metric, verdict):
    return PairVerdict(case, metric, 4, 1.1, 1.05, 1.15, 0.001, 0.03, verdict)


def test_slower_on_device_time_fails_at_once_and_on_host_time_only_when_the_re_run_agrees():
    device, host = verdict_of("d", "device", "slower"), verdict_of("h", "host", "slower")
    result = ABResult([device, host], {"h": verdict_of("h", "host", "unchanged")}, {}, 0.05, 0.05, ("a", "b"))
    assert result.failing == [device] and result.failed
    assert not ABResult([host], {}, {}, 0.05, 0.05, ("a", "b")).failed  # slower once on host time: not enough
    table = result.markdown()
    assert "2 slower, 0 faster, 0 unchanged, 0 inconclusive of 2 cases; 1 slower fail; 0 broken" in table
    assert "slower from 2.5% when significant" in table
    assert "| `d` | slower | device | 4 | 1.100 | 1.050-1.150 | 0.001 | ±3.0% |  |" in table
    assert "| `h` | slower | host | 4 | 1.100 | 1.050-1.150 | 0.001 | ±3.0% | unchanged |" in table


def test_the_sweep_s_device_decides_the_default_pairs():
    assert sweep_device(["bench", "--device", "cpu"]) == "cpu" and sweep_device(["--device=cpu"]) == "cpu"
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert sweep_device(["bench"]) == auto and sweep_device([]) == auto and sweep_device(["--device"]) == auto
    with pytest.raises(RunError, match="^--device: unknown value 'tpu'"):
        sweep_device(["--device", "tpu"])


def test_holm_adjusts_each_p_value_by_its_rank_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002]) and holm([]) == []
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped: a probability


def counts(values: dict[str, tuple[list[float], list[float]]]) -> pd.DataFrame:
    """Instruction counts per case: (side A's, side B's), a pair per position."""
    return pd.DataFrame([{"case": case, "pair": k, "side": side, "value": count}
                         for case, sides in values.items() for side, side_counts in zip("AB", sides, strict=True)
                         for k, count in enumerate(side_counts)])


def test_instruction_counts_are_judged_by_their_ratio_their_ranges_and_their_spread():
    verdicts = {v.case: v for v in judge_counts(counts({
        "slower": ([1000, 1001], [1015, 1016]),  # 1.5 %: beyond 1 %, the ranges apart
        "faster": ([1000], [980]),
        "same": ([1000, 1000.5], [1004, 1003]),  # 0.35 %
        "wobbly": ([1000, 1030], [1040, 1000]),  # a side spreads by 3 %: no verdict either way
    }), threshold=0.01)}
    assert {case: v.verdict for case, v in verdicts.items()} == {
        "slower": "slower", "faster": "faster", "same": "unchanged", "wobbly": "inconclusive"}
    slower = verdicts["slower"]
    assert slower.ratio == pytest.approx(1015.5 / 1000.5) and slower.pairs == 2
    assert (slower.ci_low, slower.ci_high) == (pytest.approx(1015 / 1001), pytest.approx(1016 / 1000))
    assert slower.mde == pytest.approx(0.001) and np.isnan(slower.p_value)
    assert verdicts["wobbly"].mde == pytest.approx(0.04)  # B: 1040 / 1000 - 1


def test_overlapping_counts_are_not_slower_however_far_apart_their_medians():
    verdict, = judge_counts(counts({"c": ([1000, 1000, 1100], [1100, 1100, 1000])}), threshold=0.01)
    assert verdict.ratio == pytest.approx(1.1) and verdict.verdict == "inconclusive"


def test_instructions_without_valgrind_exit_2_saying_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("bench.run.instructions.shutil.which", lambda name: None)
    assert main(["ab", "HEAD", "HEAD", "--instructions", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --instructions needs valgrind, which is not on the PATH: install it "
        "(Debian/Ubuntu: apt-get install -y valgrind; Fedora: dnf install valgrind)"]
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def two_revisions(tmp_path_factory):
    """A clone of this repository's HEAD and a second commit on it that makes the CNN 100 ms slower and the
    GRU raise."""
    repo = tmp_path_factory.mktemp("ab") / "repo"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(repo)], check=True)
    cnn, rnn = repo / "bench/sweep/models/cnn.py", repo / "bench/sweep/models/rnn.py"
    cnn.write_text(cnn.read_text().replace("        return self.classifier(self.features(x))",
                                           "        __import__('time').sleep(0.1)\n"
                                           "        return self.classifier(self.features(x))"))
    rnn.write_text(rnn.read_text().replace("        embedded = self.dropout(self.embedding(tokens))",
                                           "        if self.rnn.mode == 'GRU':\n"
                                           "            raise RuntimeError('broken on purpose')\n"
                                           "        embedded = self.dropout(self.embedding(tokens))"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "--quiet", "-am", "slower cnn, broken gru"], check=True)
    return repo


# One thread a process: on a loaded runner, two-threaded operators stall behind the other jobs (a 2 ms
# case's process median read 176 ms there) and the pairs turn inconclusive, rightly; nine rounds a process.
SWEEP = ["bench/test_models.py", "--models", "cnn,gru", "--phases", "fwd", "--precisions", "fp32",
         "--batch-sizes", "2", "--device", "cpu", "--benchmark-max-time", "0.02", "--benchmark-min-rounds", "9"]


@pytest.mark.e2e
def test_ab_as_readme_calls_it_confirms_a_slower_revision_and_names_a_broken_case(two_revisions):
    """`python -m bench ab BASE CANDIDATE -- SWEEP` in the checkout, without --out: the run lands in the
    checkout's reports/ab-<time>/ (each side's sweep runs in its own worktree, where a relative folder broke it)."""
    # -P: this checkout's bench (PYTHONPATH), not the clone's in the working directory
    # Two pairs (the fewest) keep the test short; with one degree of freedom the t test needs a loose alpha.
    command = ["ab", "HEAD~1", "HEAD", "--pairs", "2", "--alpha", "0.2", "--", *SWEEP]
    done = subprocess.run([sys.executable, "-P", "-m", "bench", *command], cwd=two_revisions, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert lines[0] == "ab: pair 1/2 (A: HEAD~1; B: HEAD), 0 s elapsed"
    assert lines[1].startswith("ab: pair 2/2 (A: HEAD~1; B: HEAD), ") and "s left" in lines[1]
    assert lines[2] == "ab: 1 slower on host time; re-running 2 more pairs of those cases"
    assert lines[3].startswith("ab: confirm pair 1/2 (A: HEAD~1; B: HEAD)")
    [out] = (two_revisions / "reports").glob("ab-*")
    assert lines[-1] == f"wrote {out.relative_to(two_revisions)}/ab.md, medians.csv and the runs of every process"
    assert done.stdout == (out / "ab.md").read_text() + "\n"
    [cnn_row] = [line for line in done.stdout.splitlines() if line.startswith("| `cnn-fwd-fp32-b2` |")]
    assert cnn_row.startswith("| `cnn-fwd-fp32-b2` | slower | host | 2 |") and cnn_row.endswith(" | slower |")
    assert "Broken on B (ok on A; fails):\n- `gru-fwd-fp32-b2`: error: RuntimeError: broken on purpose" in done.stdout
    assert sorted(p.name for p in out.glob("*-1")) == ["A-1", "B-1", "confirm-A-1", "confirm-B-1"]
    medians = pd.read_csv(out / "medians.csv")
    assert set(medians["round"]) == {"first", "confirm"}  # 2 pairs x 2 sides each; gru on A only, and only first
    assert medians.groupby("case")["side"].agg("".join).to_dict() == {"cnn-fwd-fp32-b2": "AB" * 4,
                                                                      "gru-fwd-fp32-b2": "AA"}
    assert set(medians.loc[medians["round"] == "confirm", "case"]) == {"cnn-fwd-fp32-b2"}  # the slower case alone
    cnn = medians[medians["case"] == "cnn-fwd-fp32-b2"].pivot_table(index=["round", "pair"], columns="side",
                                                                     values="host_s")
    assert (cnn["B"] > cnn["A"] + 0.09).all()  # each pair sees the 100 ms sleep
    worktrees = subprocess.run(["git", "-C", str(two_revisions), "worktree", "list"], capture_output=True,
                               text=True).stdout
    assert len(worktrees.splitlines()) == 1  # both removed


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pairs": 1}, "--pairs must be at least 2, got 1"),
    ({"pairs": 0, "metric": "instructions"}, "--pairs must be at least 1, got 0"),
    ({"metric": "wall"}, "--metric must be one of device, host, instructions, got wall"),
    ({"alpha": 1.5}, "--alpha must be between 0 and 1"),
    ({"base": "no-such-ref"}, "no-such-ref: not a revision of "),
])
@pytest.mark.e2e
def test_unusable_input_is_one_line(two_revisions, tmp_path, kwargs, message):
    base = kwargs.pop("base", "HEAD")
    with pytest.raises(RunError, match=message):
        ab(base, "HEAD", SWEEP, tmp_path / "out", repo=two_revisions, **kwargs)


@pytest.mark.e2e
def test_a_terminated_ab_leaves_no_sweep_and_no_worktree_behind(two_revisions, tmp_path):
    """SIGTERM (a cancelled CI job) while a pair runs: both sides' processes stopped, worktrees removed."""
    fake = tmp_path / "python"  # a side's interpreter that just waits, marked so it can be found
    # -P: this checkout's bench (PYTHONPATH), not the clone's in the working directory
    fake.write_text("#!/bin/sh\nexec sleep 987\n")
    fake.chmod(0o755)
    ab_process = subprocess.Popen([sys.executable, "-P", "-m", "bench", "ab", "HEAD~1", "HEAD", "--python-a", str(fake),
                                   "--python-b", str(fake), "--out", str(tmp_path / "out")],
                                  cwd=two_revisions, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                  stderr=subprocess.PIPE, text=True)
    try:
        assert ab_process.stderr.readline().startswith(f"ab: pair 1/{DEFAULT_PAIRS['cpu']} ")
        deadline = time.monotonic() + 10
        while len(sleepers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sleepers()) == 2
    finally:
        ab_process.terminate()
    assert ab_process.wait(timeout=10) == 128 + signal.SIGTERM
    assert sleepers() == []
    worktrees = subprocess.run(["git", "-C", str(two_revisions), "worktree", "list"], capture_output=True,
                               text=True).stdout
    assert len(worktrees.splitlines()) == 1


def sleepers() -> list[str]:
    return subprocess.run(["pgrep", "-f", "sleep 987"], capture_output=True, text=True).stdout.split()


def test_a_cpu_list_is_parsed_as_taskset_writes_it_and_checked_against_the_cpus_allowed():
    allowed = sorted(os.sched_getaffinity(0))
    assert parse_cpus(str(allowed[0])) == (allowed[0],)
    assert parse_cpus(f"{allowed[0]}-{allowed[-1]}") == tuple(range(allowed[0], allowed[-1] + 1))
    with pytest.raises(RunError, match="^--cpus: 'x-1' is not a CPU list such as 0-3,6$"):
        parse_cpus("x-1")
    with pytest.raises(RunError, match=r"^--cpus: \[4096\] not among the CPUs this process may use"):
        parse_cpus("4096")


@pytest.mark.e2e
def test_both_sides_run_pinned_to_the_cpus_asked(two_revisions, tmp_path):
    """Each side's interpreter (a script here) records the CPUs it may run on, then fails: ab stops there."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\ngrep Cpus_allowed_list /proc/self/status >> {tmp_path}/cpus\nexit 3\n")
    fake.chmod(0o755)
    cpu = sorted(os.sched_getaffinity(0))[-1]
    with pytest.raises(RunError, match="the sweep on side A failed"):
        ab("HEAD", "HEAD", SWEEP, tmp_path / "out", repo=two_revisions, python_a=str(fake), python_b=str(fake),
           cpus=(cpu,))
    assert (tmp_path / "cpus").read_text().split("\n")[:2] == [f"Cpus_allowed_list:\t{cpu}"] * 2


@pytest.mark.e2e
def test_a_bad_candidate_revision_leaves_no_worktree_of_the_base(two_revisions, tmp_path):
    with pytest.raises(RunError, match="^no-such-ref: not a revision of "):
        ab("HEAD", "no-such-ref", SWEEP, tmp_path / "out", repo=two_revisions)
    worktrees = subprocess.run(["git", "-C", str(two_revisions), "worktree", "list"], capture_output=True,
                               text=True).stdout
    assert len(worktrees.splitlines()) == 1
