"""Boundary attack: a decision-based random walk along the decision boundary towards the input (Brendel et al.
2018), L2.

ART ``BoundaryAttack`` ↔ Foolbox ``BoundaryAttack``, untargeted (ART's default is *targeted*: the bridge passes
``targeted=False``). Canonical parameters: ``steps`` (ART ``max_iter``), ``spherical_step`` (ART ``delta``),
``source_step`` (ART ``epsilon``) and ``step_adaptation`` in Foolbox's convention (steps are multiplied or divided
by it; ART multiplies by its ``step_adapt`` < 1, so it gets ``1 / step_adaptation``). One step is not one query:
ART tries up to ``num_trial`` × ``sample_size`` = 25 × 20 candidates per step, Foolbox one per step. Random: one
input at a time with a seed of its own, both toolkits from the same start (``bridge.attacks.starts``); crossval compares statistically (``bridge.stats``).
"""

from __future__ import annotations

import foolbox as fb
from art.attacks.evasion import BoundaryAttack

from .starts import ArtFromStarts, FoolboxFromStarts
from .base import ATTACKS, AttackDef, BuildContext, KnownCause, require_positive


def _derive(norm: str, p: dict) -> None:
    require_positive("boundary", p, "steps", "spherical_step", "source_step")
    if not p["step_adaptation"] > 1:
        raise ValueError(f"parameter 'step_adaptation' of attack 'boundary' must be > 1, got {p['step_adaptation']}")


def _art(ctx: BuildContext):
    p = ctx.params
    return ArtFromStarts(ctx.model, BoundaryAttack(ctx.model.art(), batch_size=ctx.batch_size, targeted=False, delta=p["spherical_step"],
                          epsilon=p["source_step"], step_adapt=1.0 / p["step_adaptation"], max_iter=p["steps"],
                          num_trial=25, sample_size=20, init_size=100, verbose=False),
                         "x_adv_init")


def _foolbox(ctx: BuildContext):
    p = ctx.params
    attack = fb.attacks.BoundaryAttack(steps=p["steps"], spherical_step=p["spherical_step"],
                                       source_step=p["source_step"], step_adaptation=p["step_adaptation"])
    return FoolboxFromStarts(ctx.model, attack), None


BOUNDARY = ATTACKS.add(AttackDef(
    name="boundary",
    summary="Boundary attack: decision-based random walk along the boundary towards the input (untargeted)",
    norms={"l2": ("art", "foolbox")},
    defaults={"steps": 200, "spherical_step": 0.01, "source_step": 0.01, "step_adaptation": 1.5},
    minimization=True,
    stochastic=True,
    derive=_derive,
    build={"art": _art, "foolbox": _foolbox},
    toolkit_defaults={"art": {"steps": 5000, "spherical_step": 0.01, "source_step": 0.01, "step_adaptation": 1.5},
                      "foolbox": {"steps": 25000, "spherical_step": 0.01, "source_step": 0.01,
                                  "step_adaptation": 1.5}},
    known_causes=(KnownCause(
        frozenset({"success_gap", "norm_gap"}),
        "unequal queries per step: ART tries up to 25 x 20 candidates per step (num_trial x sample_size) and adapts "
        "both step sizes from the acceptance rates, Foolbox draws one candidate per step and adapts every 10 steps; "
        "at equal `steps` ART spends far more model queries, so it gets closer to the input"),),
), rank=220)
