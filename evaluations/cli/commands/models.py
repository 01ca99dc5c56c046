"""``advbridge models``: every model a suite can name, and whether its weights are shipped."""

from __future__ import annotations

import argparse
import json
from typing import Any

from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.core.cache import WEIGHTS_DIR, cache_root, is_shipped, shipped_manifest
from advbridge.evaluations.zoo.resolve import model_checkpoints, model_names


def model_status(name: str, dataset: str = "mnist5k", seed: int = 0) -> str:
    """``shipped`` (every checkpoint the model reads is in the package) or ``trained locally`` (on first use, then
    cached)."""
    return "shipped" if is_shipped(model_checkpoints(name, dataset, seed)) else "trained locally"


def json_models(manifest: dict[str, Any]) -> list[list[str]]:
    """The checkpoint lists of the shipped models (``weights.json``'s ``models``)."""
    path = WEIGHTS_DIR / "weights.json"
    if not manifest or not path.exists():
        return []
    return [entry["checkpoints"] for entry in json.loads(path.read_text()).get("models", {}).values()]


def run(args: argparse.Namespace) -> int:
    rows = [("model", "kind", "weights (mnist5k, seed 0)", "description")]
    for name, kind, description in model_names():
        rows.append((name, kind, model_status(name), description))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
    manifest = shipped_manifest()
    used = {c for entry in json_models(manifest) for c in entry}
    parts = sorted(rel for rel in manifest if rel not in used)
    if parts:
        print("\nshipped defense parts (autoencoders I, II, D<k>; the suites' generators and retrained classifiers):")
        for rel in parts:
            print(f"  {rel}")
    print("\nshipped: weights in the package (verified by sha256); other data sets, seeds or --retrain train locally, "
          "on one torch thread, and cache under " + str(cache_root()))
    return 0


COMMAND = COMMANDS.add(Command(name="models", run=run,
                               help="list every model a suite can name, and whether its weights are shipped"),
                       rank=20)
