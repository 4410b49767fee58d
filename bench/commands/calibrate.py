"""python -m bench calibrate: measure this machine's matmul TFLOP/s and copy bandwidth, and cache them."""

from __future__ import annotations

import argparse
import json
import sys

from bench.commands import device_option


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("calibrate", help="measure this machine's matmul TFLOP/s and copy bandwidth")
    device_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bench.machine import calibrate
    from bench.sweep.options import resolve_device

    device = resolve_device(args.device)
    result = calibrate.load_or_measure(device, refresh=True)
    print(json.dumps({k: result[k] for k in ("device_name", "matmul_tflops", "copy_gbps")}, indent=2))
    print(f"cached in {calibrate.cache_path(device)}", file=sys.stderr)
    return 0
