"""The run folder: one row per case written as it ends, raw rounds beside it, atomic writes, fresh folders,
and the readers (report, compare, gate) on new folders, folders made before rounds/, and JSON files."""

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from bench.results import rundir
from bench.results.row import COLUMNS, Row
from bench.results.rundir import (
    RunDir,
    RunError,
    RunWriter,
    atomic_write,
    default_run_id,
    load_device_rounds,
    load_results,
    load_rounds,
    sweep_options,
)


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


def test_default_run_id_uses_the_short_host_name(monkeypatch):
    monkeypatch.setattr(rundir.socket, "gethostname", lambda: "box.example.com")
    assert re.fullmatch(r"\d{8}-\d{6}-box", default_run_id())


def test_atomic_write_makes_missing_folders_and_a_hidden_temporary_beside_the_target(tmp_path, monkeypatch):
    names = []

    def spy(src, dst):
        names.append(os.path.basename(src))
        return os.rename(src, dst)

    monkeypatch.setattr(rundir.os, "replace", spy)
    atomic_write(tmp_path / "a" / "b" / "x.json", "{}")
    assert (tmp_path / "a" / "b" / "x.json").read_text() == "{}"
    # hidden, and not *.json: a write killed half-way is never read as a rounds file
    assert names[0].startswith(".x.json.") and names[0].endswith(".tmp")


def test_a_leftover_temporary_in_rounds_is_not_read(tmp_path):
    run_dir = RunDir.create(tmp_path, "run", given=True)
    RunWriter(run_dir).add(row("cnn-fwd-fp32-b8"))
    (run_dir.rounds_dir / ".gru.json.abc123.tmp").write_text("{half")
    assert list(load_rounds(run_dir.path)[0]) == ["cnn-fwd-fp32-b8"]


def test_a_hundred_taken_folders_are_refused_in_one_line(tmp_path):
    for name in ["run", *(f"run-{i}" for i in range(2, 101))]:
        (tmp_path / name).mkdir()
    with pytest.raises(RunError, match=f"^could not create a fresh run folder next to {tmp_path / 'run'}$"):
        RunDir.create(tmp_path, "run", given=False)


def test_a_run_folder_is_made_with_its_parents(tmp_path):
    assert RunDir.create(tmp_path / "a" / "b", "r", given=True).path.is_dir()


def test_rows_are_stamped_with_the_local_time(tmp_path):
    writer = RunWriter(RunDir.create(tmp_path, "run", given=True))
    writer.add(row("cnn-fwd-fp32-b8"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", writer.records[0]["timestamp"])


def test_json_and_csv_helpers(tmp_path):
    path = RunWriter.write_json(tmp_path / "p.json", {"where": Path("/x"), "n": 1})
    assert json.loads(path.read_text()) == {"where": "/x", "n": 1}  # what JSON cannot hold, as text
    csv = RunWriter.write_csv(tmp_path / "f.csv", pd.DataFrame({"a": [1, 2]}))
    assert csv.read_text() == "a\n1\n2\n"  # no index column


def results_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_results_keep_versions_as_text_and_read_a_csv_path_or_a_run_id(tmp_path):
    csv = results_file(tmp_path / "r1" / "results.csv",
                       "case_id,cuda,driver,git_commit\ncnn-fwd-fp32-b2,12.8,580.82,0123456\n")
    for frame in (load_results("r1", reports_dir=tmp_path), load_results(csv)):
        assert (frame.loc[0, "cuda"], frame.loc[0, "driver"], frame.loc[0, "git_commit"]) == ("12.8", "580.82",
                                                                                               "0123456")
        assert list(frame.columns[:len(COLUMNS)]) == COLUMNS  # every column, even those the file lacks


def test_an_attention_column_left_empty_by_models_without_attention_is_read_as_text(tmp_path):
    csv = results_file(tmp_path / "r1" / "results.csv", "case_id,attention\ncnn-fwd-fp32-b2,\ngru-fwd-fp32-b2,\n")
    attention = load_results(csv)["attention"]
    assert attention.isna().all() and pd.api.types.is_string_dtype(attention)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("notes.txt", "case_id\nx\n", "notes.txt: not a run folder (no results.csv)"),
    ("empty.csv", "", "empty.csv: unreadable CSV (No columns to parse from file)"),
    ("header.csv", "case_id,status\n", "header.csv: no cases in it"),
    ("other.csv", "a,b\n1,2\n", "other.csv: no cases in it"),
])
def test_unusable_results_say_which_file_and_why(tmp_path, name, text, message):
    path = results_file(tmp_path / name, text)
    with pytest.raises(RunError) as err:
        load_results(path)
    assert str(err.value) == f"{tmp_path}/{message}"


def test_calibration_of_a_run_missing_or_damaged_is_empty(tmp_path):
    run_dir = RunDir.create(tmp_path, "run", given=True)
    assert rundir.load_calibration(run_dir.path) == {}
    run_dir.calibration_json.write_text("{")
    assert rundir.load_calibration(run_dir.path) == {}
    run_dir.calibration_json.write_text('{"matmul_tflops": {"fp32": 1.5}}')
    assert rundir.load_calibration(run_dir.path) == {"matmul_tflops": {"fp32": 1.5}}


@pytest.mark.parametrize(("fullname", "short"), [
    ("bench/test_models.py::test_model[cnn-fwd-fp32-b2]", "cnn-fwd-fp32-b2"),
    ("tests/test_x.py::test_plain", "tests/test_x.py::test_plain"), ("t[a[1]]", "a[1]")])
def test_short_name_is_the_parameter_of_a_benchmark(fullname, short):
    assert rundir.short_name(fullname) == short


def test_an_empty_rounds_folder_says_so(tmp_path):
    run_dir = RunDir.create(tmp_path, "run", given=True)
    run_dir.rounds_dir.mkdir()
    with pytest.raises(RunError, match=f"^{run_dir.rounds_dir}: holds no rounds$"):
        load_rounds(run_dir.path)


def test_a_benchmark_without_stats_or_name_has_no_raw_rounds(tmp_path):
    path = results_file(tmp_path / "b.json", json.dumps({"benchmarks": [{"extra_info": {}}]}))
    with pytest.raises(RunError, match=r"b\.json: \? has no raw rounds \(save with --benchmark-json"):
        load_rounds(path)


def test_a_sweeps_run_folder_options_are_one_argument_each():
    """A separate value would be read by pytest as a path, loading the conftest.py files above it."""
    assert sweep_options("A-1", Path("/tmp/out")) == ["--run-id=A-1", "--reports-dir=/tmp/out"]


def test_a_gpu_case_s_device_rounds_and_method_are_saved_beside_its_host_rounds(tmp_path):
    run_dir = RunDir.create(tmp_path, "run", given=True)
    writer = RunWriter(run_dir)
    gpu = Row("a", "model", "fwd", "bf16", 8, "cuda", rounds_s=(3e-3, 4e-3), device_rounds_s=(1e-3, 2e-3),
              device_method="graph")
    writer.add(gpu)
    writer.add(row("cnn-fwd-fp32-b8", device_method="host"))
    assert json.loads(run_dir.rounds_json("a").read_text()) == {
        "case_id": "a", "device": "cuda", "rounds_s": [3e-3, 4e-3], "device_rounds_s": [1e-3, 2e-3],
        "device_method": "graph"}
    assert "device_rounds_s" not in json.loads(run_dir.rounds_json("cnn-fwd-fp32-b8").read_text())
    device = load_device_rounds(run_dir.path)
    assert list(device) == ["a"] and list(device["a"][0]) == [1e-3, 2e-3] and device["a"][1] == "graph"
    # a CPU case has none of its own
    results = load_results(run_dir.path).set_index("case_id")
    assert results.loc["a", "device_s"] == 1.5e-3 and results.loc["a", "bound"] == "host"
    assert results.loc["cnn-fwd-fp32-b8", "bound"] == "cpu"
