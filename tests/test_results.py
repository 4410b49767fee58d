"""The results writer: columns, one row per case (skipped and oom included), atomic writes."""

import pandas as pd

from bench.results import COLUMNS, RunWriter, atomic_write, default_run_id


def test_results_csv_has_one_row_per_case_with_the_design_columns(tmp_path):
    writer = RunWriter(tmp_path / "run-1")
    writer.add({"case_id": "cnn-fwd-fp32-b8", "model": "cnn", "status": "ok", "median_s": 0.01, "rounds": 7})
    writer.add({"case_id": "encoder-fwd-fp32-b8-sdpa_cudnn", "status": "skipped", "reason": "needs CUDA"})
    writer.add({"case_id": "vit_b_16-fwd-fp32-b512", "status": "oom", "reason": "OutOfMemoryError: ..."})
    frame = pd.read_csv(tmp_path / "run-1" / "results.csv")
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 3
    assert list(frame["status"]) == ["ok", "skipped", "oom"]
    assert set(frame["run_id"]) == {"run-1"}
    assert frame.loc[1, "reason"] == "needs CUDA"
    assert frame.loc[0, "median_s"] == 0.01 and pd.isna(frame.loc[2, "median_s"])


def test_extra_fields_are_kept_after_the_design_columns(tmp_path):
    writer = RunWriter(tmp_path / "run")
    writer.add({"case_id": "x", "status": "ok", "note": "extra"})
    assert list(pd.read_csv(writer.write_csv()).columns) == [*COLUMNS, "note"]


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "results.csv"
    atomic_write(target, "a\n1\n")
    atomic_write(target, "a\n2\n")
    assert target.read_text() == "a\n2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_default_run_id_is_a_timestamp_and_host():
    run_id = default_run_id()
    date, clock, host = run_id.split("-", 2)
    assert len(date) == 8 and len(clock) == 6 and host
