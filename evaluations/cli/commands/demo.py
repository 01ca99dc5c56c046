"""``advbridge demo``: the flagship suite."""

from __future__ import annotations

import argparse

from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.cli.common import common_arguments, run_suite_from_args, suite_path
from advbridge.evaluations.suites.load import load_suite


def run(args: argparse.Namespace) -> int:
    args.suite, args.force, args.executor, args.data_root = "flagship", False, "local", None
    args.address, args.max_retries = None, None
    return run_suite_from_args(load_suite(suite_path(args.suite), quick=args.quick), args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the suite's quick size (about 2 minutes on 2 CPU cores)")
    p.add_argument("--out", default="advbridge-demo", help="output folder (default ./advbridge-demo)")
    common_arguments(p)


COMMAND = COMMANDS.add(Command(name="demo", run=run, add_arguments=add_arguments,
                               help="run the flagship suite: mnist_cnn, fgsm/pgd/cw/ead/deepfool on ART and Foolbox"),
                       rank=50)
