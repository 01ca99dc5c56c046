"""Square: a score-based black-box attack by random square-shaped updates (Andriushchenko et al. 2020).

ART only (``SquareAttack``), untargeted. It never reads a gradient, which makes it the black-box row of the
gradient-masking sanity check (a black-box attack that beats the white-box one). Random by design: it runs one
input at a time with a seed of its own (``AttackDef.stochastic``).
"""

from __future__ import annotations

from art.attacks.evasion import SquareAttack

from .base import ATTACKS, AttackDef, BuildContext, art_norm, require_positive


def _derive(norm: str, p: dict) -> None:
    require_positive("square", p, "eps", "queries", "restarts", "p_init")
    if not p["p_init"] < 1:
        raise ValueError(f"parameter 'p_init' of attack 'square' must be in (0, 1), got {p['p_init']}")


def _art(ctx: BuildContext):
    p = ctx.params
    return SquareAttack(ctx.model.art(), norm=art_norm(ctx.norm), max_iter=p["queries"], eps=p["eps"],
                        p_init=p["p_init"], nb_restarts=p["restarts"], batch_size=ctx.batch_size, verbose=False)


SQUARE = ATTACKS.add(AttackDef(
    name="square",
    summary="Square attack (ART): black-box, random square updates accepted when the margin loss drops",
    norms={"linf": ("art",), "l2": ("art",)},
    defaults={"queries": 1000, "p_init": 0.8, "restarts": 1},
    norm_defaults={"linf": {"eps": 0.1}, "l2": {"eps": 1.0}},
    stochastic=True,
    derive=_derive,
    build={"art": _art},
    toolkit_defaults={"art": {"eps": 0.3, "queries": 100, "p_init": 0.8, "restarts": 1}},
), rank=150)
