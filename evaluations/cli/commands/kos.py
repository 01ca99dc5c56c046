"""``advbridge kos``: a Kos et al. attack on the VAE; writes the 10x10 success matrices to ``OUT/kos.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from advbridge.bridge.io import atomic_write_text

from advbridge.evaluations.analysis.kos import overall_mean, per_source_means
from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.cli.common import common_arguments, mnist_data_arguments, run_built_suite, suite_head
from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.papers.kos import PAPER_CELLS, PAPER_MEAN, PAPER_PER_SOURCE
from advbridge.evaluations.reports.cells import cell_matrices
from advbridge.evaluations.suites.load import load_suite


def kos_suite_text(args: argparse.Namespace) -> str:
    """The suite ``advbridge kos`` runs: one Kos attack on the VAE toward random targets."""
    head = suite_head("kos", args, [args.model], backends=["native"],
                      description=f"advbridge kos: the Kos et al. {args.attack} attack on {args.model}, random targets.")
    return head + f"""
[[attacks]]
name = "kos_{args.attack}"
norm = "l2"
targeted = "random"
params = {{ lam = {args.lam}, steps = {args.steps} }}
"""


def listed(matrix: Any) -> list[list[float | None]]:
    """A matrix as JSON lists, NaN as ``None``."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]


def run(args: argparse.Namespace) -> int:
    suite = load_suite("kos", text=kos_suite_text(args))
    code = run_built_suite(suite, args)
    out = Path(args.out)
    with ResultStore(out / "results.db") as store:
        cells = [c for c in store.cells(suite="kos", status="done") if c["record"]["attack"] == f"kos_{args.attack}"]
    if not cells:
        raise RuntimeError(f"the kos_{args.attack} cell did not finish; see {out / 'report.md'}")
    cell = max(cells, key=lambda c: c["record"]["n"])
    m = cell_matrices(cell)
    pngs = sorted(str(p) for p in (out / "plots").glob(f"kos_*_kos_{args.attack}_*.png"))
    doc = {"attack": f"kos_{args.attack}", "model": args.model, "n": cell["record"]["n"],
           "params": cell["record"]["params"], "evaluation": "reconstruction feedback (Kos et al. §4.3)",
           "as_ignore_target": listed(m["as_ignore_target"]), "as_target": listed(m["as_target"]),
           "counts": m["counts"].astype(int).tolist(),
           "mean_as_ignore_target": overall_mean(m["as_ignore_target"]), "mean_as_target": overall_mean(m["as_target"]),
           "per_source_as_ignore_target": listed([per_source_means(m["as_ignore_target"])])[0],
           "per_source_as_target": listed([per_source_means(m["as_target"])])[0],
           "paper_classifier_attack": {"mean_as_ignore_target": PAPER_MEAN[0] / 100, "mean_as_target": PAPER_MEAN[1] / 100,
                                       "per_source": {str(k): [a / 100, b / 100] for k, (a, b) in PAPER_PER_SOURCE.items()},
                                       "cells": {f"{s}->{t}": [a / 100, b / 100] for (s, t), (a, b) in PAPER_CELLS.items()}},
           "plots": pngs}
    atomic_write_text(out / "kos.json", json.dumps(doc, indent=2))
    print(f"kos_{args.attack}: mean AS_ignore-target {100 * doc['mean_as_ignore_target']:.1f}% "
          f"(paper {PAPER_MEAN[0]:.1f}%), AS_target {100 * doc['mean_as_target']:.1f}% (paper {PAPER_MEAN[1]:.1f}%)")
    print(f"wrote {out / 'kos.json'} and {len(pngs)} heatmaps")
    return code


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attack", required=True, choices=("latent", "classifier", "vae"))
    p.add_argument("--model", default="mnist_vae", help="generative classifier model (default mnist_vae)")
    p.add_argument("--n", type=int, default=500, help="test inputs, each toward a random target (default 500)")
    p.add_argument("--lam", type=float, default=0.1, help="weight of the L2 distance penalty (default 0.1)")
    p.add_argument("--steps", type=int, default=500, help="Adam steps (default 500)")
    mnist_data_arguments(p)
    p.add_argument("--out", required=True, help="output folder: kos.json, heatmaps, report.md and a resumable store")
    common_arguments(p)


COMMAND = COMMANDS.add(Command(name="kos", run=run, add_arguments=add_arguments,
                               help="a Kos et al. attack on the VAE: the 10x10 success matrices as JSON and PNG"),
                       rank=100)
