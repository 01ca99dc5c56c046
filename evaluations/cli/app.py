"""The ``advbridge`` command line: list attacks and models, cross-validate an attack, run the demo."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advbridge.bridge import ATTACKS, AttackSpec, Model, crossval

from advbridge.evaluations.data.datasets import DATASETS, load_dataset
from advbridge.evaluations.reports.render import write_reports
from advbridge.evaluations.execution.runner import EXECUTORS, run_suite
from advbridge.evaluations.suites.suite import load_suite
from advbridge.evaluations.zoo.resolve import model_checkpoints, model_names, resolve_model
from advbridge.evaluations.core.cache import (WEIGHTS_DIR, WeightsError, cache_root, is_shipped, load_shipped,
    refreshing_weights, set_retrain, shipped_manifest, write_weights)

SUITES_DIR = Path(__file__).parents[1] / "suites"

logger = logging.getLogger("advbridge")


# --------------------------------------------------------------------------- helpers
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


def correctly_classified(model: Model, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` inputs the model gets right (the usual attack set)."""
    keep = (model.predict(x) == y).nonzero().flatten()[:n]
    if len(keep) < n:
        logger.warning("only %d correctly classified inputs available (asked for %d)", len(keep), n)
    return x[keep], y[keep]


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (default: half the cores, at least 1) and return it."""
    threads = threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    return threads


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    p.add_argument("--seed", type=int, default=None, help="seed for every RNG (default: the suite's, else 0)")
    p.add_argument("--batch-size", type=int, default=128, help="inputs per toolkit call (default 128)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: half the cores); model training always runs on one")
    p.add_argument("--retrain", action="store_true",
                   help="ignore the shipped weights and the cache: train every model the run loads (cached locally)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist5k", choices=DATASETS, help="data set (default: embedded mnist5k)")
    p.add_argument("--data-root", default=None, help="folder with MNIST/CIFAR-10 files for --dataset mnist|cifar10")
    p.add_argument("--download", action="store_true", help="let torchvision download missing files")


# --------------------------------------------------------------------------- commands
def cmd_attacks(args: argparse.Namespace) -> int:
    rows = [("attack", "norms", "backends", "targeted", "summary")]
    for a in ATTACKS.values():
        targeted = ("always" if a.requires_target else
                    a.fixed_target if a.fixed_target else ",".join(sorted(a.targeted_backends)) or "no")
        norms = " ".join(f"{n}:{'/'.join(b)}" for n, b in a.norms.items())
        rows.append((a.name, ",".join(a.norms), norms, targeted, a.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    return 0


def model_status(name: str, dataset: str = "mnist5k", seed: int = 0) -> str:
    """``shipped`` (every checkpoint the model reads is in the package) or ``trained locally`` (on first use, then
    cached)."""
    return "shipped" if is_shipped(model_checkpoints(name, dataset, seed)) else "trained locally"


def cmd_models(args: argparse.Namespace) -> int:
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


def json_models(manifest: dict[str, Any]) -> list[list[str]]:
    """The checkpoint lists of the shipped models (``weights.json``'s ``models``)."""
    path = WEIGHTS_DIR / "weights.json"
    if not manifest or not path.exists():
        return []
    return [entry["checkpoints"] for entry in json.loads(path.read_text()).get("models", {}).values()]


def cmd_crossval(args: argparse.Namespace) -> int:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    targeted: Any = args.targeted
    grid = parse_params(args.param)
    specs = [AttackSpec(args.attack, args.norm, targeted, params) for params in grid]  # validate before work
    data = load_dataset(args.dataset, root=args.data_root, download=args.download)
    seed = 0 if args.seed is None else args.seed
    model, info = resolve_model(args.model, args.dataset, seed, args.device, data, args.data_root)
    if "test_accuracy" in info:
        print(f"{args.model}: test accuracy {100 * info['test_accuracy']:.2f}%")
    x, y = correctly_classified(model, data.x_test, data.y_test, args.n)
    out = Path(args.out)
    for i, spec in enumerate(specs):
        report = crossval(model, x, y, spec, backends, seed=seed, batch_size=args.batch_size)
        target = out if len(specs) == 1 else out / f"setting-{i:02d}"
        report.save(target)
        print(report.table())
        print(f"wrote {target / 'crossval.json'}")
    return 0


def suite_path(name_or_path: str) -> Path:
    """A suite file path, or the name of a shipped suite (``evaluations/suites/NAME.toml``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = SUITES_DIR / f"{name_or_path.removesuffix('.toml')}.toml"
    if shipped.exists():
        return shipped
    raise FileNotFoundError(f"suite {name_or_path!r} not found; shipped suites: "
                            f"{sorted(p.stem for p in SUITES_DIR.glob('*.toml'))}")


def _run(suite, args: argparse.Namespace) -> int:
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


def cmd_run(args: argparse.Namespace) -> int:
    return _run(load_suite(suite_path(args.suite), quick=args.quick), args)


def with_models(text: str, models: list[str]) -> str:
    """Suite TOML ``text`` with its ``[suite]`` ``models = [...]`` line replaced by ``models`` (TOML strings)."""
    head, sep, rest = text.partition("[suite]")
    pattern = re.compile(r"^models\s*=\s*\[[^\]]*\]", re.M)
    body = re.split(r"^\[", rest, maxsplit=1, flags=re.M)[0]
    if not sep or not pattern.search(body):
        raise ValueError("the suite text has no [suite] models = [...] line to replace")
    line = "models = [" + ", ".join(json.dumps(m) for m in models) + "]"
    return head + sep + pattern.sub(lambda _: line, rest, count=1)


def cmd_audit(args: argparse.Namespace) -> int:
    # The suite is rebuilt from text naming the user's model, so the model is validated like any suite's and the
    # stored suite text is the one that runs.
    path = suite_path("toolkit_audit")
    suite = load_suite(path, quick=args.quick, text=with_models(path.read_text(), [args.model]))
    return _run(suite, args)


#: The systems ``advbridge defend --defense`` offers (the shipped suites define more).
DEFEND_SYSTEMS = {
    "magnet": ("MagNet's MNIST configuration: reconstruction detectors I (p=2) and II (p=1), reformer AE-I",
               ['{ kind = "reconstruction", ae = "I", p = 2, drop_rate = 0.001 }',
                '{ kind = "reconstruction", ae = "II", p = 1, drop_rate = 0.001 }']),
    "mid": ("MID added to MagNet: its two reconstruction detectors plus the MI detector (population PMI) on AE-I",
            ['{ kind = "reconstruction", ae = "I", p = 2, drop_rate = 0.001 }',
             '{ kind = "reconstruction", ae = "II", p = 1, drop_rate = 0.001 }',
             '{ kind = "mid", ae = "I", estimator = "population_pmi", temperature = 1.0, drop_rate = 0.001 }']),
}
DEFEND_FIELDS = ("accuracy_no_defense", "accuracy_with_defense", "detection_rate", "false_positive_rate")


def params_toml(items: list[str] | None) -> str:
    """``--param`` values as the body of a TOML inline table (a list where several values are given)."""
    import json

    axes: dict[str, list[Any]] = {}
    for point in parse_params(items):
        for key, value in point.items():
            if value is None:
                raise ValueError(f"--param {key}: a value is required, got none")
            axes.setdefault(key, [])
            if value not in axes[key]:
                axes[key].append(value)
    return ", ".join(f"{k} = {json.dumps(v if len(v) > 1 else v[0])}" for k, v in axes.items())


def suite_head(name: str, args: argparse.Namespace, models: list[str], *, description: str = "",
               backends: list[str] | None = None, split: str = "test") -> str:
    """The ``[suite]`` and ``[data]`` tables of a suite a command builds from its ``--seed``, ``--dataset`` and
    ``--n`` (the command appends its own tables)."""
    import json

    lines = ["[suite]", f"name = {json.dumps(name)}"]
    lines += [f"description = {json.dumps(description)}"] if description else []
    lines += [f"seed = {0 if args.seed is None else args.seed}", f"models = {json.dumps(models)}"]
    lines += [f"backends = {json.dumps(backends)}"] if backends else []
    lines += ["", "[data]", f"dataset = {json.dumps(args.dataset)}", f"split = {json.dumps(split)}", f"n = {args.n}"]
    return "\n".join(lines) + "\n"


def defend_suite_text(args: argparse.Namespace) -> str:
    """The suite ``advbridge defend`` runs, as TOML (stored with the results, so the report re-renders)."""
    import json

    description, detectors = DEFEND_SYSTEMS[args.defense]
    params = params_toml(args.param)
    threats = [t.strip() for t in args.threats.split(",") if t.strip()]
    norm = f'norm = {json.dumps(args.norm)}\n' if args.norm else ""
    head = suite_head(f"defend_{args.defense}", args, [args.model], backends=[args.backend],
                      description=f"advbridge defend: {args.attack} against {args.defense} on {args.model}.")
    return head + f"""correct_only = true

[defense]
threats = {json.dumps(threats)}
reformer = "I"
{f"autoencoder = {{ epochs = {args.autoencoder_epochs} }}" if args.autoencoder_epochs else ""}

[[defenses]]
name = {json.dumps(args.defense)}
description = {json.dumps(description)}
reformer = "I"
detectors = [{", ".join(detectors)}]

[[attacks]]
name = {json.dumps(args.attack)}
{norm}targeted = {json.dumps(args.targeted)}
params = {{ {params} }}
"""


def cmd_defend(args: argparse.Namespace) -> int:
    import json

    from advbridge.bridge.io import atomic_write_text

    text = defend_suite_text(args)
    suite = load_suite(f"defend --defense {args.defense}", text=text)
    args.force, args.executor, args.address, args.max_retries = False, "local", None, None
    code = _run(suite, args)
    records = json.loads((Path(args.out) / "results.json").read_text())
    name = args.defense
    rows = []
    for r in sorted(records, key=lambda r: (r["threat"] != "oblivious", json.dumps(r["setting"], sort_keys=True))):
        m = r["metrics"]
        rows.append({"setting": r["setting"], "threat": r["threat"], "backend": r["backend"], "n": r["n"],
                     "accuracy_no_defense": m["adversarial_accuracy"],
                     "accuracy_with_defense": m[f"accuracy_with_defense[{name}]"],
                     "detection_rate": m[f"detection_rate[{name}]"],
                     "false_positive_rate": m[f"false_positive_rate[{name}]"],
                     "clean_accuracy": m["clean_accuracy"],
                     "clean_accuracy_with_defense": m[f"clean_accuracy_with_defense[{name}]"],
                     "attack_success_rate": m.get("success_rate")})
    doc = {"defense": name, "description": DEFEND_SYSTEMS[name][0], "model": args.model, "attack": args.attack,
           "norm": args.norm, "targeted": args.targeted, "dataset": args.dataset,
           "threats": {"oblivious": "attack computed on the bare classifier",
                       "adaptive": "attack computed white-box through the reformer"},
           "settings": rows}
    atomic_write_text(Path(args.out) / "defend.json", json.dumps(doc, indent=2))
    print(f"{'setting':<28} {'threat':<10} " + " ".join(f"{f:>22}" for f in DEFEND_FIELDS))
    for row in rows:
        setting = ",".join(f"{k}={v}" for k, v in row["setting"].items()) or "defaults"
        print(f"{setting:<28} {row['threat']:<10} " + " ".join(f"{100 * row[f]:>21.1f}%" for f in DEFEND_FIELDS))
    print(f"wrote {Path(args.out) / 'defend.json'}")
    return code


def invert_suite_text(args: argparse.Namespace) -> str:
    """The suite ``advbridge invert`` runs: Invert-and-Classify (and, with ``--enhanced``, its enhanced variant)."""
    import json

    threats = [t.strip() for t in args.threats.split(",") if t.strip()]
    enhanced = """
[[defenses]]
name = "enhanced_inc"
description = "Enhanced Invert-and-Classify: the classifier retrained on G's range (§3.1)"
reformer = "invert"
classifier = "enhanced"
""" if args.enhanced else ""
    norm = f'norm = {json.dumps(args.norm)}\n' if args.norm else ""
    head = suite_head("invert", args, [args.model], backends=[args.backend],
                      description=f"advbridge invert: {args.attack} against Invert-and-Classify on {args.model}.")
    return head + f"""
[defense]
threats = {json.dumps(threats)}
generator = {{ kind = {json.dumps(args.generator)}{f", epochs = {args.generator_epochs}" if args.generator_epochs else ""}{f", latent_dim = {args.latent_dim}" if args.latent_dim else ""} }}
projection = {{ steps = {args.steps}, restarts = {args.restarts} }}

[[defenses]]
name = "inc"
description = "Invert-and-Classify: classify G(z*), z* = argmin ||G(z) - x||^2"
reformer = "invert"
{enhanced}
[[attacks]]
name = {json.dumps(args.attack)}
{norm}params = {{ {params_toml(args.param)} }}
"""


def cmd_invert(args: argparse.Namespace) -> int:
    import json

    from advbridge.bridge.io import atomic_write_text

    suite = load_suite("invert", text=invert_suite_text(args))
    args.force, args.executor, args.address, args.max_retries = False, "local", None, None
    code = _run(suite, args)
    records = json.loads((Path(args.out) / "results.json").read_text())
    systems = ["inc"] + (["enhanced_inc"] if args.enhanced else [])
    rows = []
    for r in sorted(records, key=lambda r: (r["threat"] != "oblivious", json.dumps(r["setting"], sort_keys=True))):
        m = r["metrics"]
        row = {"setting": r["setting"], "threat": r["threat"], "backend": r["backend"], "n": r["n"],
               "accuracy_no_defense": m["adversarial_accuracy"], "clean_accuracy": m["clean_accuracy"],
               "attack_success_rate": m.get("success_rate")}
        for name in systems:
            suffix = "" if name == "inc" else f"[{name}]"
            row[f"accuracy_with_defense{suffix}"] = m[f"accuracy_with_defense[{name}]"]
            row[f"clean_accuracy_with_defense{suffix}"] = m[f"clean_accuracy_with_defense[{name}]"]
        rows.append(row)
    doc = {"defense": "invert_and_classify", "model": args.model, "attack": args.attack, "norm": args.norm,
           "generator": args.generator, "projection": {"steps": args.steps, "restarts": args.restarts},
           "threats": {"oblivious": "attack computed on the bare classifier",
                       "adaptive:inc": "attack computed through the projection with the straight-through (BPDA) "
                                       "gradient"},
           "settings": rows}
    atomic_write_text(Path(args.out) / "invert.json", json.dumps(doc, indent=2))
    print(f"{'setting':<24} {'threat':<22} {'no defense':>11} {'with I&C':>9}")
    for row in rows:
        setting = ",".join(f"{k}={v}" for k, v in row["setting"].items()) or "defaults"
        print(f"{setting:<24} {row['threat']:<22} {100 * row['accuracy_no_defense']:>10.1f}% "
              f"{100 * row['accuracy_with_defense']:>8.1f}%")
    print(f"wrote {Path(args.out) / 'invert.json'}")
    return code


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


def cmd_kos(args: argparse.Namespace) -> int:
    import json

    from advbridge.bridge.io import atomic_write_text

    from advbridge.evaluations.analysis.kos import PAPER_CELLS, PAPER_MEAN, PAPER_PER_SOURCE, overall_mean, per_source_means
    from advbridge.evaluations.reports.kos import cell_matrices
    from advbridge.evaluations.core.store import ResultStore

    suite = load_suite("kos", text=kos_suite_text(args))
    args.force, args.executor, args.address, args.max_retries = False, "local", None, None
    code = _run(suite, args)
    out = Path(args.out)
    with ResultStore(out / "results.db") as store:
        cells = [c for c in store.cells(suite="kos", status="done") if c["record"]["attack"] == f"kos_{args.attack}"]
    if not cells:
        raise RuntimeError(f"the kos_{args.attack} cell did not finish; see {out / 'report.md'}")
    cell = max(cells, key=lambda c: c["record"]["n"])
    m = cell_matrices(cell)

    def listed(matrix):
        return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]
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


def _estimator_record(out: Path, suite_name: str, estimator: str) -> dict[str, Any]:
    from advbridge.evaluations.core.store import ResultStore

    with ResultStore(out / "results.db") as store:
        records = [c["record"] for c in store.cells(suite=suite_name, status="done")
                   if c["record"].get("estimator") == estimator]
    if not records:
        raise RuntimeError(f"the {estimator} estimator did not finish; see {out / 'report.md'}")
    return records[-1]


def cmd_hardness(args: argparse.Namespace) -> int:
    import json

    from advbridge.bridge.io import atomic_write_text

    levels = f", levels = {json.dumps([float(v) for v in args.levels.split(',')])}" if args.levels else ""
    text = suite_head("hardness", args, [args.model]) + f"""[[estimators]]
name = "hardness"
params = {{ saliency_on = {json.dumps(args.saliency_on)}{levels} }}
"""
    suite = load_suite("hardness", text=text)
    args.force, args.executor, args.address, args.max_retries = False, "local", None, None
    code = _run(suite, args)
    record = _estimator_record(Path(args.out), "hardness", "hardness")
    doc = {"model": args.model, "n": record["n"], **record["result"]}
    atomic_write_text(Path(args.out) / "hardness.json", json.dumps(doc, indent=2))
    print(f"JSMA on {args.model}: success {100 * doc['success_rate']:.1f}% at Υ = {100 * doc['headline_distortion']:.1f}%, "
          f"distortion {100 * doc['mean_distortion_all']:.2f}% (all) / {100 * doc['mean_distortion_successful']:.2f}% "
          f"(successful); {doc['time_s']:.1f} s; wrote {Path(args.out) / 'hardness.json'}")
    return code


def cmd_transfer(args: argparse.Namespace) -> int:
    import json

    from advbridge.bridge.io import atomic_write_text

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sigmas = [float(v) for v in args.noise_sigmas.split(",") if v.strip()] if args.noise_sigmas else []
    norm = f", norm = {json.dumps(args.norm)}" if args.norm else ""
    text = suite_head("transfer", args, models[:1] or [""], split=args.split) + f"""[[estimators]]
name = "transfer"
params = {{ models = {json.dumps(models)}, attack = {json.dumps(args.attack)}{norm}, backend = {json.dumps(args.backend)}, \
noise_sigmas = {json.dumps(sigmas)}, dataset = {json.dumps(args.dataset)}, table1 = {str(not args.no_table1).lower()} }}
"""
    suite = load_suite("transfer", text=text)
    args.force, args.executor, args.address, args.max_retries = False, "local", None, None
    code = _run(suite, args)
    record = _estimator_record(Path(args.out), "transfer", "transfer")
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


#: ``advbridge meanfield``'s attacks and small-ε grids (those of the ``cubuk_power_law`` suite).
MEANFIELD_ATTACKS = (("L2-FGM", "fgsm", "l2", [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0], ""),
                     ("FGSM", "fgsm", "linf", [0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1], ""),
                     ("PGD", "pgd", "linf", [0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1], ", steps = 40"),
                     ("step-l.l.", "step_ll", "linf", [0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1], ""))


def cmd_meanfield(args: argparse.Namespace) -> int:
    import json

    from advbridge.bridge.io import atomic_write_text

    from advbridge.evaluations.reports.estimators import fit_groups
    from advbridge.evaluations.core.store import ResultStore

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
    args.force, args.executor, args.address, args.max_retries = False, "local", None, None
    code = _run(suite, args)
    out = Path(args.out)
    record = _estimator_record(out, "meanfield", "meanfield")
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


#: Models `make test` and smoke runs use besides the shipped suites' (shipped too).
TEST_MODELS = ("mnist_tiny_cnn", "mnist_vae_tiny")


def train_shipped_set(staged: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Train, afresh and on the CPU, every checkpoint the shipped suites and ``TEST_MODELS`` read (suite models,
    estimator models, defense autoencoders, generators and retrained classifiers), into ``staged``.

    :returns: The checkpoint records (``zoo.refreshing_weights``) and, per model name, its kind, test accuracy and
        checkpoint names.
    """
    from advbridge.evaluations.execution.runner import Resources

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
            for cell in suite.estimator_cells():
                note(cell.model, resources.model_info(cell.model), dataset, seed)
                for name in dict(cell.params).get("models", []):
                    if name not in models:
                        note(name, resolve_model(name, dataset, seed, "cpu", data)[1], dataset, seed)
        for name in TEST_MODELS:
            note(name, resolve_model(name, "mnist5k", 0, "cpu", data)[1], "mnist5k", 0)
    return records, models


def cmd_weights(args: argparse.Namespace) -> int:
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


def cmd_report(args: argparse.Namespace) -> int:
    info = write_reports(args.dir)
    print(f"rendered {info['records']} cells ({info['failed']} failed) and {len(info['plots'])} plots into {args.dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    args.suite, args.force, args.executor, args.data_root = "flagship", False, "local", None
    args.address, args.max_retries = None, None
    return cmd_run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advbridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("attacks", help="list the attack registry: norms, backends, targeted support")
    p.set_defaults(func=cmd_attacks)
    p = sub.add_parser("models", help="list every model a suite can name, and whether its weights are shipped")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("weights", help="re-train the shipped weights (one thread, deterministic); print their hashes "
                                       "and accuracies and rewrite the manifest")
    p.add_argument("--out", default=None, help="folder for the checkpoints and weights.json (default: the package's)")
    p.add_argument("--check", action="store_true", help="only verify the shipped files against their sha256")
    p.add_argument("--restart", action="store_true",
                   help="discard the checkpoints an interrupted run left under $ADVBRIDGE_CACHE/weights-staging")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("crossval", help="run one attack on several backends and compare them sample by sample")
    p.add_argument("--model", default="mnist_cnn", help="zoo name or package.module:function returning a Model")
    p.add_argument("--attack", required=True, choices=sorted(ATTACKS))
    p.add_argument("--norm", default=None, help="linf, l2, l1 or l0 (default: the attack's first norm)")
    p.add_argument("--targeted", default="none", help="none, least_likely or random")
    p.add_argument("--n", type=int, default=100, help="number of correctly classified test inputs")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="canonical parameter; repeatable; KEY=v1,v2 runs a grid")
    p.add_argument("--backends", default="art,foolbox", help="comma-separated backends (default art,foolbox)")
    p.add_argument("--out", default="advbridge-crossval", help="output folder")
    _data_args(p)
    _common(p)
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("demo", help="run the flagship suite: mnist_cnn, fgsm/pgd/cw/ead/deepfool on ART and Foolbox")
    p.add_argument("--quick", action="store_true", help="the suite's quick size (about 2 minutes on 2 CPU cores)")
    p.add_argument("--out", default="advbridge-demo", help="output folder (default ./advbridge-demo)")
    _common(p)
    p.set_defaults(func=cmd_demo)

    for name, helptext in (("run", "run a suite (a TOML file or a shipped suite name) into a resumable store"),
                           ("audit", "run the toolkit_audit suite on your model (--model package.module:function)")):
        p = sub.add_parser(name, help=helptext)
        if name == "run":
            p.add_argument("suite", help="suite file, or a shipped suite: " +
                           ", ".join(sorted(q.stem for q in SUITES_DIR.glob("*.toml"))))
        else:
            p.add_argument("--model", required=True, help="zoo name or package.module:function returning a Model")
        p.add_argument("--out", required=True, help="output folder; the store is OUT/results.db")
        p.add_argument("--quick", action="store_true", help="the suite's quick size")
        p.add_argument("--force", action="store_true", help="recompute finished cells")
        p.add_argument("--executor", default="local", choices=EXECUTORS,
                       help="local (default) or ray (needs pip install 'advbridge[ray]')")
        p.add_argument("--address", default=None,
                       help="Ray cluster: auto or ray://host:port (default $RAY_ADDRESS, else an embedded local Ray)")
        p.add_argument("--max-retries", type=int, default=None, help="Ray retries per failed task (default 2)")
        p.add_argument("--data-root", default=None, help="folder with user-supplied data files")
        _common(p)
        p.set_defaults(func=cmd_run if name == "run" else cmd_audit)

    p = sub.add_parser("defend", help="attack a MagNet or MID defended model; write DIR/defend.json")
    p.add_argument("--defense", required=True, choices=sorted(DEFEND_SYSTEMS))
    p.add_argument("--model", default="mnist_cnn", help="zoo name or package.module:function returning a Model")
    p.add_argument("--attack", required=True, choices=sorted(ATTACKS))
    p.add_argument("--norm", default=None, help="linf, l2, l1 or l0 (default: the attack's first norm)")
    p.add_argument("--targeted", default="none", help="none, least_likely or random")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="canonical parameter; repeatable; KEY=v1,v2 runs one setting per value")
    p.add_argument("--backend", default="foolbox", help="art or foolbox (default foolbox)")
    p.add_argument("--threats", default="oblivious,adaptive",
                   help="comma-separated: oblivious (attack the bare classifier), adaptive (through the reformer)")
    p.add_argument("--n", type=int, default=100, help="correctly classified test inputs (default 100)")
    p.add_argument("--autoencoder-epochs", type=int, default=None,
                   help="training epochs of the defense autoencoders (default 40; trained once, then cached)")
    p.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "mnist"), help="data set (default mnist5k)")
    p.add_argument("--data-root", default=None, help="folder with MNIST files for --dataset mnist")
    p.add_argument("--out", required=True, help="output folder: defend.json, report.md and a resumable store")
    _common(p)
    p.set_defaults(func=cmd_defend)

    p = sub.add_parser("invert", help="attack an Invert-and-Classify defended model; write DIR/invert.json")
    p.add_argument("--model", default="mnist_cnn", help="zoo name or package.module:function returning a Model")
    p.add_argument("--attack", required=True, choices=sorted(ATTACKS))
    p.add_argument("--norm", default=None, help="linf, l2, l1 or l0 (default: the attack's first norm)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="canonical parameter; repeatable; KEY=v1,v2 runs one setting per value")
    p.add_argument("--backend", default="art", help="art or foolbox (default art)")
    p.add_argument("--threats", default="oblivious",
                   help="comma-separated: oblivious (attack the bare classifier), adaptive:inc (BPDA through the "
                        "projection)")
    p.add_argument("--generator", default="vae", choices=("vae", "wgan_gp", "alpha_gan"),
                   help="generative model whose range the inputs are projected on (default vae; trained once, cached)")
    p.add_argument("--generator-epochs", type=int, default=None,
                   help="training epochs of a vae or alpha_gan generator (default: the recipe's, 30 for the vae)")
    p.add_argument("--latent-dim", type=int, default=None,
                   help="latent size of the generator (default: the recipe's, 32 for the vae, 128 for wgan_gp)")
    p.add_argument("--steps", type=int, default=200, help="projection steps L (default 200)")
    p.add_argument("--restarts", type=int, default=10, help="random restarts R, batched (default 10)")
    p.add_argument("--enhanced", action="store_true", help="also evaluate Enhanced Invert-and-Classify")
    p.add_argument("--n", type=int, default=100, help="test inputs (default 100)")
    p.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "mnist"), help="data set (default mnist5k)")
    p.add_argument("--data-root", default=None, help="folder with MNIST files for --dataset mnist")
    p.add_argument("--out", required=True, help="output folder: invert.json, report.md and a resumable store")
    _common(p)
    p.set_defaults(func=cmd_invert)

    p = sub.add_parser("kos", help="a Kos et al. attack on the VAE: the 10x10 success matrices as JSON and PNG")
    p.add_argument("--attack", required=True, choices=("latent", "classifier", "vae"))
    p.add_argument("--model", default="mnist_vae", help="generative classifier model (default mnist_vae)")
    p.add_argument("--n", type=int, default=500, help="test inputs, each toward a random target (default 500)")
    p.add_argument("--lam", type=float, default=0.1, help="weight of the L2 distance penalty (default 0.1)")
    p.add_argument("--steps", type=int, default=500, help="Adam steps (default 500)")
    p.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "mnist"), help="data set (default mnist5k)")
    p.add_argument("--data-root", default=None, help="folder with MNIST files for --dataset mnist")
    p.add_argument("--out", required=True, help="output folder: kos.json, heatmaps, report.md and a resumable store")
    _common(p)
    p.set_defaults(func=cmd_kos)

    p = sub.add_parser("hardness", help="JSMA hardness matrix and adversarial distance; write DIR/hardness.json")
    p.add_argument("--model", default="mnist_cnn", help="zoo name or package.module:function returning a Model")
    p.add_argument("--n", type=int, default=100, help="source test images, each toward the 9 other classes")
    p.add_argument("--saliency-on", default="probs", choices=("probs", "logits"))
    p.add_argument("--levels", default=None, help="comma-separated distortion fractions (default: §5.7's 9 levels)")
    p.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "mnist"), help="data set (default mnist5k)")
    p.add_argument("--data-root", default=None, help="folder with MNIST files for --dataset mnist")
    p.add_argument("--out", required=True, help="output folder: hardness.json, heatmaps, report.md, a resumable store")
    _common(p)
    p.set_defaults(func=cmd_hardness)

    p = sub.add_parser("transfer", help="cross-model transfer matrix of one attack; write DIR/transfer.json")
    p.add_argument("--models", required=True, help="comma-separated model names (rows and columns, in this order)")
    p.add_argument("--attack", default="lbfgs", help="any bridge attack (default lbfgs, Szegedy's minimal examples)")
    p.add_argument("--norm", default=None, help="the attack's norm (default: its first)")
    p.add_argument("--backend", default="native", choices=("native", "art", "foolbox"), help="default native")
    p.add_argument("--n", type=int, default=100, help="inputs (default 100)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="inputs' split (default test)")
    p.add_argument("--noise-sigmas", default="0.1,0.3", help="comma-separated Gaussian-noise control rows ('' for none)")
    p.add_argument("--no-table1", action="store_true", help="skip each model's train/test error (Szegedy Table 1)")
    p.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "mnist"), help="data set (default mnist5k)")
    p.add_argument("--data-root", default=None, help="folder with MNIST files for --dataset mnist")
    p.add_argument("--out", required=True, help="output folder: transfer.json, heatmap, report.md, a resumable store")
    _common(p)
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("meanfield", help="mean-field and linear-response ε, and power-law fits; write DIR/meanfield.json")
    p.add_argument("--model", default="mnist_cnn", help="zoo name or package.module:function returning a Model")
    p.add_argument("--n", type=int, default=500, help="test images (default 500)")
    p.add_argument("--max-eps-linf", type=float, default=0.05, help="largest L∞ ε in the power-law fits (0.05)")
    p.add_argument("--max-eps-l2", type=float, default=0.5, help="largest L2 ε in the power-law fits (0.5)")
    p.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "mnist"), help="data set (default mnist5k)")
    p.add_argument("--data-root", default=None, help="folder with MNIST files for --dataset mnist")
    p.add_argument("--out", required=True, help="output folder: meanfield.json, plots, report.md, a resumable store")
    _common(p)
    p.set_defaults(func=cmd_meanfield)

    p = sub.add_parser("report", help="re-render report.md, results.json/.csv and plots from DIR/results.db")
    p.add_argument("dir", help="a run's output folder")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if hasattr(args, "threads"):
        print(f"torch threads: {set_threads(args.threads)}")
    set_retrain(getattr(args, "retrain", False))
    if getattr(args, "n", 1) is not None and getattr(args, "n", 1) < 1:
        parser.error("--n must be a positive integer")
    start = time.perf_counter()
    try:
        code = args.func(args)
    except (ValueError, TypeError, FileNotFoundError, WeightsError) as err:
        if getattr(args, "verbose", False):
            raise
        print(f"advbridge: error: {err}", file=sys.stderr)
        return 2
    logger.info("done in %.1fs", time.perf_counter() - start)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
