"""archbench's command line: python -m bench COMMAND ... (each command's options: python -m bench COMMAND --help).
Each command is a module of bench/commands/ that owns its options and its run."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("report", "tensorboard", "calibrate", "compare", "gate", "ab", "bisect", "history", "scale", "validate")


def main(argv: list[str] | None = None) -> int:
    from bench.errors import OptionError
    from bench.results.rundir import RunError

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"bench.commands.{name}").add(commands)
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)  # what follows -- is for the sweep (ab)
    args = parser.parse_args(argv[:split])
    args.sweep = argv[split + 1:]
    try:
        return args.handler(args)
    except (RunError, OptionError) as err:  # bad input: one line, exit 2
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
