"""``advbridge weights``: re-train the shipped weights and rewrite their manifest, or ``--check`` them."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.cli.common import SUITES_DIR
from advbridge.evaluations.core.cache import (WEIGHTS_DIR, WeightsError, cache_root, load_shipped,
    refreshing_weights, shipped_manifest, write_weights)
from advbridge.evaluations.data.datasets import load_dataset
from advbridge.evaluations.execution.cells import Resources
from advbridge.evaluations.suites.load import load_suite
from advbridge.evaluations.zoo.resolve import model_checkpoints, model_names, resolve_model

#: Models `make test` and smoke runs use besides the shipped suites' (shipped too).
TEST_MODELS = ("mnist_tiny_cnn", "mnist_vae_tiny")


def train_shipped_set(staged: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Train, afresh and on the CPU, every checkpoint the shipped suites and ``TEST_MODELS`` read (suite models,
    estimator models, defense autoencoders, generators and retrained classifiers), into ``staged``.

    :returns: The checkpoint records (``zoo.refreshing_weights``) and, per model name, its kind, test accuracy and
        checkpoint names.
    """
    models: dict[str, dict[str, Any]] = {}
    kinds = {name: kind for name, kind, _ in model_names()}

    def note(name: str, info: dict[str, Any], dataset: str, seed: int) -> None:
        if name not in models and name in kinds and dataset == "mnist5k" and seed == 0:
            models[name] = {"kind": kinds[name], "test_accuracy": info.get("test_accuracy"),
                            "checkpoints": model_checkpoints(name, dataset, seed)}
            print(f"{name}: test accuracy {info.get('test_accuracy')}", flush=True)

    suites = [load_suite(path) for path in sorted(SUITES_DIR.glob("*.toml"))]  # every suite valid before training
    data = load_dataset("mnist5k")
    with refreshing_weights(staged) as records:
        for suite in suites:
            dataset, seed = suite.data["dataset"], suite.seed
            print(f"suite {suite.name}", flush=True)
            resources = Resources(suite, device="cpu")
            for cell in suite.cells():
                note(cell.model, resources.model_info(cell.model), dataset, seed)
                if cell.threat != "none":
                    resources.systems(cell.model)
                    resources.attack_model(cell.model, cell.threat)
            for estimator_cell in suite.estimator_cells():
                note(estimator_cell.model, resources.model_info(estimator_cell.model), dataset, seed)
                for name in dict(estimator_cell.params).get("models", []):
                    if name not in models:
                        note(name, resolve_model(name, dataset, seed, "cpu", data)[1], dataset, seed)
        for name in TEST_MODELS:
            note(name, resolve_model(name, "mnist5k", 0, "cpu", data)[1], "mnist5k", 0)
    return records, models


def run(args: argparse.Namespace) -> int:
    if args.check:
        manifest = shipped_manifest()
        if not manifest:
            raise WeightsError(f"no shipped weights under {WEIGHTS_DIR}")
        for rel in sorted(manifest):
            load_shipped(rel)  # verifies the sha256
            print(f"ok  {manifest[rel]['sha256']}  {rel}")
        return 0
    target = Path(args.out) if args.out else WEIGHTS_DIR
    staged = cache_root() / "weights-staging"  # kept when interrupted: the next run resumes from it
    if args.restart:
        shutil.rmtree(staged, ignore_errors=True)
    elif staged.exists():
        print(f"resuming: reusing the checkpoints already trained under {staged} (--restart trains all afresh)")
    start = time.perf_counter()
    records, models = train_shipped_set(staged)
    manifest = write_weights(records, staged, target, models)
    shutil.rmtree(staged, ignore_errors=True)
    total = 0
    print(f"\n{'checkpoint':<64} {'sha256':<64} bytes")
    for rel, entry in manifest["checkpoints"].items():
        total += entry["bytes"]
        print(f"{rel:<64} {entry['sha256']} {entry['bytes']}")
    print(f"\n{'model':<32} {'test accuracy':>13}")
    for name, entry in manifest["models"].items():
        acc = entry["test_accuracy"]
        print(f"{name:<32} {'' if acc is None else f'{100 * acc:.2f}%':>13}")
    print(f"\n{len(manifest['checkpoints'])} checkpoints, {total / 2**20:.1f} MiB, trained in "
          f"{time.perf_counter() - start:.0f} s; wrote {target / 'weights.json'}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="folder for the checkpoints and weights.json (default: the package's)")
    p.add_argument("--check", action="store_true", help="only verify the shipped files against their sha256")
    p.add_argument("--restart", action="store_true",
                   help="discard the checkpoints an interrupted run left under $ADVBRIDGE_CACHE/weights-staging")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")


COMMAND = COMMANDS.add(Command(name="weights", run=run, add_arguments=add_arguments,
                               help="re-train the shipped weights (one thread, deterministic); print their hashes "
                                    "and accuracies and rewrite the manifest"), rank=30)
