"""DDN: decoupled direction and norm, an L2 minimisation attack (Rony et al. 2019).

Foolbox (``DDNAttack``) and adv-lib (``ddn``, the authors' group's own code, its 256-level output rounding off so
that both run the same algorithm). Each step moves along the normalised gradient and grows or shrinks the ε of its
projection by ``gamma`` depending on whether the point is adversarial; deterministic from the clean input.
"""

from __future__ import annotations

import foolbox as fb

from .advlib import AdvLibAttack
from .base import ATTACKS, AttackDef, BuildContext, require_positive


def _derive(norm: str, p: dict) -> None:
    require_positive("ddn", p, "steps", "init_epsilon", "gamma")
    if not p["gamma"] < 1:
        raise ValueError(f"parameter 'gamma' of attack 'ddn' must be in (0, 1), got {p['gamma']}")


def _foolbox(ctx: BuildContext):
    p = ctx.params
    return fb.attacks.DDNAttack(init_epsilon=p["init_epsilon"], steps=p["steps"], gamma=p["gamma"]), None


def _advlib(ctx: BuildContext):
    p = ctx.params
    return AdvLibAttack("ddn", ctx.model, ctx.targeted, steps=p["steps"], γ=p["gamma"], init_norm=p["init_epsilon"],
                        levels=None)


DDN = ATTACKS.add(AttackDef(
    name="ddn",
    summary="Decoupled direction and norm (Foolbox, adv-lib): L2 minimisation, the projection radius adapted by `gamma`",
    norms={"l2": ("foolbox", "advlib")},
    defaults={"steps": 100, "init_epsilon": 1.0, "gamma": 0.05},
    targeted_backends=frozenset({"foolbox", "advlib"}),
    minimization=True,
    same_algorithm=True,  # Foolbox's port and adv-lib's original agree to 2.4e-7 on mnist_cnn
    derive=_derive,
    build={"foolbox": _foolbox, "advlib": _advlib},
    toolkit_defaults={"foolbox": {"steps": 100, "init_epsilon": 1.0, "gamma": 0.05},
                      "advlib": {"steps": 100, "init_epsilon": 1.0, "gamma": 0.05}},
), rank=170)
