"""Data-parallel scaling on torchrun: 2 gloo ranks on the CPU time the CNN's and the encoder's training
step, rows written once by the parent, efficiency from the 1-process figure; a rank killed mid-run ends
its world size with an error row naming it, in bounded time, with no process left behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.distributed import scale as scale_module
from bench.distributed.scale import MARK, Launch, _timed, failure, rendezvous, run_world, strays
from bench.distributed.scale_worker import CaseRecord, error_file
from bench.results.row import Row
from bench.results.rundir import RunDir, load_results, load_rounds
from bench.sweep.cases import Case
from bench.views.report import plot_scaling, scaling_table

ROOT = Path(__file__).resolve().parent.parent


def scale_command(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bench", "scale", "--device", "cpu", "--reports-dir", str(tmp_path),
            "--run-id", "scale", *args]


def workers() -> list[int]:
    """This machine's scale ranks (of any run; torchrun itself names the module too, but is no rank)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            worker = b"bench.distributed.scale_worker" in cmdline and b"torch.distributed.run" not in cmdline
            if proc.name.isdigit() and worker:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scale")
    done = subprocess.run(scale_command(tmp, "--nproc", "1,2", "--models", "cnn,encoder", "--batch-sizes", "2",
                                        "--max-time", "0.2", "--min-rounds", "3", "--profile"),
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    return done, tmp / "scale"


@pytest.mark.e2e
def test_two_gloo_ranks_write_one_row_per_case_and_world_size(two_ranks):
    done, run = two_ranks
    assert done.returncode == 0, done.stderr
    results = load_results(run)
    assert results["case_id"].tolist() == ["cnn-step-fp32-b2-ddp-w1", "encoder-step-fp32-b2-sdpa-ddp-w1",
                                           "cnn-step-fp32-b2-ddp-w2", "encoder-step-fp32-b2-sdpa-ddp-w2"]
    assert (results["status"] == "ok").all() and (results["backend"] == "gloo").all()
    assert results["world_size"].tolist() == [1, 1, 2, 2] and set(results["strategy"]) == {"ddp"}
    assert [len(str(m).split(";")) for m in results["rank_medians_s"]] == [1, 1, 2, 2]  # every rank's median
    rounds, _ = load_rounds(run)
    assert all(rounds[case].size >= 3 for case in results["case_id"])
    assert "scale: world size 2: 2 of 2 cases ok" in done.stderr


@pytest.mark.e2e
def test_global_throughput_and_efficiency_come_from_the_medians(two_ranks):
    _, run = two_ranks
    results = load_results(run).set_index("case_id")
    rounds, _ = load_rounds(run)
    for model in ("cnn-step-fp32-b2", "encoder-step-fp32-b2-sdpa"):
        one, two = (n * 2 / np.median(rounds[f"{model}-ddp-w{n}"]) for n in (1, 2))  # n ranks of batch 2
        assert results.loc[f"{model}-ddp-w1", "global_samples_per_s"] == pytest.approx(one)
        assert results.loc[f"{model}-ddp-w2", "global_samples_per_s"] == pytest.approx(two)
        assert results.loc[f"{model}-ddp-w1", "scaling_efficiency"] == pytest.approx(1.0)
        assert results.loc[f"{model}-ddp-w2", "scaling_efficiency"] == pytest.approx(two / (2 * one))


@pytest.mark.e2e
def test_with_profile_rank_0_leaves_a_trace_and_the_collectives_share(two_ranks):
    _, run = two_ranks
    results = load_results(run).set_index("case_id")
    for case in ("cnn-step-fp32-b2-ddp-w2", "encoder-step-fp32-b2-sdpa-ddp-w2"):
        assert 0 < results.loc[case, "communication_share"] < 1
        assert list((run / "traces" / case).glob("*.pt.trace.json"))
        breakdown = pd.read_csv(run / "traces" / case / "breakdown.csv").set_index("category")["share"]
        assert breakdown["communication"] == pytest.approx(results.loc[case, "communication_share"])


@pytest.mark.e2e
def test_the_report_has_the_scaling_table_and_plot(two_ranks):
    _, run = two_ranks
    summary = (run / "summary.md").read_text()
    assert "## Data-parallel scaling (torchrun)" in summary and "![scaling](plots/scaling.png)" in summary
    assert (run / "plots" / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Throughput: cnn" not in summary  # the scale rows are not one-process throughput
    results = load_results(run)
    table = scaling_table(results[results["status"] == "ok"].assign(median_ms=results["median_s"] * 1e3))
    fig = plot_scaling(table)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert sorted(panels) == ["cnn", "encoder"]
    for model, ax in panels.items():  # the plotted points are the table's, world size against global samples/s
        rows = table[table["model"] == model]
        (line,) = ax.get_lines()
        assert list(line.get_xdata()) == list(rows["world_size"])
        assert list(line.get_ydata()) == pytest.approx(list(rows["global_samples_per_s"]))


@pytest.mark.e2e
def test_a_rank_killed_mid_run_ends_its_world_size_with_an_error_row_and_leaves_nothing_behind(tmp_path):
    command = scale_command(tmp_path, "--nproc", "2", "--models", "cnn", "--batch-sizes", "2", "--max-time", "60")
    scale = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(5)  # into the timed rounds
    rank1 = [pid for pid in workers() if b"RANK=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")]
    os.kill(rank1[0], signal.SIGKILL)
    out, err = scale.communicate(timeout=120)
    assert scale.returncode == 1, err
    results = load_results(tmp_path / "scale")
    assert results[["case_id", "status"]].values.tolist() == [["cnn-step-fp32-b2-ddp-w2", "error"]]
    assert results["reason"].iloc[0].startswith("rank 1 ")  # torchrun's root cause names the rank
    assert "error: rank 1 " in out
    assert workers() == []


def test_the_root_cause_rank_s_own_error_line_is_the_reason(tmp_path):
    out = tmp_path / "world2.json"
    error_file(out, 0).write_text("DistBackendError: Connection closed by peer\n")  # failed after rank 1
    error_file(out, 1).write_text("OutOfMemoryError: CUDA out of memory\n")
    root = "Root Cause (first observed failure):\n  rank      : 1 (local_rank: 1)\n  exitcode  : 1 (pid: 7)"
    assert failure(1, root, out, 2, 60) == "rank 1: OutOfMemoryError: CUDA out of memory"
    assert failure(1, "no summary", out, 2, 60) == "rank 0: DistBackendError: Connection closed by peer"


@pytest.mark.parametrize(("code", "output", "reason"), [
    (None, "", "world size 2 timed out after 60 s"),
    (1, "Root Cause (first observed failure):\n[0]:\n  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 7)",
     "rank 1 killed by signal 9"),
    (1, "Root Cause (first observed failure):\n[0]:\n  rank      : 0 (local_rank: 0)\n  exitcode  : 3 (pid: 7)",
     "rank 0 exited with code 3"),
    (1, "no summary", "torchrun exited with code 1"),
])
def test_torchrun_s_end_is_explained(tmp_path, code, output, reason):
    assert failure(code, output, tmp_path / "world2.json", 2, 60) == reason


def test_rendezvous_is_standalone_on_one_node_and_c10d_across_nodes():
    assert rendezvous(None, None, None) == ("--standalone",)
    assert rendezvous(2, "node0:29400", "job7") == ("--nnodes", "2", "--rdzv-backend", "c10d",
                                                    "--rdzv-endpoint", "node0:29400", "--rdzv-id", "job7")
    launch = Launch(rendezvous=rendezvous(2, "node0:29400", "job7"))
    assert launch.nodes == 2 and Launch().nodes == 1
    command = launch.command(8, Path("c.json"), Path("o.json"))
    assert command[1:4] == ["-m", "torch.distributed.run", "--nnodes"] and "--standalone" not in command
    assert command[command.index("--nproc-per-node") + 1] == "8" and command[command.index("--max-restarts") + 1] == "0"


def test_efficiency_is_against_the_one_process_row_of_the_same_case(tmp_path):
    single: dict[str, float] = {}
    base = Row.for_case(Case("cnn", "step", "fp32", 4), "cpu", {})
    one = _timed(base.but(case_id="cnn-step-fp32-b4-ddp-w1", world_size=1),
                 CaseRecord({}, "ddp", [0.1, 0.1, 0.1], [0.1], 3), single,
                 "cnn-step-fp32-b4-ddp")
    four = _timed(base.but(case_id="cnn-step-fp32-b4-ddp-w4", world_size=4),
                  CaseRecord({}, "ddp", [0.2, 0.2, 0.2], [0.2, 0.21, 0.2, 0.19], 3), single,
                  "cnn-step-fp32-b4-ddp")
    assert (one.global_samples_per_s, one.scaling_efficiency) == (pytest.approx(40.0), pytest.approx(1.0))
    assert (four.global_samples_per_s, four.scaling_efficiency) == (pytest.approx(80.0), pytest.approx(0.5))
    assert four.rank_medians_s == "0.2;0.21;0.2;0.19"
    alone = _timed(base.but(case_id="gru-step-fp32-b4-ddp-w2", world_size=2),
                   CaseRecord({}, "ddp", [0.2], [0.2, 0.2], 3), single,
                   "gru-step-fp32-b4-ddp")
    assert alone.scaling_efficiency is None  # no one-process figure to compare with


@pytest.mark.e2e
def test_a_world_size_that_times_out_is_stopped_with_everything_it_started(tmp_path):
    """A stand-in torchrun that starts a child in a session of its own (as torchrun starts its ranks) and
    waits: both are gone when run_world returns."""
    script = tmp_path / "launcher.py"
    script.write_text("import subprocess, sys, time\n"
                      "child = [sys.executable, '-c', 'import time; time.sleep(300)']\n"
                      "subprocess.Popen(child, start_new_session=True)\n"
                      "time.sleep(300)\n")
    start = time.monotonic()
    code, _ = run_world([sys.executable, str(script)], tmp_path / "log", timeout_s=2)
    assert code is None and time.monotonic() - start < 20
    assert strays_of_any_run() == []


def strays_of_any_run() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and any(entry.startswith(f"{MARK}=".encode())
                                           for entry in (proc / "environ").read_bytes().split(b"\0")):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.e2e
def test_strays_finds_a_marked_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             env={**os.environ, MARK: "test-mark"})
    try:
        assert strays("test-mark") == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert strays("test-mark") == []


@pytest.mark.e2e
def test_bad_input_is_one_line(tmp_path):
    done = subprocess.run(scale_command(tmp_path, "--nproc", "0,2"), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --nproc: expected positive integers separated by commas, got '0,2'"
    done = subprocess.run(scale_command(tmp_path, "--strategies", "zero"), cwd=ROOT, capture_output=True, text=True)
    assert done.stderr.strip() == "error: --strategies: unknown name 'zero'; valid names: ddp, fsdp (or all)"
    assert not (tmp_path / "scale").exists()


@pytest.mark.e2e
def test_the_scale_rows_read_back_as_a_frame(two_ranks):
    _, run = two_ranks
    frame = pd.read_csv(run / "results.csv")
    assert {"world_size", "backend", "strategy", "global_samples_per_s", "scaling_efficiency",
            "rank_medians_s"} <= set(frame.columns)


def test_a_node_that_did_not_run_rank_0_records_nothing(tmp_path, monkeypatch):
    """Several nodes: torchrun ends well on every node, but only rank 0's node has the results."""
    monkeypatch.setattr(scale_module, "run_world", lambda command, log, timeout: (0, ""))
    lines = []
    rows = scale_module.scale([Case("cnn", "step", "fp32", 2)], ["ddp"], [8], RunDir(tmp_path),
                              Launch(rendezvous=rendezvous(2, "node0:29400", "job7")), log=lines.append)
    assert rows == [] and not (tmp_path / "results.csv").exists()
    assert lines[-1] == "scale: world size 8: ran; the node that ran rank 0 records the results"
