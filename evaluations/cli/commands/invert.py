"""``advbridge invert``: an attack on an Invert-and-Classify defended model; writes ``OUT/invert.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from advbridge.bridge import ATTACKS
from advbridge.bridge.io import atomic_write_text

from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.cli.common import (MODEL_HELP, common_arguments, mnist_data_arguments, params_toml,
    run_built_suite, suite_head)
from advbridge.evaluations.suites.load import load_suite


def invert_suite_text(args: argparse.Namespace) -> str:
    """The suite ``advbridge invert`` runs: Invert-and-Classify (and, with ``--enhanced``, its enhanced variant)."""
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


def run(args: argparse.Namespace) -> int:
    suite = load_suite("invert", text=invert_suite_text(args))
    code = run_built_suite(suite, args)
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mnist_cnn", help=MODEL_HELP)
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
    mnist_data_arguments(p)
    p.add_argument("--out", required=True, help="output folder: invert.json, report.md and a resumable store")
    common_arguments(p)


COMMAND = COMMANDS.add(Command(name="invert", run=run, add_arguments=add_arguments,
                               help="attack an Invert-and-Classify defended model; write DIR/invert.json"), rank=90)
