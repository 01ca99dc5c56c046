"""Additive random noise at the attack's ε: Gaussian in L2, uniform in L∞, drawn once or ``repeats`` times.

Foolbox only (``L2AdditiveGaussianNoiseAttack`` / ``LinfAdditiveUniformNoiseAttack``, or their ``Repeated``
versions, which keep the first draw that fools the model). The noise has exactly norm ε (Foolbox rescales each
draw), then is clipped to the bounds. This is the random-noise row of the sanity checks: a gradient attack that does
no better than noise of the same size is not working. Random: one input at a time with a seed of its own.
"""

from __future__ import annotations

import foolbox as fb

from .base import ATTACKS, AttackDef, BuildContext, require_positive

SINGLE = {"l2": fb.attacks.L2AdditiveGaussianNoiseAttack, "linf": fb.attacks.LinfAdditiveUniformNoiseAttack}
REPEATED = {"l2": fb.attacks.L2RepeatedAdditiveGaussianNoiseAttack,
            "linf": fb.attacks.LinfRepeatedAdditiveUniformNoiseAttack}


def _derive(norm: str, p: dict) -> None:
    require_positive("noise", p, "eps", "repeats")
    if isinstance(p["repeats"], bool) or not isinstance(p["repeats"], int):
        raise ValueError(f"parameter 'repeats' of attack 'noise' must be a positive integer, got {p['repeats']!r}")


def _foolbox(ctx: BuildContext):
    p = ctx.params
    if p["repeats"] == 1:
        return SINGLE[ctx.norm](), p["eps"]
    return REPEATED[ctx.norm](repeats=p["repeats"], check_trivial=True), p["eps"]


NOISE = ATTACKS.add(AttackDef(
    name="noise",
    summary="Additive noise of norm eps (Foolbox): Gaussian (L2) or uniform (L∞), the best of `repeats` draws",
    norms={"l2": ("foolbox",), "linf": ("foolbox",)},
    defaults={"repeats": 100},
    norm_defaults={"linf": {"eps": 0.1}, "l2": {"eps": 1.0}},
    stochastic=True,
    derive=_derive,
    build={"foolbox": _foolbox},
    toolkit_defaults={"foolbox": {"repeats": 100}},
), rank=200)
