"""The run driver, called directly: rows and raw rounds on disk as each case ends, calibration and profile
folded into rows, pytest-benchmark's JSON and the report at the end, outcomes for pytest."""

import contextlib
import json

import pandas as pd
import pytest
import torch

from bench.results.row import Row
from bench.results.rundir import RunError
from bench.run import session as session_module
from bench.run.session import Session, outcome
from bench.sweep.cases import Case
from bench.sweep.options import SweepOptions

CALIBRATION = {"matmul_tflops": {"fp32": 0.5, "bf16": 2.0}}


def make_session(tmp_path, **changes) -> Session:
    options = {"cases": (), "attention_cases": (), "device": torch.device("cpu"), "run_id": "run",
               "run_id_given": True, "reports_dir": tmp_path, "max_time": 0.01, "min_rounds": 3}
    return Session(SweepOptions(**{**options, **changes}), calibration=CALIBRATION)


def test_the_session_times_as_the_options_say_and_calibrates_the_device(tmp_path, monkeypatch):
    devices = []
    monkeypatch.setattr(session_module.calibrate, "load_or_measure", lambda device: devices.append(device) or {})
    options = SweepOptions(cases=(), attention_cases=(), device=torch.device("cpu"), run_id="run", run_id_given=True,
                           reports_dir=tmp_path, max_time=0.25, min_rounds=7)
    run = Session(options)
    assert (run.settings.device, run.settings.max_time, run.settings.min_rounds) == (torch.device("cpu"), 0.25, 7)
    assert devices == [torch.device("cpu")] and run.calibration == {}


def test_a_default_run_id_that_exists_gets_a_suffix(tmp_path):
    (tmp_path / "run").mkdir()
    run = make_session(tmp_path, run_id_given=False)
    run.run(Case("encoder", "fwd", "fp32", 2, "triton"), None)
    assert run.run_dir.path == tmp_path / "run-2"
    assert run.summary() == [f"1 cases (1 skipped) -> {tmp_path / 'run-2'}"]  # no report line before the end


def test_a_session_that_runs_nothing_leaves_no_folder(tmp_path):
    run = make_session(tmp_path)
    run.finish(lambda benchmarks: pytest.fail("no JSON without benchmarks"))
    assert list(tmp_path.iterdir()) == [] and run.summary() == []


def test_each_case_is_on_disk_when_it_ends_and_the_end_writes_json_and_report(tmp_path, benchmark):
    run = make_session(tmp_path)
    ok = run.run(Case("cnn", "fwd", "fp32", 2), benchmark)
    folder = tmp_path / "run"
    assert json.loads((folder / "calibration.json").read_text()) == CALIBRATION
    assert ok.status == "ok" and ok.peak_tflops == 0.5  # the fp32 peak of the calibration
    saved = json.loads((folder / "rounds" / "cnn-fwd-fp32-b2.json").read_text())
    assert saved["rounds_s"] == list(benchmark.stats.stats.data) and len(saved["rounds_s"]) >= 3
    assert benchmark.extra_info["case_id"] == "cnn-fwd-fp32-b2"
    assert benchmark.extra_info["pct_of_peak"] == pytest.approx(100 * ok.figures["tflops"] / 0.5)

    skipped = run.run(Case("encoder", "fwd", "fp32", 2, "triton"), None)
    assert (skipped.status, skipped.reason) == ("skipped", "triton needs a CUDA GPU")
    results = pd.read_csv(folder / "results.csv")
    assert list(results["case_id"]) == ["cnn-fwd-fp32-b2", "encoder-fwd-fp32-b2-triton"]
    assert results.loc[0, "median_s"] == pytest.approx(ok.figures["median_s"])
    assert not (folder / "benchmark.json").exists()  # only at the end

    run.finish(lambda benchmarks: {"benchmarks": [b.name for b in benchmarks]})
    assert json.loads((folder / "benchmark.json").read_text()) == {"benchmarks": [benchmark.name]}
    converged = "1 of 1" if ok.figures["converged"] else "0 of 1"
    assert run.summary() == [f"2 cases (1 ok, 1 skipped) -> {folder}",
                             f"{converged} timed cases converged (median within +-2.0% at 95 %)",
                             f"report: {folder / 'report.html'}"]
    assert (folder / "report.html").is_file()


def test_a_report_that_fails_says_why_and_keeps_the_results(tmp_path, monkeypatch):
    import bench.views.report

    run = make_session(tmp_path)
    run.run(Case("encoder", "fwd", "fp32", 2, "triton"), None)

    def broken(run_dir):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(bench.views.report, "write_report", broken)
    run.finish(lambda benchmarks: {})
    assert run.summary()[1] == "report not written: RuntimeError: no fonts"
    assert (tmp_path / "run" / "results.csv").is_file()


def test_a_profiled_case_gets_its_trace_tables_and_attention_share(tmp_path, benchmark):
    run = make_session(tmp_path, profile=True, profile_steps=1)
    row = run.run(Case("encoder", "fwd", "fp32", 2, "sdpa"), benchmark)
    trace = tmp_path / "run" / "traces" / row.case_id
    shares = pd.read_csv(trace / "breakdown.csv").set_index("category")["share"]
    assert row.attention_share == pytest.approx(shares["attention"]) and 0 < row.attention_share < 1
    assert len(pd.read_csv(trace / "operators.csv")) > 10
    assert list(trace.glob("*.pt.trace.json"))


def test_profile_options_reach_the_profiler_and_a_breakdown_without_attention_is_0(tmp_path, benchmark,
                                                                                   monkeypatch):
    calls = []

    def fake(case, device, trace_dir, steps, stacks):
        calls.append((case.id, device.type, trace_dir, steps, stacks))
        frame = pd.DataFrame({"category": ["matmul/conv"], "self_us": [1.0], "share": [1.0]})
        return frame, frame

    monkeypatch.setattr(session_module, "profile_case", fake)
    run = make_session(tmp_path, profile=True, profile_steps=2, profile_stacks=True)
    row = run.run(Case("cnn", "fwd", "fp32", 2), benchmark)
    assert calls == [("cnn-fwd-fp32-b2", "cpu", tmp_path / "run" / "traces" / "cnn-fwd-fp32-b2", 2, True)]
    assert row.attention_share == 0.0


def test_without_profile_no_case_is_profiled(tmp_path, benchmark, monkeypatch):
    monkeypatch.setattr(session_module, "profile_case", lambda *args: pytest.fail("profiled"))
    assert make_session(tmp_path).run(Case("cnn", "fwd", "fp32", 2), benchmark).attention_share is None
    assert not (tmp_path / "run" / "traces").exists()


def test_a_profiler_failure_keeps_the_timing(tmp_path, benchmark, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("profiler busy\nmore")

    monkeypatch.setattr(session_module, "profile_case", broken)
    row = make_session(tmp_path, profile=True).run(Case("cnn", "fwd", "fp32", 2), benchmark)
    assert (row.status, row.profile_error, row.attention_share) == ("ok", "RuntimeError: profiler busy", None)
    assert pd.read_csv(tmp_path / "run" / "results.csv").loc[0, "profile_error"] == "RuntimeError: profiler busy"


def test_a_long_profiler_error_is_cut_to_200_characters(tmp_path, benchmark, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("x" * 300)

    monkeypatch.setattr(session_module, "profile_case", broken)
    row = make_session(tmp_path, profile=True).run(Case("cnn", "fwd", "fp32", 2), benchmark)
    assert row.profile_error == "RuntimeError: " + "x" * 200


@pytest.mark.parametrize(("status", "raised"), [("error", pytest.fail.Exception), ("oom", pytest.skip.Exception),
                                                 ("skipped", pytest.skip.Exception)])
def test_outcome_fails_errors_and_skips_what_did_not_run(status, raised):
    row = Row("x", "model", "fwd", "fp32", 1, "cpu", status=status, reason="why")
    with pytest.raises(BaseException) as err:  # a skip raised in place of a failure would skip this test
        outcome(row)
    assert type(err.value) is raised and str(err.value) == ("why" if status == "error" else f"{status}: why")
    try:
        outcome(row.but(status="ok"))  # an ok row passes
    except BaseException as err:  # a skip here would otherwise skip this test instead of failing it
        pytest.fail(f"an ok row raised {err!r}")


def test_a_given_run_id_taken_after_the_options_were_read_is_still_refused(tmp_path):
    run = make_session(tmp_path)
    (tmp_path / "run").mkdir()  # another sweep got there first
    with pytest.raises(RunError, match="--run-id: .*run already exists; choose another run id"):
        run.run(Case("encoder", "fwd", "fp32", 2, "triton"), None)


def test_under_ab_the_calibration_and_everything_a_case_does_happen_inside_a_turn(tmp_path, monkeypatch):
    log = []

    @contextlib.contextmanager
    def timed(case):
        log.append(f"before {case}")
        yield
        log.append(f"after {case}")

    monkeypatch.setattr(session_module.turns, "timed", timed)
    monkeypatch.setattr(session_module.calibrate, "load_or_measure", lambda device: log.append("calibrate") or {})
    monkeypatch.setattr(session_module, "run_case", lambda case, bench, settings, *shared: log.append("measure") or Row(
        case.id, "model", "fwd", "fp32", 2, "cpu", rounds_s=(1e-3,)))

    def profiled(case, device, trace_dir, steps, stacks):
        log.append("profile")
        frame = pd.DataFrame({"category": ["attention"], "self_us": [1.0], "share": [1.0]})
        return frame, frame

    monkeypatch.setattr(session_module, "profile_case", profiled)
    options = SweepOptions(cases=(), attention_cases=(), device=torch.device("cpu"), run_id="run", run_id_given=True,
                           reports_dir=tmp_path, profile=True)
    Session(options).run(Case("cnn", "fwd", "fp32", 2), None)
    assert log == ["before calibration", "calibrate", "after calibration",
                   "before cnn-fwd-fp32-b2", "measure", "profile", "after cnn-fwd-fp32-b2"]


def test_a_profiler_error_without_a_message_keeps_the_row(tmp_path, benchmark, monkeypatch):
    monkeypatch.setattr(session_module, "profile_case", lambda *args: (_ for _ in ()).throw(RuntimeError()))
    row = make_session(tmp_path, profile=True).run(Case("cnn", "fwd", "fp32", 2), benchmark)
    assert (row.status, row.profile_error) == ("ok", "RuntimeError: ")  # an IndexError lost the row before


def test_an_instructions_run_uses_one_thread_and_gives_the_others_back_when_it_ends(tmp_path):
    threads = torch.get_num_threads()
    run = make_session(tmp_path, instructions=True)
    assert torch.get_num_threads() == 1
    run.finish(lambda benchmarks: {})
    assert torch.get_num_threads() == threads


def test_the_session_times_to_the_devices_target_unless_given_one(tmp_path):
    assert make_session(tmp_path).settings.target == 0.02  # a CPU's (stopping.TARGETS)
    assert make_session(tmp_path, ci_target=0.0).settings.target == 0.0
    assert make_session(tmp_path).settings.min_time == 0.01  # the CPU's 0.1 s, within a cap of 0.01 s


def test_under_ab_no_stopping_rule_so_both_sides_time_the_same_rounds(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHBENCH_TURNS", "3,4")
    assert make_session(tmp_path).settings.target == 0.0 and make_session(tmp_path, ci_target=0.01).settings.target == 0


def test_a_budget_caps_each_case_at_its_share_and_records_the_cases_it_could_not_run(tmp_path, monkeypatch):
    caps = []

    def fake_run_case(case, bench, settings, *shared):
        caps.append(settings.max_time)
        return Row(case.id, "model", "fwd", "fp32", 2, "cpu", rounds_s=(1e-3, 2e-3) * 4, ci_target=settings.target)

    monkeypatch.setattr(session_module, "run_case", fake_run_case)
    run = make_session(tmp_path, budget=100.0, max_time=1.0)
    run.expect([Case("cnn", "fwd", "fp32", b) for b in (2, 4, 8, 16)] + [Case("encoder", "fwd", "fp32", 2, "triton")])
    assert run.budget.cases_left == 4  # triton cannot run on a CPU: no share for it
    run.run(Case("cnn", "fwd", "fp32", 2), None)
    assert caps == [1.0]  # 40 % of a 25 s share is above the cap: the cap holds
    run.budget.seconds = 0.4  # as if the first case had taken most of the budget
    run.run(Case("cnn", "fwd", "fp32", 4), None)
    assert caps[1] < 0.06  # 40 % of what is left over the three cases left
    run.budget.seconds = 0.0
    skipped = run.run(Case("cnn", "fwd", "fp32", 8), None)
    assert len(caps) == 2 and skipped.status == "skipped" and skipped.reason.startswith("not run: the budget 0:00")
    lines = run.summary()
    assert lines[1] == "0 of 2 timed cases converged (median within +-2.0% at 95 %)"
    assert lines[2].startswith("budget 0:00: took 0:00") and lines[2].endswith(
        "1 cases stopped at their share of it before converging, 1 not run")
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(results["status"]) == ["ok", "ok", "skipped"]
