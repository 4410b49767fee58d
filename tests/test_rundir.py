"""The run folder: one row per case written as it ends, raw rounds beside it, atomic writes, fresh folders,
and the readers (report, compare, gate) on new folders, folders made before rounds/, and JSON files."""

import json
import os

import pandas as pd
import pytest

from bench import rundir
from bench.row import COLUMNS, Row
from bench.rundir import RunDir, RunError, RunWriter, atomic_write, default_run_id, load_results, load_rounds


def row(case_id, status="ok", **fields):
    rounds = (0.02, 0.01, 0.03) if status == "ok" else ()
    return Row(case_id, "model", "fwd", "fp32", 8, "cpu", model=case_id.split("-")[0], status=status,
               rounds_s=rounds, **fields)


def test_results_csv_has_one_row_per_case_after_each_case(tmp_path):
    writer = RunWriter(RunDir.create(tmp_path, "run-1", given=True))
    writer.add(row("cnn-fwd-fp32-b8"))
    assert len(pd.read_csv(tmp_path / "run-1" / "results.csv")) == 1  # on disk before the next case
    writer.add(row("encoder-fwd-fp32-b8-sdpa_cudnn", status="skipped", reason="needs CUDA"))
    writer.add(row("vit_b_16-fwd-fp32-b512", status="oom", reason="OutOfMemoryError: ..."))
    frame = pd.read_csv(tmp_path / "run-1" / "results.csv")
    assert list(frame.columns) == COLUMNS
    assert list(frame["status"]) == ["ok", "skipped", "oom"]
    assert set(frame["run_id"]) == {"run-1"}
    assert frame.loc[1, "reason"] == "needs CUDA"
    assert frame.loc[0, "median_s"] == 0.02 and pd.isna(frame.loc[2, "median_s"])


def test_raw_rounds_of_each_timed_case_are_saved_as_it_ends(tmp_path):
    run_dir = RunDir.create(tmp_path, "run", given=True)
    writer = RunWriter(run_dir)
    writer.add(row("cnn-fwd-fp32-b8"))
    writer.add(row("gru-fwd-fp32-b8", status="error", reason="boom"))
    assert [p.name for p in run_dir.rounds_dir.iterdir()] == ["cnn-fwd-fp32-b8.json"]
    rounds, device = load_rounds(run_dir.path)  # no benchmark.json: as a run killed before its end
    assert device == "cpu" and list(rounds) == ["cnn-fwd-fp32-b8"]
    assert list(rounds["cnn-fwd-fp32-b8"]) == [0.02, 0.01, 0.03]  # in the order they ran


def test_rounds_files_win_over_benchmark_json_and_a_gpu_round_marks_the_run(tmp_path):
    run_dir = RunDir.create(tmp_path, "run", given=True)
    RunWriter.write_json(run_dir.rounds_json("a"), {"case_id": "a", "device": "cuda", "rounds_s": [1.0, 2.0]})
    RunWriter.write_json(run_dir.benchmark_json, {"benchmarks": []})
    rounds, device = load_rounds(run_dir.path)
    assert device == "cuda" and list(rounds["a"]) == [1.0, 2.0]


def test_a_folder_made_before_rounds_reads_benchmark_json_by_case_id(tmp_path):
    (tmp_path / "old").mkdir()
    payload = {"benchmarks": [{"fullname": "bench/test_models.py::test_model[cnn-fwd-fp32-b2]",
                               "extra_info": {"device": "cpu"}, "stats": {"data": [0.5, 0.25]}}]}
    (tmp_path / "old" / "benchmark.json").write_text(json.dumps(payload))
    rounds, device = load_rounds("old", reports_dir=tmp_path)
    assert device == "cpu" and list(rounds) == ["cnn-fwd-fp32-b2"] and list(rounds["cnn-fwd-fp32-b2"]) == [0.5, 0.25]


def test_a_damaged_rounds_file_is_unusable_input(tmp_path):
    run_dir = RunDir.create(tmp_path, "run", given=True)
    run_dir.rounds_dir.mkdir()
    run_dir.rounds_json("a").write_text("{")
    with pytest.raises(RunError, match=r"a\.json: not a rounds file \(JSONDecodeError\)"):
        load_rounds(run_dir.path)


def test_results_of_a_folder_made_before_rows_had_a_kind(tmp_path):
    (tmp_path / "old").mkdir()
    pd.DataFrame({"case_id": ["cnn-fwd-fp32-b2", "attn-fwd-bf16-full-d64-s128-naive"],
                  "model": ["cnn", "attention"], "status": ["ok", "ok"]}).to_csv(tmp_path / "old" / "results.csv")
    frame = load_results(tmp_path / "old")
    assert list(frame["kind"]) == ["model", "attention"]
    assert frame.loc[0, "model"] == "cnn" and pd.isna(frame.loc[1, "model"])


def test_a_given_run_id_that_exists_is_refused_and_a_default_one_gets_a_suffix(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(RunError, match="--run-id: .*taken already exists; choose another run id"):
        RunDir.create(tmp_path, "taken", given=True)
    assert RunDir.create(tmp_path, "taken", given=False).path == tmp_path / "taken-2"
    assert RunDir.create(tmp_path, "taken", given=False).path == tmp_path / "taken-3"
    assert list((tmp_path / "taken").iterdir()) == []


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "results.csv"
    atomic_write(target, "a\n1\n")
    atomic_write(target, "a\n2\n")
    assert target.read_text() == "a\n2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    atomic_write(target, "old\n")

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(rundir.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_the_temporary_file_is_made_beside_the_target(tmp_path, monkeypatch):
    # rename is atomic only within one file system: the temporary must live in the target's folder
    seen = []

    def spy(src, dst):
        seen.append((os.path.dirname(src), os.path.dirname(dst)))
        return os.rename(src, dst)

    monkeypatch.setattr(rundir.os, "replace", spy)
    atomic_write(tmp_path / "sub" / "x.json", "{}")
    assert seen == [(str(tmp_path / "sub"), str(tmp_path / "sub"))]


def test_default_run_id_is_a_timestamp_and_host():
    run_id = default_run_id()
    date, clock, host = run_id.split("-", 2)
    assert len(date) == 8 and len(clock) == 6 and host


def test_a_run_id_resolves_under_the_reports_folder_and_a_missing_one_says_where(tmp_path):
    (tmp_path / "r1").mkdir()
    assert rundir.resolve("r1", tmp_path) == tmp_path / "r1"
    with pytest.raises(RunError, match=f"nope: no such run folder, run-id under {tmp_path}, or file"):
        rundir.resolve("nope", tmp_path)


def test_every_path_of_a_run_folder_is_named_in_one_place(tmp_path):
    run_dir = RunDir(tmp_path / "r")
    names = {p.relative_to(run_dir.path).as_posix() for p in (
        run_dir.results_csv, run_dir.benchmark_json, run_dir.calibration_json, run_dir.rounds_json("c"),
        run_dir.operators_csv("c"), run_dir.breakdown_csv("c"), run_dir.summary_md, run_dir.report_html,
        run_dir.plots_dir, run_dir.tb_dir)}
    assert names == {"results.csv", "benchmark.json", "calibration.json", "rounds/c.json", "traces/c/operators.csv",
                     "traces/c/breakdown.csv", "summary.md", "report.html", "plots", "tb"}
    assert run_dir.run_id == "r"
