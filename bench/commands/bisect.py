"""python -m bench bisect GOOD BAD --case ID [-- SWEEP]: the first-parent commit that made a case slower."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from bench.commands import reports_dir_option
from bench.commands.ab import measure_kwargs, measure_options


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bisect", help="name the commit that made a case slower, by ab against GOOD at each step",
        usage="python -m bench bisect [options] GOOD BAD --case ID [-- SWEEP ARGUMENTS]",
        description="First checks with ab that BAD is slower than GOOD on the case (exit 2 if not), then bisects "
                    "the first-parent commits between them. Exit 0: the commit named; 1: skipped commits left a "
                    "range; 2: unusable input or no slowdown to find.")
    parser.add_argument("good", help="a revision where the case was fast")
    parser.add_argument("bad", help="a later revision, on whose first-parent line GOOD is, where it is slower")
    parser.add_argument("--case", required=True, help="the case id, e.g. cnn-fwd-fp32-b32")
    measure_options(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for each probe's ab run (default: reports/bisect-<time>)")
    reports_dir_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bench.history import git
    from bench.history.bisect import ab_probe, decide, search, steps_needed
    from bench.results.rundir import RunError

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # through ab's clean-up
    repo = Path.cwd()
    commits = git.first_parent_between(repo, args.good, args.bad)
    out = args.out or args.reports_dir / time.strftime("bisect-%Y%m%d-%H%M%S")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    probe = ab_probe(args.good, args.case, args.sweep or ["bench"], out, log, **measure_kwargs(args))
    log(f"bisect: {len(commits)} first-parent commits after {args.good}; first, is {args.bad} slower?")
    checks = decide(probe, commits[-1])
    reproduced = checks[-1]
    if reproduced.verdict != "slower":
        raise RunError(f"{args.bad} against {args.good} does not reproduce a slowdown of {args.case}: ab says "
                       f"{reproduced.verdict} (ratio {reproduced.ratio:.3f}); nothing to bisect")
    log(f"bisect: reproduced (ratio {reproduced.ratio:.3f}); at most {steps_needed(len(commits))} more probes")
    found = search(commits, probe)
    probes = [*checks, *found.probes]
    ratios = {p.commit: p for p in probes}
    lines = [f"### archbench bisect: {args.case}, {args.good}..{args.bad}", "",
             "| commit | subject | verdict against GOOD | ratio |", "| --- | --- | --- | ---: |"]
    for p in probes:
        lines.append(f"| {p.commit[:10]} | {git.commit(repo, p.commit).subject[:70]} | {p.verdict} | "
                     f"{p.ratio:.3f} |")
    if found.named:
        culprit = git.commit(repo, found.named)
        lines += ["", f"First slower commit: {culprit.sha[:10]} {culprit.subject} "
                      f"(ratio {ratios[culprit.sha].ratio:.3f} against {args.good})"]
    else:
        left = commits[found.last_good + 1:found.first_bad + 1]
        lines += ["", f"Not narrowed to one commit: the first slower is one of {', '.join(c[:10] for c in left)} "
                      "(the others skipped: broken, or inconclusive twice)"]
    print("\n".join(lines))
    print(f"wrote each probe's ab run under {out}", file=sys.stderr)
    return 0 if found.named else 1
