"""python -m bench compare RUN RUN ...: the same cases from runs on different machines, side by side."""

from __future__ import annotations

import argparse

from bench.commands import reports_dir_option


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("compare", help="line up the same cases from runs on different machines")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders or run-ids under reports/")
    reports_dir_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bench.verdicts.compare import write_comparison

    out = write_comparison(args.runs, args.reports_dir)
    print(f"wrote {out}/compare.md, compare.html, compare.png")
    return 0
