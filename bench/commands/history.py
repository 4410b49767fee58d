"""python -m bench history add|show|page|accept: runs kept across commits, each case's trend, its steps."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from bench.commands import reports_dir_option
from bench.history.store import DEFAULT_STORE

METRIC_DEFAULTS = "host 5, device 5, instructions 1"


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("history", help="keep runs across commits; show each case's steps, draw its trend",
                                 description="A history of runs in first-parent order, a folder of JSON per "
                                             "machine (see docs/history.md).")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    adding = actions.add_parser("add", help="add run folders, run-ids or pytest-benchmark JSON files",
                                description="Adding a run that is there already changes nothing.")
    adding.add_argument("runs", nargs="+", metavar="RUN")
    adding.add_argument("--machine", default=None,
                        help="the machine's name in the history (default: from the device's name and the threads "
                             "torch used, e.g. nvidia-h200-16t; never the host name)")
    adding.add_argument("--branch", default=None, help="the branch the runs belong to (default: pytest-benchmark's "
                                                       "commit_info, else the checked-out branch)")
    adding.add_argument("--allow-dirty", action="store_true",
                        help="add runs made with uncommitted changes (refused otherwise: they measured no commit)")
    reports_dir_option(adding)
    adding.set_defaults(handler=run_add)
    for name, helped in (("show", "the steps as Markdown; exit 1 on an open regression"),
                         ("page", "one offline HTML page: open regressions, then a trend per series")):
        action = actions.add_parser(name, help=helped, description="Exit 0: no open regression and no case "
                                    "failing; 1: one or more; 2: unusable input." if name == "show" else None)
        action.add_argument("--case", default=None, metavar="RE", help="only the cases matching this pattern")
        action.add_argument("--since", default=None, metavar="REV",
                            help="only steps at or after this commit (a hash in the history or a git revision)")
        action.add_argument("--branch", default=None,
                            help="only runs of this branch (needed when the history holds several)")
        action.add_argument("--threshold", type=float, default=None, metavar="PCT",
                            help=f"the smallest step that counts, in percent (default by metric: {METRIC_DEFAULTS})")
        action.add_argument("--case-threshold", action="append", default=[], metavar="RE=PCT",
                            help="a threshold for the cases matching RE (first match wins; repeatable)")
        if name == "page":
            action.add_argument("--out", type=Path, required=True, help="folder for index.html and history.md")
        action.set_defaults(handler=run_show if name == "show" else run_page)
    accepting = actions.add_parser("accept", help="mark a step as meant: it no longer counts as open")
    accepting.add_argument("series", help="as show prints it: machine/size/case/metric")
    accepting.add_argument("commit", help="the step's commit (a prefix of its hash)")
    accepting.add_argument("--note", default="", help="why the step was meant")
    accepting.set_defaults(handler=run_accept)
    for action in actions.choices.values():
        action.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"the history (default: {DEFAULT_STORE})")
        if action is not accepting:  # accept reads the store alone
            action.add_argument("--repo", type=Path, default=Path("."),
                                help="the git repository the commits belong to (default: the working directory)")


def run_add(args: argparse.Namespace) -> int:
    from bench.history.record import make_record
    from bench.history.store import Store

    store = Store(args.store)
    for run in args.runs:
        record = make_record(run, args.repo, args.machine, args.branch, args.allow_dirty, args.reports_dir)
        added = store.add(record)
        where = store.run_file(record)
        print(f"{run}: {'added as' if added else 'already in the history, unchanged:'} {where} "
              f"(commit {record['commit'][:10]}, {len(record['cases'])} cases)")
    return 0


def _history(args: argparse.Namespace):
    """The store's trends and failing cases under the filters and thresholds asked, and the first-parent
    order of --since."""
    from bench.history import git
    from bench.history.store import Store
    from bench.history.trend import DEFAULT_THRESHOLDS, Thresholds, failing, select, trends
    from bench.results.rundir import RunError

    store = Store(args.store)
    points = store.points()
    if points.empty:
        raise RunError(f"{args.store}: holds no runs (python -m bench history add RUN adds them)")
    metric = dict(DEFAULT_THRESHOLDS) if args.threshold is None else dict.fromkeys(DEFAULT_THRESHOLDS,
                                                                                    args.threshold / 100)
    try:
        re.compile(args.case or "")
    except re.error as err:
        raise RunError(f"--case {args.case}: not a regular expression ({err})") from None
    thresholds = Thresholds(metric, tuple(_case_threshold(text) for text in args.case_threshold))
    since = None
    if args.since:
        known = points.loc[points["commit"].str.startswith(args.since), "order"].unique()
        since = int(known[0]) if len(known) == 1 else git.commit(args.repo, args.since).order
    selected = select(points, args.case, args.branch)
    if selected.empty:
        asked = " ".join(f"--{key} {value}" for key, value in (("case", args.case), ("branch", args.branch)) if value)
        raise RunError(f"{args.store}: no runs match {asked}")
    return trends(selected, thresholds, store.accepted()), failing(selected, since), since


def _case_threshold(text: str) -> tuple[str, float]:
    """--case-threshold RE=PCT as (RE, threshold)."""
    from bench.results.rundir import RunError

    pattern, _, value = text.rpartition("=")  # no '=': an empty pattern, refused
    try:
        if pattern and re.compile(pattern):
            return pattern, float(value) / 100
    except (re.error, ValueError):
        pass
    raise RunError(f"--case-threshold {text}: expected RE=PCT, e.g. 'resnet50=8'")


def run_show(args: argparse.Namespace) -> int:
    from bench.history.trend import markdown, open_regressions
    from bench.verdicts.gate import write_step_summary

    found, failures, since = _history(args)
    text = markdown(found, failures, since)
    print(text)
    write_step_summary(text)
    return 1 if open_regressions(found, since) or failures else 0


def run_page(args: argparse.Namespace) -> int:
    from bench.history.trend import markdown
    from bench.results.rundir import atomic_write
    from bench.views.historypage import write_history_page

    found, failures, since = _history(args)
    atomic_write(args.out / "history.md", markdown(found, failures, since))
    print(f"wrote {write_history_page(found, failures, args.out, since)} and {args.out / 'history.md'}",
          file=sys.stderr)
    return 0


def run_accept(args: argparse.Namespace) -> int:
    from bench.history.store import Store
    from bench.results.rundir import RunError

    store = Store(args.store)
    points = store.points()
    commits = points.loc[points["series"] == args.series, "commit"]
    if commits.empty:
        near = sorted(points.loc[points["case"].map(lambda case: case in args.series), "series"].unique())[:5]
        raise RunError(f"{args.series}: no such series in {args.store}"
                       + (f" (series of that case: {', '.join(near)})" if near else ""))
    matching = sorted({c for c in commits if c.startswith(args.commit)})
    if len(matching) != 1:
        raise RunError(f"{args.commit}: {'no commit' if not matching else 'several commits'} of {args.series} "
                       "start so; give more of the hash")
    path = store.accept(args.series, matching[0], args.note)
    print(f"accepted the step of {args.series} at {matching[0][:10]} ({path})")
    return 0
