"""``advbridge defend``: an attack on a MagNet or MID defended model; writes ``OUT/defend.json``."""

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


def defend_suite_text(args: argparse.Namespace) -> str:
    """The suite ``advbridge defend`` runs, as TOML (stored with the results, so the report re-renders)."""
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


def run(args: argparse.Namespace) -> int:
    text = defend_suite_text(args)
    suite = load_suite(f"defend --defense {args.defense}", text=text)
    code = run_built_suite(suite, args)
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--defense", required=True, choices=sorted(DEFEND_SYSTEMS))
    p.add_argument("--model", default="mnist_cnn", help=MODEL_HELP)
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
    mnist_data_arguments(p)
    p.add_argument("--out", required=True, help="output folder: defend.json, report.md and a resumable store")
    common_arguments(p)


COMMAND = COMMANDS.add(Command(name="defend", run=run, add_arguments=add_arguments,
                               help="attack a MagNet or MID defended model; write DIR/defend.json"), rank=80)
