"""archbench's pytest plugin, loaded through the pytest11 entry point in pyproject.toml: the sweep's options,
its cases as parameters, the session that times them, and the run's summary. The run itself is session.py."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # Triton runs on a CPU only in its interpreter, chosen before triton loads
    os.environ.setdefault("TRITON_INTERPRET", "1")

from bench.run.session import Session
from bench.sweep.options import OptionError, SweepOptions, add_options
from bench.verdicts import turns

OPTIONS = pytest.StashKey[SweepOptions]()
SESSION = pytest.StashKey[Session]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _given(config: pytest.Config, name: str) -> bool:
    """Whether the command line names this option (pytest-benchmark's options always have a value)."""
    flag = "--" + name.replace("_", "-")
    return any(arg == flag or arg.startswith(flag + "=") for arg in config.invocation_params.args)


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[OPTIONS] = SweepOptions.from_values(config.getoption, lambda name: _given(config, name))
    except OptionError as err:
        raise pytest.UsageError(str(err)) from None
    if config.stash[OPTIONS].instructions:  # counted, not timed: the benchmark fixture stays unused
        config.addinivalue_line("filterwarnings", "ignore:Benchmark fixture was not used")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    options = metafunc.config.stash[OPTIONS]
    for name, cases in (("case", options.cases), ("attention_case", options.attention_cases)):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, cases, ids=[case.id for case in cases])


@pytest.fixture(scope="session")
def archbench_session(request: pytest.FixtureRequest) -> Session:
    session = Session(request.config.stash[OPTIONS])
    request.config.stash[SESSION] = session
    params = [getattr(item, "callspec", None) for item in request.session.items]
    cases = [p.params[name] for p in params if p for name in ("case", "attention_case") if name in p.params]
    turns.announce([case.id for case in cases])
    session.expect(cases)
    return session


def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash.get(SESSION, None)
    if run is not None:
        hook = session.config.hook
        run.finish(lambda benchmarks: hook.pytest_benchmark_generate_json(
            config=session.config, benchmarks=benchmarks, include_data=True,
            machine_info=hook.pytest_benchmark_generate_machine_info(config=session.config),
            commit_info=hook.pytest_benchmark_generate_commit_info(config=session.config)))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    run = config.stash.get(SESSION, None)
    lines = run.summary() if run is not None else []
    if lines:
        terminalreporter.write_sep("-", "archbench")
        for line in lines:
            terminalreporter.write_line(line, red=line.startswith("report not written"))
