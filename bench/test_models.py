"""The model sweep: forward/backward of every model, precision, batch size and attention implementation."""

import pytest

from bench.harness import run_case


def test_model(case, benchmark, archbench_run):
    benchmark.group = f"{case.model} {case.phase}"
    row = run_case(case, benchmark, archbench_run.settings)
    archbench_run.record(row, benchmark)
    if row["status"] == "error":
        pytest.fail(row["reason"])
    if row["status"] != "ok":
        pytest.skip(f"{row['status']}: {row['reason']}")
