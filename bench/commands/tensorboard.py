"""python -m bench tensorboard RUN: TensorBoard on a run's traces and scalars."""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.commands import reports_dir_option


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("tensorboard", help="open a run's traces and scalars in TensorBoard")
    parser.add_argument("run", help="run folder or run-id under reports/")
    parser.add_argument("--port", type=int, default=6006)
    reports_dir_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bench.results.rundir import RunDir, RunError, resolve

    run_dir = RunDir(resolve(args.run, args.reports_dir))
    if not run_dir.traces_dir.is_dir() and not run_dir.tb_dir.is_dir():
        raise RunError(f"{run_dir.path}: no traces/ or tb/ (run pytest bench with --profile, "
                       "then python -m bench report)")
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir.path), "--port", str(args.port)]
    print(f"note: the PyTorch Profiler tab's views load their chart libraries from the internet (www.gstatic.com, "
          f"cdnjs.cloudflare.com) and stay blank without it; offline, open each case's page "
          f"{run_dir.trace_page('<case-id>')} (or report.html's links)", file=sys.stderr)
    print(" ".join(command), file=sys.stderr)
    return subprocess.call(command)
