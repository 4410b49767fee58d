"""The model sweep: forward/backward of every model, precision, batch size and attention implementation."""

from bench.run.session import outcome


def test_model(case, benchmark, archbench_session):
    benchmark.group = f"{case.model} {case.phase}"
    outcome(archbench_session.run(case, benchmark))
