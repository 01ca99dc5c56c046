"""``advbridge meanfield``: mean-field and linear-response ε and the power-law fits; writes ``OUT/meanfield.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from advbridge.bridge.io import atomic_write_text

from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.cli.common import (MODEL_HELP, common_arguments, estimator_record, mnist_data_arguments,
    run_built_suite, suite_head)
from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.reports.cells import fit_groups
from advbridge.evaluations.suites.load import load_suite

#: ``advbridge meanfield``'s attacks and small-ε grids (those of the ``cubuk_power_law`` suite).
MEANFIELD_ATTACKS = (("L2-FGM", "fgsm", "l2", [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0], ""),
                     ("FGSM", "fgsm", "linf", [0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1], ""),
                     ("PGD", "pgd", "linf", [0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1], ", steps = 40"),
                     ("step-l.l.", "step_ll", "linf", [0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1], ""))


def run(args: argparse.Namespace) -> int:
    attacks = "".join(f"""
[[attacks]]
name = "{name}"
label = "{label}"
norm = "{norm}"
params = {{ eps = {json.dumps(grid)}{extra} }}
""" for label, name, norm, grid, extra in MEANFIELD_ATTACKS)
    text = suite_head("meanfield", args, [args.model], backends=["art"]) + f"""[power_law]
max_eps = {{ linf = {args.max_eps_linf}, l2 = {args.max_eps_l2} }}
[[estimators]]
name = "meanfield"
{attacks}"""
    suite = load_suite("meanfield", text=text)
    code = run_built_suite(suite, args)
    out = Path(args.out)
    record = estimator_record(out, "meanfield", "meanfield")
    with ResultStore(out / "results.db") as store:
        done = [c for c in store.cells(suite="meanfield", status="done") if c["record"].get("kind") != "estimator"]
    fits = fit_groups(done, suite.power_law, suite.seed)
    l2 = record["result"]["l2_fgm"]
    doc = {"model": args.model, "n": record["n"], "gamma_mean_by_rank": l2["gamma_mean_by_rank"],
           "eps_mf_median": l2["eps_mf_median"], "eps_lin_median": l2["eps_lin_median"],
           "directions": record["result"],
           "power_law": {key[1]: (fit.to_dict() if not isinstance(fit, str) else {"error": fit})
                         for key, fit in sorted(fits.items())}}
    atomic_write_text(out / "meanfield.json", json.dumps(doc, indent=2))
    print(f"{args.model}: median ε̂_lin {doc['eps_lin_median']}, median ε̂_MF {doc['eps_mf_median']} (L2-FGM)")
    for label, fit in doc["power_law"].items():
        print(f"  {label:<10} " + (f"B = {fit['B']:.2f} [{fit['B_ci'][0]:.2f}, {fit['B_ci'][1]:.2f}], A = {fit['A']:.3g}"
                                   if "B" in fit else fit["error"]))
    print(f"wrote {out / 'meanfield.json'}")
    return code


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mnist_cnn", help=MODEL_HELP)
    p.add_argument("--n", type=int, default=500, help="test images (default 500)")
    p.add_argument("--max-eps-linf", type=float, default=0.05, help="largest L∞ ε in the power-law fits (0.05)")
    p.add_argument("--max-eps-l2", type=float, default=0.5, help="largest L2 ε in the power-law fits (0.5)")
    mnist_data_arguments(p)
    p.add_argument("--out", required=True, help="output folder: meanfield.json, plots, report.md, a resumable store")
    common_arguments(p)


COMMAND = COMMANDS.add(Command(name="meanfield", run=run, add_arguments=add_arguments,
                               help="mean-field and linear-response ε, and power-law fits; write DIR/meanfield.json"),
                       rank=130)
