"""python -m bench gate BASELINE CANDIDATE: exit 1 when the candidate run is slower than the baseline."""

from __future__ import annotations

import argparse

from bench.commands import reports_dir_option
from bench.verdicts import gate


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("gate", help="fail (exit 1) when the candidate is slower than the baseline",
                                 description="Exit 0: no regression; 1: a case slower or broken (or, with --strict, "
                                             "vanished); 2: unusable input.")
    parser.add_argument("baseline", help="run folder, run-id, or pytest-benchmark JSON saved with raw data")
    parser.add_argument("candidate", help="the same, for the run under test")
    defaults = {key: f"{value * 100:g}" for key, value in gate.DEFAULT_THRESHOLD.items()}
    parser.add_argument("--threshold", type=float, default=None, metavar="PCT",
                        help=f"smallest slowdown in percent that fails (default: {defaults['cuda', 'device']} on GPU "
                             f"device time, {defaults['cuda', 'host']} on GPU host time, {defaults['cpu', 'host']} on "
                             "CPU runs)")
    parser.add_argument("--metric", choices=gate.METRICS, default="device",
                        help="device: the GPU's own time where both runs measured it, else host time (default); "
                             "host: end-to-end host time")
    parser.add_argument("--allow-different-env", action="store_true",
                        help="compare runs whose device, torch version or size differ (refused otherwise)")
    parser.add_argument("--strict", action="store_true", help="fail when a baseline case is missing from the candidate")
    reports_dir_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    threshold = None if args.threshold is None else args.threshold / 100
    result = gate.gate(args.baseline, args.candidate, threshold=threshold, metric=args.metric,
                       reports_dir=args.reports_dir, allow_different_env=args.allow_different_env, strict=args.strict)
    table = result.markdown(args.baseline, args.candidate)
    print(table)
    gate.write_step_summary(table)
    return 1 if result.failed else 0
