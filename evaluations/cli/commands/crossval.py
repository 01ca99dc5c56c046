"""``advbridge crossval``: one attack on several backends, compared sample by sample."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from advbridge.bridge import ATTACKS, AttackSpec, crossval

from advbridge.evaluations.cli.command import COMMANDS, Command
from advbridge.evaluations.cli.common import (MODEL_HELP, common_arguments, correctly_classified, data_arguments,
    parse_params)
from advbridge.evaluations.data.datasets import load_dataset
from advbridge.evaluations.zoo.resolve import resolve_model


def run(args: argparse.Namespace) -> int:
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mnist_cnn", help=MODEL_HELP)
    p.add_argument("--attack", required=True, choices=sorted(ATTACKS))
    p.add_argument("--norm", default=None, help="linf, l2, l1 or l0 (default: the attack's first norm)")
    p.add_argument("--targeted", default="none", help="none, least_likely or random")
    p.add_argument("--n", type=int, default=100, help="number of correctly classified test inputs")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="canonical parameter; repeatable; KEY=v1,v2 runs a grid")
    p.add_argument("--backends", default="art,foolbox", help="comma-separated backends (default art,foolbox)")
    p.add_argument("--out", default="advbridge-crossval", help="output folder")
    data_arguments(p)
    common_arguments(p)


COMMAND = COMMANDS.add(Command(name="crossval", run=run, add_arguments=add_arguments,
                               help="run one attack on several backends and compare them sample by sample"), rank=40)
