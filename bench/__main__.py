"""archbench's command line: python -m bench {calibrate, compare, gate} ..."""

from __future__ import annotations

import argparse
import json
import sys


def _calibrate(args: argparse.Namespace) -> int:
    from bench import calibrate
    from bench.options import OptionError, resolve_device

    try:
        device = resolve_device(args.device)
    except OptionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = calibrate.load_or_measure(device, refresh=True)
    print(json.dumps({k: result[k] for k in ("device_name", "matmul_tflops", "copy_gbps")}, indent=2))
    print(f"cached in {calibrate.cache_path(device)}", file=sys.stderr)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from bench.compare import write_comparison

    out = write_comparison(args.runs)
    print(f"wrote {out}/compare.md, compare.html, compare.png")
    return 0


def _gate(args: argparse.Namespace) -> int:
    from bench.gate import gate, write_step_summary

    threshold = None if args.threshold is None else args.threshold / 100
    result = gate(args.baseline, args.candidate, threshold=threshold, alpha=args.alpha)
    table = result.markdown(args.baseline, args.candidate)
    print(table)
    write_step_summary(table)
    return 1 if result.regressions else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    calibrate = commands.add_parser("calibrate", help="measure this machine's matmul TFLOP/s and copy bandwidth")
    calibrate.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    calibrate.set_defaults(run=_calibrate)

    compare = commands.add_parser("compare", help="line up the same cases from runs on different machines")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run folders or run-ids under reports/")
    compare.set_defaults(run=_compare)

    gate = commands.add_parser("gate", help="fail (exit 1) when the candidate is slower than the baseline",
                               description="Exit 0: no regression; 1: a regression; 2: unusable input.")
    gate.add_argument("baseline", help="run folder, run-id, or pytest-benchmark JSON saved with raw data")
    gate.add_argument("candidate", help="the same, for the run under test")
    gate.add_argument("--threshold", type=float, default=None, metavar="PCT",
                      help="smallest slowdown in percent that may fail (default: 5 on GPU runs, 50 on CPU runs)")
    gate.add_argument("--alpha", type=float, default=0.01, help="significance level of the tests (default 0.01)")
    gate.set_defaults(run=_gate)

    args = parser.parse_args(argv)
    from bench.runs import RunError

    try:
        return args.run(args)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
