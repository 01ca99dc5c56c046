"""The ``advbridge`` command line: the parser, built from the command registry
(`advbridge.evaluations.cli.command.COMMANDS`, one command per module of `advbridge.evaluations.cli.commands`),
and `main`, the console script."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from advbridge.evaluations.cli.command import COMMANDS
from advbridge.evaluations.cli.common import set_threads
from advbridge.evaluations.core.cache import WeightsError, set_retrain

#: ``advbridge --help``'s description.
DESCRIPTION = "The ``advbridge`` command line: list attacks and models, cross-validate an attack, run the demo."

logger = logging.getLogger("advbridge")


def build_parser() -> argparse.ArgumentParser:
    """The ``advbridge`` parser: one subcommand per registered `Command`, in their rank order."""
    parser = argparse.ArgumentParser(prog="advbridge", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``advbridge ARGV`` and return its exit code (2 on a usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if hasattr(args, "threads"):
        print(f"torch threads: {set_threads(args.threads)}")
    set_retrain(getattr(args, "retrain", False))
    if getattr(args, "n", 1) is not None and getattr(args, "n", 1) < 1:
        parser.error("--n must be a positive integer")
    start = time.perf_counter()
    try:
        code = args.func(args)
    except (ValueError, TypeError, FileNotFoundError, WeightsError) as err:
        if getattr(args, "verbose", False):
            raise
        print(f"advbridge: error: {err}", file=sys.stderr)
        return 2
    logger.info("done in %.1fs", time.perf_counter() - start)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
