"""``advbridge run``: a suite (a TOML file or a shipped suite name) into a resumable store."""

from __future__ import annotations

import argparse

from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.cli.common import run_suite_from_args, shipped_suites, suite_path, suite_run_arguments
from advbridge.evaluations.suites.load import load_suite


def run(args: argparse.Namespace) -> int:
    return run_suite_from_args(load_suite(suite_path(args.suite), quick=args.quick), args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite file, or a shipped suite: " + ", ".join(shipped_suites()))
    suite_run_arguments(p)


COMMAND = COMMANDS.add(Command(name="run", run=run, add_arguments=add_arguments,
                               help="run a suite (a TOML file or a shipped suite name) into a resumable store"),
                       rank=60)
