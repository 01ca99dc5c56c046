"""``advbridge transfer``: the cross-model transfer matrix of one attack; writes ``OUT/transfer.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from advbridge.bridge.io import atomic_write_text

from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.cli.common import (common_arguments, estimator_record, mnist_data_arguments,
    run_built_suite, suite_head)
from advbridge.evaluations.suites.load import load_suite


def run(args: argparse.Namespace) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sigmas = [float(v) for v in args.noise_sigmas.split(",") if v.strip()] if args.noise_sigmas else []
    norm = f", norm = {json.dumps(args.norm)}" if args.norm else ""
    text = suite_head("transfer", args, models[:1] or [""], split=args.split) + f"""[[estimators]]
name = "transfer"
params = {{ models = {json.dumps(models)}, attack = {json.dumps(args.attack)}{norm}, backend = {json.dumps(args.backend)}, \
noise_sigmas = {json.dumps(sigmas)}, dataset = {json.dumps(args.dataset)}, table1 = {str(not args.no_table1).lower()} }}
"""
    suite = load_suite("transfer", text=text)
    code = run_built_suite(suite, args)
    record = estimator_record(Path(args.out), "transfer", "transfer")
    doc = {"n": record["n"], **record["result"]}
    atomic_write_text(Path(args.out) / "transfer.json", json.dumps(doc, indent=2))
    res = doc["transfer"]
    for i, row in enumerate(res["rows"]):
        cells = ", ".join(f"{col} {'–' if e is None else f'{100 * e:.1f}%'}" for col, e in zip(res["columns"],
                                                                                             res["error"][i]))
        dist = res["distortion"][i]
        print(f"{row}: {cells} (distortion {'–' if dist is None else f'{dist:.3f}'})")
    print(f"wrote {Path(args.out) / 'transfer.json'} and the heatmap in {Path(args.out) / 'plots'}")
    return code


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", required=True, help="comma-separated model names (rows and columns, in this order)")
    p.add_argument("--attack", default="lbfgs", help="any bridge attack (default lbfgs, Szegedy's minimal examples)")
    p.add_argument("--norm", default=None, help="the attack's norm (default: its first)")
    p.add_argument("--backend", default="native", choices=("native", "art", "foolbox"), help="default native")
    p.add_argument("--n", type=int, default=100, help="inputs (default 100)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="inputs' split (default test)")
    p.add_argument("--noise-sigmas", default="0.1,0.3", help="comma-separated Gaussian-noise control rows ('' for none)")
    p.add_argument("--no-table1", action="store_true", help="skip each model's train/test error (Szegedy Table 1)")
    mnist_data_arguments(p)
    p.add_argument("--out", required=True, help="output folder: transfer.json, heatmap, report.md, a resumable store")
    common_arguments(p)


COMMAND = COMMANDS.add(Command(name="transfer", run=run, add_arguments=add_arguments,
                               help="cross-model transfer matrix of one attack; write DIR/transfer.json"), rank=120)
