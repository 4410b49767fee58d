"""python -m bench ab BASELINE CANDIDATE [-- SWEEP]: paired A/B runs of two revisions (or interpreters)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from bench.commands import reports_dir_option
from bench.verdicts import ab


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "ab", help="paired A/B: two revisions (or interpreters) run alternately in fresh processes; fail (exit 1) "
                   "on a confirmed slowdown",
        usage="python -m bench ab [options] BASELINE CANDIDATE [-- SWEEP ARGUMENTS]",
        description="Exit 0: no confirmed regression; 1: a case slower twice over, or broken; 2: unusable input. "
                    "The sweep's pytest arguments go after -- (default: bench, the quick sweep).")
    parser.add_argument("baseline", help="git revision of this checkout for side A (e.g. main)")
    parser.add_argument("candidate", help="git revision for side B (e.g. HEAD; the same as A with --python-b)")
    measure_options(parser)
    parser.add_argument("--python-a", default=sys.executable, help="interpreter for side A (default: this one)")
    parser.add_argument("--python-b", default=sys.executable, help="interpreter for side B (default: this one)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs (default: reports/ab-<time>)")
    reports_dir_option(parser)
    parser.set_defaults(handler=run)


def measure_options(parser: argparse.ArgumentParser) -> None:
    """How ab measures and judges a pair of revisions: its options, shared with bisect."""
    parser.add_argument("--pairs", type=int, default=None,
                        help=f"A/B pairs of processes, run A B B A ... (default {ab.DEFAULT_PAIRS['cuda']} on a GPU, "
                             f"{ab.DEFAULT_PAIRS['cpu']} on a CPU; {ab.INSTRUCTION_PAIRS} with --instructions)")
    parser.add_argument("--threshold", type=float, default=None, metavar="PCT",
                        help=f"the slowdown in percent worth catching; a case is slower from half of it when "
                             f"significant (default {ab.DEFAULT_THRESHOLD * 100:.0f}; "
                             f"{ab.INSTRUCTION_THRESHOLD * 100:.0f} with --instructions)")
    parser.add_argument("--metric", choices=ab.METRICS, default="device",
                        help="device: the GPU's own time where every process measured it, else host time "
                             "(default); host: end-to-end host time; instructions: as --instructions")
    parser.add_argument("--instructions", dest="metric", action="store_const", const="instructions",
                        help="gate on instruction counts under valgrind's callgrind (CPU, single-threaded) instead "
                             "of time: deterministic, so a 1%% change shows; minutes a process")
    parser.add_argument("--alpha", type=float, default=ab.DEFAULT_ALPHA,
                        help=f"chance of any false alarm over the cases (default {ab.DEFAULT_ALPHA}; Holm)")
    parser.add_argument("--cpus", default=None, metavar="LIST",
                        help="pin both sides' processes to these CPUs, e.g. 0-7 (taskset's form; default: not pinned, "
                             "both free to use every CPU this process may)")


def measure_kwargs(args: argparse.Namespace) -> dict:
    """ab()'s keyword arguments from measure_options' values."""
    return {"pairs": args.pairs, "threshold": None if args.threshold is None else args.threshold / 100,
            "alpha": args.alpha, "metric": args.metric, "cpus": ab.parse_cpus(args.cpus) if args.cpus else ()}


def run(args: argparse.Namespace) -> int:
    from bench.verdicts.gate import write_step_summary

    # A cancelled CI job sends SIGTERM: exit through ab's clean-up (its sweeps stopped, worktrees removed).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    out = args.out or args.reports_dir / time.strftime("ab-%Y%m%d-%H%M%S")
    result = ab.ab(args.baseline, args.candidate, args.sweep, out, python_a=args.python_a, python_b=args.python_b,
                   log=lambda line: print(line, file=sys.stderr, flush=True), **measure_kwargs(args))
    table = result.markdown()
    print(table)
    write_step_summary(table)
    print(f"wrote {out}/ab.md, medians.csv and the runs of every process", file=sys.stderr)
    return 1 if result.failed else 0
