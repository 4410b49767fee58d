"""python -m bench scale: data-parallel scaling of the training step under torchrun, at each world size."""

from __future__ import annotations

import argparse
import signal
import sys

from bench import MAX_TIME_S, MIN_ROUNDS
from bench.commands import device_option, reports_dir_option


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "scale", help="data-parallel scaling: the training step under torchrun at each world size",
        description="Runs `torchrun --nproc-per-node N` (standalone, or the rendezvous given) for each N, DDP "
                    "(or FSDP2) over NCCL on GPUs or gloo on CPUs; rows with global samples/s and scaling "
                    "efficiency go to a run folder. Exit 0: every case ran; 1: a world size failed (its rows say "
                    "which rank and why); 2: unusable input.")
    parser.add_argument("--nproc", default="1,2", help="world sizes (processes per node), comma-separated "
                                                       "(default 1,2)")
    parser.add_argument("--models", default="cnn,encoder", help="models (default cnn,encoder)")
    parser.add_argument("--precisions", default="fp32", help="precisions (default fp32)")
    parser.add_argument("--batch-sizes", default=None, help="per-rank batch sizes (default: each model's smaller)")
    parser.add_argument("--attn", default="sdpa", help="attention implementation (default sdpa)")
    parser.add_argument("--size", default="quick", help="quick (default) or full")
    parser.add_argument("--strategies", default="ddp", help="ddp and/or fsdp (FSDP2's fully_shard); default ddp")
    device_option(parser)
    parser.add_argument("--max-time", type=float, default=MAX_TIME_S,
                        help=f"seconds of timed rounds per case (default {MAX_TIME_S:g})")
    parser.add_argument("--min-rounds", type=int, default=MIN_ROUNDS,
                        help=f"at least this many rounds (default {MIN_ROUNDS})")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds one world size may take, all its cases (default 1800)")
    parser.add_argument("--nnodes", default=None, help="nodes taking part (torchrun's --nnodes; with "
                                                       "--rdzv-endpoint)")
    parser.add_argument("--rdzv-endpoint", default=None, help="torchrun's rendezvous host:port (c10d)")
    parser.add_argument("--rdzv-id", default=None, help="torchrun's rendezvous id, the same on every node")
    parser.add_argument("--profile", action="store_true",
                        help="rank 0 profiles three more steps of each case into traces/<case-id>/; the row "
                             "gets the collectives' share of its self time")
    parser.add_argument("--run-id", default=None, help="the run folder's name (default: timestamp-host)")
    reports_dir_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bench.distributed.scale import Launch, rendezvous, scale
    from bench.distributed.scale_worker import STRATEGIES
    from bench.results.rundir import RunDir, default_run_id
    from bench.sweep.attention import ATTENTION
    from bench.sweep.cases import sweep
    from bench.sweep.models import MODELS, SIZES
    from bench.sweep.options import parse_batch_sizes, parse_choice, parse_counts, parse_names, resolve_device
    from bench.sweep.precision import PRECISIONS
    from bench.views.report import write_report

    device = resolve_device(args.device)
    cases = sweep(parse_names("models", args.models, tuple(MODELS)), ["step"],
                  parse_names("precisions", args.precisions, tuple(PRECISIONS)),
                  parse_batch_sizes(args.batch_sizes), parse_names("attn", args.attn, tuple(ATTENTION)),
                  parse_choice("size", args.size, SIZES), default_batches=slice(0, 1))
    nprocs = parse_counts("nproc", args.nproc)
    nnodes = parse_counts("nnodes", args.nnodes)[0] if args.nnodes else None
    strategies = parse_names("strategies", args.strategies, tuple(STRATEGIES))
    # A cancelled job sends SIGTERM: exit through the clean-up, which stops every rank of the world size.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run_dir = RunDir.create(args.reports_dir, args.run_id or default_run_id(), bool(args.run_id))
    launch = Launch(device.type, args.max_time, args.min_rounds, args.timeout,
                    rendezvous(nnodes, args.rdzv_endpoint, args.rdzv_id),
                    run_dir.path if args.profile else None)
    rows = scale(cases, strategies, nprocs, run_dir, launch, log=lambda line: print(line, file=sys.stderr, flush=True))
    for row in rows:
        figures = (f"{row.global_samples_per_s:.4g} samples/s"
                   + (f", efficiency {row.scaling_efficiency:.0%}" if row.scaling_efficiency is not None else "")
                   if row.status == "ok" else f"{row.status}: {row.reason}")
        print(f"{row.case_id}: {figures}")
    try:
        print(f"report: {write_report(run_dir.path)}")
    except Exception as err:  # the rows are on disk; say why the report is missing
        print(f"report not written: {type(err).__name__}: {err}", file=sys.stderr)
    return 0 if all(row.status == "ok" for row in rows) else 1
