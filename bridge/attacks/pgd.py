"""PGD: projected gradient descent with an optional uniform random start (Madry et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from art.attacks.evasion import ProjectedGradientDescent
import foolbox as fb

from .base import ATTACKS, AttackDef, BuildContext, KnownCause, art_norm, require_positive


FOOLBOX_PGD: dict[str, Callable[..., Any]] = {"linf": fb.attacks.LinfPGD, "l2": fb.attacks.L2PGD,
                                              "l1": fb.attacks.L1PGD}


def _derive(norm: str, p: dict) -> None:
    require_positive("pgd", p, "eps", "steps")
    if p["step_size"] is None:
        p["step_size"] = 2.5 * p["eps"] / p["steps"]
    require_positive("pgd", p, "step_size")


def _art(ctx: BuildContext):
    p = ctx.params
    return ProjectedGradientDescent(ctx.model.art(), norm=art_norm(ctx.norm), eps=p["eps"], eps_step=p["step_size"],
                                    max_iter=p["steps"], targeted=ctx.targeted,
                                    num_random_init=int(p["random_start"]), batch_size=ctx.batch_size,
                                    verbose=False)


def _foolbox(ctx: BuildContext):
    p = ctx.params
    return FOOLBOX_PGD[ctx.norm](abs_stepsize=p["step_size"], steps=p["steps"], random_start=p["random_start"]), p["eps"]


def _foolbox_defaults(norm: str, p: Mapping[str, Any]) -> dict[str, Any]:
    rel, steps = {"linf": (1 / 30, 40), "l2": (0.025, 50), "l1": (0.025, 50)}[norm]
    return {"steps": steps, "step_size": rel * p["eps"], "random_start": True}


PGD = ATTACKS.add(AttackDef(
    name="pgd",
    summary="Projected gradient descent: `steps` steps of `step_size` (default 2.5·eps/steps) in the eps-ball",
    norms={"linf": ("art", "foolbox"), "l2": ("art", "foolbox"), "l1": ("art", "foolbox")},
    defaults={"steps": 40, "step_size": None, "random_start": False},
    norm_defaults={"linf": {"eps": 0.1}, "l2": {"eps": 1.0}, "l1": {"eps": 10.0}},
    targeted_backends=frozenset({"art", "foolbox"}),
    same_algorithm=True,
    derive=_derive,
    build={"art": _art, "foolbox": _foolbox},
    toolkit_defaults={
        "art": {"eps": 0.3, "step_size": 0.1, "steps": 100, "random_start": False},
        "foolbox": _foolbox_defaults,
    },
    known_causes=(
        KnownCause(frozenset({"outputs_differ"}),
                   "for L2, ART clips to the bounds and then projects onto the ε-ball, Foolbox projects and then "
                   "clips; iterates drift apart by up to ~0.04 (toolkits.md §3)", norms=frozenset({"l2"})),
        KnownCause(frozenset({"outputs_differ", "success_gap", "norm_gap"}),
                   "not the same algorithm in L1: ART's L1 step moves only the one coordinate of largest |gradient| "
                   "by step_size (ProjectedGradientDescent norm=1), Foolbox's L1PGD moves every coordinate along "
                   "gradient/||gradient||_1 (Foolbox's closer match to ART is SparseL1DescentAttack, which moves "
                   "the top-quantile coordinates)", norms=frozenset({"l1"})),
        KnownCause(frozenset({"outputs_differ", "success_gap"}),
                   "random_start=True draws the start from each toolkit's own RNG, so outputs differ by design"),
    ),
), rank=30)
