"""python -m bench validate --out DIR: a machine's first run, every stage logged into DIR."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands import device_option


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("validate", help="a machine's first run: GPU tests, timers, kernel against SDPA, "
                                 "the GPU preset's sweep, A/A gate, profile; every stage logged into --out")
    parser.add_argument("--out", type=Path, required=True, help="a new or empty folder for the results")
    device_option(parser)
    parser.add_argument("--size", default="full", help="full (default: the GPU run) or quick (a CPU rehearsal)")
    parser.add_argument("--stages", default="all", help="comma-separated stages in the order they run, or all "
                                                        "(default)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bench.machine import validate
    from bench.sweep.models import SIZES
    from bench.sweep.options import parse_choice, parse_names, resolve_device

    device = resolve_device(args.device)
    size = parse_choice("size", args.size, SIZES)
    stages = parse_names("stages", args.stages, validate.STAGES)
    return validate.run(args.out, device, size, stages)
