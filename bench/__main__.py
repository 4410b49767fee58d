"""archbench's command line: python -m bench {report, tensorboard, calibrate, compare, gate, ab, scale, validate} ..."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import MAX_TIME_S, MIN_ROUNDS


def _report(args: argparse.Namespace) -> int:
    from bench.views.report import write_report

    print(f"wrote {write_report(args.run, args.reports_dir)} (and summary.md, plots/, tb/ beside it)")
    return 0


def _tensorboard(args: argparse.Namespace) -> int:
    import subprocess

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


def _calibrate(args: argparse.Namespace) -> int:
    from bench.machine import calibrate
    from bench.sweep.options import OptionError, resolve_device

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
    from bench.verdicts.compare import write_comparison

    out = write_comparison(args.runs, args.reports_dir)
    print(f"wrote {out}/compare.md, compare.html, compare.png")
    return 0


def _gate(args: argparse.Namespace) -> int:
    from bench.verdicts.gate import gate, write_step_summary

    threshold = None if args.threshold is None else args.threshold / 100
    result = gate(args.baseline, args.candidate, threshold=threshold, metric=args.metric,
                  reports_dir=args.reports_dir, allow_different_env=args.allow_different_env, strict=args.strict)
    table = result.markdown(args.baseline, args.candidate)
    print(table)
    write_step_summary(table)
    return 1 if result.failed else 0


def _ab(args: argparse.Namespace) -> int:
    import signal
    import time

    from bench.verdicts.ab import ab, parse_cpus
    from bench.verdicts.gate import write_step_summary

    # A cancelled CI job sends SIGTERM: exit through ab's clean-up (its sweeps stopped, worktrees removed).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    out = args.out or args.reports_dir / time.strftime("ab-%Y%m%d-%H%M%S")
    threshold = None if args.threshold is None else args.threshold / 100
    result = ab(args.baseline, args.candidate, args.sweep, out, pairs=args.pairs, threshold=threshold,
                alpha=args.alpha, python_a=args.python_a, python_b=args.python_b,
                log=lambda line: print(line, file=sys.stderr, flush=True), metric=args.metric,
                cpus=parse_cpus(args.cpus) if args.cpus else ())
    table = result.markdown()
    print(table)
    write_step_summary(table)
    print(f"wrote {out}/ab.md, medians.csv and the runs of every process", file=sys.stderr)
    return 1 if result.failed else 0


def _scale(args: argparse.Namespace) -> int:
    import signal

    from bench.distributed.scale import Launch, rendezvous, scale
    from bench.distributed.scale_worker import STRATEGIES
    from bench.results.rundir import RunDir, default_run_id
    from bench.sweep.attention import ATTENTION
    from bench.sweep.cases import sweep
    from bench.sweep.models import MODELS, SIZES
    from bench.sweep.options import (
        OptionError,
        parse_batch_sizes,
        parse_choice,
        parse_counts,
        parse_names,
        resolve_device,
    )
    from bench.sweep.precision import PRECISIONS
    from bench.views.report import write_report

    try:
        device = resolve_device(args.device)
        cases = sweep(parse_names("models", args.models, tuple(MODELS)), ["step"],
                      parse_names("precisions", args.precisions, tuple(PRECISIONS)),
                      parse_batch_sizes(args.batch_sizes), parse_names("attn", args.attn, tuple(ATTENTION)),
                      parse_choice("size", args.size, SIZES), default_batches=slice(0, 1))
        nprocs = parse_counts("nproc", args.nproc)
        nnodes = parse_counts("nnodes", args.nnodes)[0] if args.nnodes else None
        strategies = parse_names("strategies", args.strategies, tuple(STRATEGIES))
    except OptionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # A cancelled job sends SIGTERM: exit through the clean-up, which stops every rank of the world size.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run_dir = RunDir.create(args.reports_dir, args.run_id or default_run_id(), bool(args.run_id))
    launch = Launch(device.type, args.max_time, args.min_rounds, args.timeout,
                    rendezvous(nnodes, args.rdzv_endpoint, args.rdzv_id),
                    run_dir.traces_dir if args.profile else None)
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


def _validate(args: argparse.Namespace) -> int:
    from bench.machine import validate
    from bench.sweep.models import SIZES
    from bench.sweep.options import OptionError, parse_choice, parse_names, resolve_device

    try:
        device = resolve_device(args.device)
        size = parse_choice("size", args.size, SIZES)
        stages = parse_names("stages", args.stages, validate.STAGES)
    except OptionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return validate.run(args.out, device, size, stages)


def main(argv: list[str] | None = None) -> int:
    from bench.results.rundir import REPORTS_DIR, RunError

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runs = argparse.ArgumentParser(add_help=False)  # the options of every command that reads run folders
    runs.add_argument("--reports-dir", type=Path, default=REPORTS_DIR,
                      help=f"where run-ids are looked up (default: {REPORTS_DIR}/ in the working directory)")

    report = commands.add_parser("report", parents=[runs],
                                 help="write summary.md, report.html, plots/ and tb/ for a run")
    report.add_argument("run", help="run folder or run-id under reports/")
    report.set_defaults(handler=_report)

    tensorboard = commands.add_parser("tensorboard", parents=[runs],
                                      help="open a run's traces and scalars in TensorBoard")
    tensorboard.add_argument("run", help="run folder or run-id under reports/")
    tensorboard.add_argument("--port", type=int, default=6006)
    tensorboard.set_defaults(handler=_tensorboard)

    calibrate = commands.add_parser("calibrate", help="measure this machine's matmul TFLOP/s and copy bandwidth")
    calibrate.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    calibrate.set_defaults(handler=_calibrate)

    compare = commands.add_parser("compare", parents=[runs],
                                  help="line up the same cases from runs on different machines")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run folders or run-ids under reports/")
    compare.set_defaults(handler=_compare)

    gate = commands.add_parser("gate", parents=[runs],
                               help="fail (exit 1) when the candidate is slower than the baseline",
                               description="Exit 0: no regression; 1: a case slower or broken (or, with --strict, "
                                           "vanished); 2: unusable input.")
    gate.add_argument("baseline", help="run folder, run-id, or pytest-benchmark JSON saved with raw data")
    gate.add_argument("candidate", help="the same, for the run under test")
    gate.add_argument("--threshold", type=float, default=None, metavar="PCT",
                      help="smallest slowdown in percent that fails (default: 5 on GPU device time, 25 on GPU host "
                           "time, 50 on CPU runs)")
    gate.add_argument("--metric", choices=("device", "host"), default="device",
                      help="device: the GPU's own time where both runs measured it, else host time (default); "
                           "host: end-to-end host time")
    gate.add_argument("--allow-different-env", action="store_true",
                      help="compare runs whose device, torch version or size differ (refused otherwise)")
    gate.add_argument("--strict", action="store_true", help="fail when a baseline case is missing from the candidate")
    gate.set_defaults(handler=_gate)

    from bench.verdicts import ab

    paired = commands.add_parser("ab", parents=[runs], help="paired A/B: two revisions (or interpreters) run "
                                 "alternately in fresh processes; fail (exit 1) on a confirmed slowdown",
                                 usage="python -m bench ab [options] BASELINE CANDIDATE [-- SWEEP ARGUMENTS]",
                                 description="Exit 0: no confirmed regression; 1: a case slower twice over, or "
                                             "broken; 2: unusable input. The sweep's pytest arguments go after -- "
                                             "(default: bench, the quick sweep).")
    paired.add_argument("baseline", help="git revision of this checkout for side A (e.g. main)")
    paired.add_argument("candidate", help="git revision for side B (e.g. HEAD; the same as A with --python-b)")
    paired.add_argument("--pairs", type=int, default=None,
                        help=f"A/B pairs of processes, run A B B A ... (default {ab.DEFAULT_PAIRS['cuda']} on a GPU, "
                             f"{ab.DEFAULT_PAIRS['cpu']} on a CPU; {ab.INSTRUCTION_PAIRS} with --instructions)")
    paired.add_argument("--threshold", type=float, default=None, metavar="PCT",
                        help=f"the slowdown in percent worth catching; a case is slower from half of it when "
                             f"significant (default {ab.DEFAULT_THRESHOLD * 100:.0f}; "
                             f"{ab.INSTRUCTION_THRESHOLD * 100:.0f} with --instructions)")
    paired.add_argument("--metric", choices=ab.METRICS, default="device",
                        help="device: the GPU's own time where every process measured it, else host time "
                             "(default); host: end-to-end host time; instructions: as --instructions")
    paired.add_argument("--instructions", dest="metric", action="store_const", const="instructions",
                        help="gate on instruction counts under valgrind's callgrind (CPU, single-threaded) instead "
                             "of time: deterministic, so a 1%% change shows; minutes a process")
    paired.add_argument("--alpha", type=float, default=ab.DEFAULT_ALPHA,
                        help=f"chance of any false alarm over the cases (default {ab.DEFAULT_ALPHA}; Holm)")
    paired.add_argument("--cpus", default=None, metavar="LIST",
                        help="pin both sides' processes to these CPUs, e.g. 0-7 (taskset's form; default: not pinned, "
                             "both free to use every CPU this process may)")
    paired.add_argument("--python-a", default=sys.executable, help="interpreter for side A (default: this one)")
    paired.add_argument("--python-b", default=sys.executable, help="interpreter for side B (default: this one)")
    paired.add_argument("--out", type=Path, default=None, help="folder for the runs (default: reports/ab-<time>)")
    paired.set_defaults(handler=_ab)

    scaling = commands.add_parser(
        "scale", help="data-parallel scaling: the training step under torchrun at each world size",
        description="Runs `torchrun --nproc-per-node N` (standalone, or the rendezvous given) for each N, DDP "
                    "(or FSDP2) over NCCL on GPUs or gloo on CPUs; rows with global samples/s and scaling "
                    "efficiency go to a run folder. Exit 0: every case ran; 1: a world size failed (its rows say "
                    "which rank and why); 2: unusable input.")
    scaling.add_argument("--nproc", default="1,2", help="world sizes (processes per node), comma-separated "
                                                        "(default 1,2)")
    scaling.add_argument("--models", default="cnn,encoder", help="models (default cnn,encoder)")
    scaling.add_argument("--precisions", default="fp32", help="precisions (default fp32)")
    scaling.add_argument("--batch-sizes", default=None, help="per-rank batch sizes (default: each model's smaller)")
    scaling.add_argument("--attn", default="sdpa", help="attention implementation (default sdpa)")
    scaling.add_argument("--size", default="quick", help="quick (default) or full")
    scaling.add_argument("--strategies", default="ddp", help="ddp and/or fsdp (FSDP2's fully_shard); default ddp")
    scaling.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    scaling.add_argument("--max-time", type=float, default=MAX_TIME_S,
                         help=f"seconds of timed rounds per case (default {MAX_TIME_S:g})")
    scaling.add_argument("--min-rounds", type=int, default=MIN_ROUNDS,
                         help=f"at least this many rounds (default {MIN_ROUNDS})")
    scaling.add_argument("--timeout", type=float, default=1800.0,
                         help="seconds one world size may take, all its cases (default 1800)")
    scaling.add_argument("--nnodes", default=None, help="nodes taking part (torchrun's --nnodes; with "
                                                        "--rdzv-endpoint)")
    scaling.add_argument("--rdzv-endpoint", default=None, help="torchrun's rendezvous host:port (c10d)")
    scaling.add_argument("--rdzv-id", default=None, help="torchrun's rendezvous id, the same on every node")
    scaling.add_argument("--profile", action="store_true",
                         help="rank 0 profiles three more steps of each case into traces/<case-id>/; the row "
                              "gets the collectives' share of its self time")
    scaling.add_argument("--run-id", default=None, help="the run folder's name (default: timestamp-host)")
    scaling.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help="where run folders go")
    scaling.set_defaults(handler=_scale)

    validate = commands.add_parser("validate", help="a machine's first run: GPU tests, timers, kernel against "
                                   "SDPA, the GPU preset's sweep, A/A gate, profile; every stage logged into --out")
    validate.add_argument("--out", type=Path, required=True, help="a new or empty folder for the results")
    validate.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    validate.add_argument("--size", default="full", help="full (default: the GPU run) or quick (a CPU rehearsal)")
    validate.add_argument("--stages", default="all",
                          help="comma-separated stages in the order they run, or all (default)")
    validate.set_defaults(handler=_validate)

    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)  # what follows -- is for the sweep (ab)
    args = parser.parse_args(argv[:split])
    args.sweep = argv[split + 1:]
    try:
        return args.handler(args)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
