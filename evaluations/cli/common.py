"""What several ``advbridge`` commands share: ``--param`` parsing, the common arguments, shipped-suite lookup,
running a suite from the command line, and the suite text the commands that build their own suite start from."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from advbridge.bridge import Model

from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.data.datasets import DATASETS
from advbridge.evaluations.execution.executor import EXECUTORS
from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.suites.suite import Suite

#: The shipped suites (``advbridge run NAME``).
SUITES_DIR = Path(__file__).parents[1] / "suites"
#: The help of a ``--model`` argument.
MODEL_HELP = "zoo name or package.module:function returning a Model"

logger = logging.getLogger("advbridge")


# --------------------------------------------------------------------------- --param values
def parse_value(text: str) -> Any:
    """``"3"`` → 3, ``"0.1"`` → 0.1, ``"true"`` → True, anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_params(items: list[str] | None) -> list[dict[str, Any]]:
    """``["eps=0.1,0.2", "steps=10"]`` → the grid ``[{eps: 0.1, steps: 10}, {eps: 0.2, steps: 10}]``."""
    axes: dict[str, list[Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param must look like key=value or key=v1,v2, got {item!r}")
        if key.strip() in axes:
            raise ValueError(f"--param {key.strip()!r} given twice")
        axes[key.strip()] = [parse_value(v) for v in value.split(",")]
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))] or [{}]


def params_toml(items: list[str] | None) -> str:
    """``--param`` values as the body of a TOML inline table (a list where several values are given)."""
    axes: dict[str, list[Any]] = {}
    for point in parse_params(items):
        for key, value in point.items():
            if value is None:
                raise ValueError(f"--param {key}: a value is required, got none")
            axes.setdefault(key, [])
            if value not in axes[key]:
                axes[key].append(value)
    return ", ".join(f"{k} = {json.dumps(v if len(v) > 1 else v[0])}" for k, v in axes.items())


# --------------------------------------------------------------------------- arguments
def common_arguments(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--seed``, ``--batch-size``, ``--threads``, ``--retrain`` and ``-v``: every command that loads
    a model."""
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    p.add_argument("--seed", type=int, default=None, help="seed for every RNG (default: the suite's, else 0)")
    p.add_argument("--batch-size", type=int, default=128, help="inputs per toolkit call (default 128)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: half the cores); model training always runs on one")
    p.add_argument("--retrain", action="store_true",
                   help="ignore the shipped weights and the cache: train every model the run loads (cached locally)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")


def data_arguments(p: argparse.ArgumentParser) -> None:
    """``--dataset`` (any data set), ``--data-root`` and ``--download``."""
    p.add_argument("--dataset", default="mnist5k", choices=DATASETS, help="data set (default: embedded mnist5k)")
    p.add_argument("--data-root", default=None, help="folder with MNIST/CIFAR-10 files for --dataset mnist|cifar10")
    p.add_argument("--download", action="store_true", help="let torchvision download missing files")


def mnist_data_arguments(p: argparse.ArgumentParser) -> None:
    """``--dataset`` (mnist5k or mnist) and ``--data-root``: the commands that build an MNIST suite."""
    p.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "mnist"), help="data set (default mnist5k)")
    p.add_argument("--data-root", default=None, help="folder with MNIST files for --dataset mnist")


def suite_run_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of a command that runs a suite file into a resumable store (``run``, ``audit``)."""
    p.add_argument("--out", required=True, help="output folder; the store is OUT/results.db")
    p.add_argument("--quick", action="store_true", help="the suite's quick size")
    p.add_argument("--force", action="store_true", help="recompute finished cells")
    p.add_argument("--executor", default="local", choices=EXECUTORS,
                   help="local (default) or ray (needs pip install 'advbridge[ray]')")
    p.add_argument("--address", default=None,
                   help="Ray cluster: auto or ray://host:port (default $RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--max-retries", type=int, default=None, help="Ray retries per failed task (default 2)")
    p.add_argument("--data-root", default=None, help="folder with user-supplied data files")
    common_arguments(p)


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (default: half the cores, at least 1) and return it."""
    threads = threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    return threads


# --------------------------------------------------------------------------- inputs
def correctly_classified(model: Model, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` inputs the model gets right (the usual attack set)."""
    keep = (model.predict(x) == y).nonzero().flatten()[:n]
    if len(keep) < n:
        logger.warning("only %d correctly classified inputs available (asked for %d)", len(keep), n)
    return x[keep], y[keep]


# --------------------------------------------------------------------------- suites
def shipped_suites() -> list[str]:
    """The names of the shipped suites, sorted."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def suite_path(name_or_path: str) -> Path:
    """A suite file path, or the name of a shipped suite (``evaluations/suites/NAME.toml``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = SUITES_DIR / f"{name_or_path.removesuffix('.toml')}.toml"
    if shipped.exists():
        return shipped
    raise FileNotFoundError(f"suite {name_or_path!r} not found; shipped suites: {shipped_suites()}")


def run_suite_from_args(suite: Suite, args: argparse.Namespace) -> int:
    """Run ``suite`` into ``args.out`` with the command's ``--seed``, ``--force``, ``--executor`` ... and print its
    summary; the exit code is 1 when a cell failed."""
    if args.seed is not None:
        suite.seed = args.seed
    summary = run_suite(suite, args.out, force=args.force, executor=args.executor, device=args.device,
                        batch_size=args.batch_size, data_root=args.data_root, address=args.address,
                        max_retries=args.max_retries)
    print(f"suite {summary.suite}: {summary.total} cells, {summary.computed} computed, {summary.skipped} already "
          f"done, {summary.failed} failed, {summary.wall_time_s:.1f} s")
    for message in summary.not_run:
        print(f"not run: {message}")
    print(f"wrote {Path(args.out) / 'report.md'}, results.json, results.csv, plots/")
    return 1 if summary.failed else 0


def run_built_suite(suite: Suite, args: argparse.Namespace) -> int:
    """`run_suite_from_args` for a command that builds its own suite: the local executor, finished cells kept."""
    args.force, args.executor, args.address, args.max_retries = False, "local", None, None
    return run_suite_from_args(suite, args)


def suite_head(name: str, args: argparse.Namespace, models: list[str], *, description: str = "",
               backends: list[str] | None = None, split: str = "test") -> str:
    """The ``[suite]`` and ``[data]`` tables of a suite a command builds from its ``--seed``, ``--dataset`` and
    ``--n`` (the command appends its own tables)."""
    lines = ["[suite]", f"name = {json.dumps(name)}"]
    lines += [f"description = {json.dumps(description)}"] if description else []
    lines += [f"seed = {0 if args.seed is None else args.seed}", f"models = {json.dumps(models)}"]
    lines += [f"backends = {json.dumps(backends)}"] if backends else []
    lines += ["", "[data]", f"dataset = {json.dumps(args.dataset)}", f"split = {json.dumps(split)}", f"n = {args.n}"]
    return "\n".join(lines) + "\n"


def estimator_record(out: Path, suite_name: str, estimator: str) -> dict[str, Any]:
    """The record of the last finished ``estimator`` cell of suite ``suite_name`` in ``out/results.db``;
    ``RuntimeError`` when none finished."""
    with ResultStore(out / "results.db") as store:
        records = [c["record"] for c in store.cells(suite=suite_name, status="done")
                   if c["record"].get("estimator") == estimator]
    if not records:
        raise RuntimeError(f"the {estimator} estimator did not finish; see {out / 'report.md'}")
    return records[-1]
