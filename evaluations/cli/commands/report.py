"""``advbridge report``: re-render a run's reports from its store."""

from __future__ import annotations

import argparse

from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.reports.render import write_reports


def run(args: argparse.Namespace) -> int:
    info = write_reports(args.dir)
    print(f"rendered {info['records']} cells ({info['failed']} failed) and {len(info['plots'])} plots into {args.dir}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a run's output folder")


COMMAND = COMMANDS.add(Command(name="report", run=run, add_arguments=add_arguments,
                               help="re-render report.md, results.json/.csv and plots from DIR/results.db"), rank=140)
