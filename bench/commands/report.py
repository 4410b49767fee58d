"""python -m bench report RUN: summary.md, report.html, plots/ and tb/ for a run folder."""

from __future__ import annotations

import argparse

from bench.commands import reports_dir_option


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("report", help="write summary.md, report.html, plots/ and tb/ for a run")
    parser.add_argument("run", help="run folder or run-id under reports/")
    reports_dir_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bench.views.report import write_report

    print(f"wrote {write_report(args.run, args.reports_dir)} (and summary.md, plots/, tb/ beside it)")
    return 0
