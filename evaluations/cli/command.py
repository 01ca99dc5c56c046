"""The command interface and registry: each ``advbridge`` subcommand is one module of
`advbridge.evaluations.cli.commands` that adds one `Command` to ``COMMANDS``; `advbridge.evaluations.cli.app` builds
the parser from them (in their ``rank`` order, the order ``advbridge --help`` lists them) and never imports a command
module."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from advbridge.bridge.registry import Registry


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """The `Command.add_arguments` of a command that takes none."""


@dataclass(frozen=True)
class Command:
    """One ``advbridge`` subcommand.

    :param name: The subcommand (``advbridge NAME``).
    :param help: Its one-line help in ``advbridge --help``.
    :param run: ``run(args) -> exit code``, given the parsed arguments.
    :param add_arguments: Adds the subcommand's arguments to its parser; default: none.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] = no_arguments


COMMANDS: Registry[Command] = Registry("command", "advbridge.evaluations.cli.commands")
"""Every subcommand, in the order ``advbridge --help`` lists them (their ``rank``)."""
