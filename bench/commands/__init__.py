"""The command line's verbs, a module each (as asv's commands are): `add` puts the verb's parser under
`python -m bench`, with `run` as its handler, which carries it out. Modules import only what their options
need; a verb loads the rest when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.results.rundir import REPORTS_DIR


def reports_dir_option(parser: argparse.ArgumentParser) -> None:
    """--reports-dir, for every verb that reads or writes run folders."""
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR,
                        help=f"where run-ids are looked up (default: {REPORTS_DIR}/ in the working directory)")


def device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
