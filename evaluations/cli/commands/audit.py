"""``advbridge audit``: the toolkit_audit suite on the user's model."""

from __future__ import annotations

import argparse
import json
import re

from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.cli.common import MODEL_HELP, run_suite_from_args, suite_path, suite_run_arguments
from advbridge.evaluations.suites.load import load_suite


def with_models(text: str, models: list[str]) -> str:
    """Suite TOML ``text`` with its ``[suite]`` ``models = [...]`` line replaced by ``models`` (TOML strings)."""
    head, sep, rest = text.partition("[suite]")
    pattern = re.compile(r"^models\s*=\s*\[[^\]]*\]", re.M)
    body = re.split(r"^\[", rest, maxsplit=1, flags=re.M)[0]
    if not sep or not pattern.search(body):
        raise ValueError("the suite text has no [suite] models = [...] line to replace")
    line = "models = [" + ", ".join(json.dumps(m) for m in models) + "]"
    return head + sep + pattern.sub(lambda _: line, rest, count=1)


def run(args: argparse.Namespace) -> int:
    # The suite is rebuilt from text naming the user's model, so the model is validated like any suite's and the
    # stored suite text is the one that runs.
    path = suite_path("toolkit_audit")
    suite = load_suite(path, quick=args.quick, text=with_models(path.read_text(), [args.model]))
    return run_suite_from_args(suite, args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    suite_run_arguments(p)


COMMAND = COMMANDS.add(Command(name="audit", run=run, add_arguments=add_arguments,
                               help="run the toolkit_audit suite on your model (--model package.module:function)"),
                       rank=70)
