"""``advbridge hardness``: the JSMA hardness matrix and adversarial distance; writes ``OUT/hardness.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from advbridge.bridge.io import atomic_write_text

from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.cli.common import (MODEL_HELP, common_arguments, estimator_record, mnist_data_arguments,
    run_built_suite, suite_head)
from advbridge.evaluations.suites.load import load_suite


def run(args: argparse.Namespace) -> int:
    levels = f", levels = {json.dumps([float(v) for v in args.levels.split(',')])}" if args.levels else ""
    text = suite_head("hardness", args, [args.model]) + f"""[[estimators]]
name = "hardness"
params = {{ saliency_on = {json.dumps(args.saliency_on)}{levels} }}
"""
    suite = load_suite("hardness", text=text)
    code = run_built_suite(suite, args)
    record = estimator_record(Path(args.out), "hardness", "hardness")
    doc = {"model": args.model, "n": record["n"], **record["result"]}
    atomic_write_text(Path(args.out) / "hardness.json", json.dumps(doc, indent=2))
    print(f"JSMA on {args.model}: success {100 * doc['success_rate']:.1f}% at Υ = {100 * doc['headline_distortion']:.1f}%, "
          f"distortion {100 * doc['mean_distortion_all']:.2f}% (all) / {100 * doc['mean_distortion_successful']:.2f}% "
          f"(successful); {doc['time_s']:.1f} s; wrote {Path(args.out) / 'hardness.json'}")
    return code


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mnist_cnn", help=MODEL_HELP)
    p.add_argument("--n", type=int, default=100, help="source test images, each toward the 9 other classes")
    p.add_argument("--saliency-on", default="probs", choices=("probs", "logits"))
    p.add_argument("--levels", default=None, help="comma-separated distortion fractions (default: §5.7's 9 levels)")
    mnist_data_arguments(p)
    p.add_argument("--out", required=True, help="output folder: hardness.json, heatmaps, report.md, a resumable store")
    common_arguments(p)


COMMAND = COMMANDS.add(Command(name="hardness", run=run, add_arguments=add_arguments,
                               help="JSMA hardness matrix and adversarial distance; write DIR/hardness.json"),
                       rank=110)
