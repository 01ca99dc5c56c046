"""FMN: fast minimum-norm attacks in L0, L1, L2 and L∞ (Pintor et al. 2021).

Foolbox only (``L0/L1/L2/LInfFMNAttack``). Each step descends the logit margin and shrinks (adversarial) or grows
(not yet adversarial) the radius of the projection by ``gamma``, the step decaying from ``max_stepsize``;
deterministic from the clean input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import foolbox as fb

from .base import ATTACKS, AttackDef, BuildContext, require_positive

CLASSES: dict[str, Callable[..., Any]] = {"l0": fb.attacks.L0FMNAttack, "l1": fb.attacks.L1FMNAttack,
                                          "l2": fb.attacks.L2FMNAttack, "linf": fb.attacks.LInfFMNAttack}


def _derive(norm: str, p: dict) -> None:
    require_positive("fmn", p, "steps", "max_stepsize", "gamma", "binary_search_steps")
    if not p["gamma"] < 1:
        raise ValueError(f"parameter 'gamma' of attack 'fmn' must be in (0, 1), got {p['gamma']}")


def _foolbox(ctx: BuildContext):
    p = ctx.params
    return CLASSES[ctx.norm](steps=p["steps"], max_stepsize=p["max_stepsize"], gamma=p["gamma"],
                             binary_search_steps=p["binary_search_steps"]), None


FMN = ATTACKS.add(AttackDef(
    name="fmn",
    summary="Fast minimum-norm attack (Foolbox): margin descent with an adaptive projection radius, any Lp",
    norms={"l0": ("foolbox",), "l1": ("foolbox",), "l2": ("foolbox",), "linf": ("foolbox",)},
    defaults={"steps": 100, "max_stepsize": 1.0, "gamma": 0.05, "binary_search_steps": 10},
    targeted_backends=frozenset({"foolbox"}),
    minimization=True,
    derive=_derive,
    build={"foolbox": _foolbox},
    toolkit_defaults={"foolbox": {"steps": 100, "max_stepsize": 1.0, "gamma": 0.05, "binary_search_steps": 10}},
), rank=180)
