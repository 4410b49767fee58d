"""python -m bench: its commands answer, look run-ids up under --reports-dir, and refuse bad input in one
line with exit 2."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.__main__ import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_help_lists_every_command_at_once():
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    listed = done.stdout.split("COMMAND", 2)[-1]
    assert all(f"    {name}" in listed for name in COMMANDS) and len(COMMANDS) == 10


def test_each_command_is_a_module_of_its_own_and_has_a_line_in_readme():
    readme = (ROOT / "README.md").read_text()
    assert sorted(path.stem for path in (ROOT / "bench" / "commands").glob("[!_]*.py")) == sorted(COMMANDS)
    assert all(f"| `{name}" in readme for name in COMMANDS)


@pytest.fixture
def reports(tmp_path):
    run = tmp_path / "r1"
    run.mkdir()
    pd.DataFrame([{"case_id": "cnn-fwd-fp32-b2", "kind": "model", "model": "cnn", "phase": "fwd",
                   "precision": "fp32", "batch": 2, "status": "skipped", "reason": "x", "device_name": "CPU",
                   "peak_mem_bytes": None}]).to_csv(run / "results.csv", index=False)
    return tmp_path


def test_report_finds_a_run_id_under_reports_dir(reports, capsys):
    assert main(["report", "r1", "--reports-dir", str(reports)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {reports / 'r1' / 'report.html'}")


def test_tensorboard_says_its_profiler_views_need_internet_and_where_the_offline_pages_are(reports, monkeypatch,
                                                                                          capsys):
    (reports / "r1" / "traces").mkdir()
    launched = []
    monkeypatch.setattr("subprocess.call", lambda command: launched.append(command) or 0)
    assert main(["tensorboard", "r1", "--reports-dir", str(reports), "--port", "6007"]) == 0
    note, command = capsys.readouterr().err.strip().splitlines()
    assert note == ("note: the PyTorch Profiler tab's views load their chart libraries from the internet "
                    "(www.gstatic.com, cdnjs.cloudflare.com) and stay blank without it; offline, open each case's "
                    f"page {reports / 'r1' / 'traces' / '<case-id>' / 'index.html'} (or report.html's links)")
    assert launched == [[sys.executable, "-m", "tensorboard.main", "--logdir", str(reports / "r1"), "--port", "6007"]]
    assert command == " ".join(launched[0])


@pytest.mark.parametrize(("argv", "message"), [
    (["report", "nope"], "error: nope: no such run folder, run-id under"),
    (["tensorboard", "r1"], "no traces/ or tb/ (run pytest bench with --profile, then python -m bench report)"),
    (["compare", "r1"], "error: compare needs at least two runs"),
    (["gate", "r1", "r1"], "no rounds/ or benchmark.json in this run folder"),
    (["calibrate", "--device", "tpu"], "error: --device: unknown value 'tpu'; valid values: auto, cpu, cuda"),
])
def test_unusable_input_is_one_line_and_exit_2(reports, capsys, argv, message):
    if argv[0] != "calibrate":
        argv = [*argv, "--reports-dir", str(reports)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
