"""``advbridge attacks``: the attack registry as a table."""

from __future__ import annotations

import argparse

from advbridge.bridge import ATTACKS, BACKENDS, backend_unavailable

from advbridge.evaluations.cli.command import COMMANDS, Command


def run(args: argparse.Namespace) -> int:
    rows = [("attack", "norms", "backends", "targeted", "summary")]
    for a in ATTACKS.values():
        targeted = ("always" if a.requires_target else
                    a.fixed_target if a.fixed_target else ",".join(sorted(a.targeted_backends)) or "no")
        norms = " ".join(f"{n}:{'/'.join(b)}" for n, b in a.norms.items())
        rows.append((a.name, ",".join(a.norms), norms, targeted, a.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    for backend in BACKENDS:
        why = backend_unavailable(backend)
        if why is not None:
            print(f"\nnot installed here: {why}")
    return 0


COMMAND = COMMANDS.add(Command(name="attacks", help="list the attack registry: norms, backends, targeted support",
                               run=run), rank=10)
