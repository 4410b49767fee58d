"""The model sweep: forward/backward of every model, precision, batch size and attention implementation."""


def test_model(case, benchmark, archbench_run):
    benchmark.group = f"{case.model} {case.phase}"
    archbench_run.run(case, benchmark)
