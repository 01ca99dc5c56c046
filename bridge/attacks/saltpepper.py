"""Salt-and-pepper noise: the smallest fraction of pixels set to the bounds' extremes that fools the model.

Foolbox only (``SaltAndPepperNoiseAttack``), an L2 minimisation over random draws: at each of ``steps`` steps it
raises the probability of a pixel turning salt or pepper and keeps the closest adversarial draw. Random by
design: one input at a time with a seed of its own (``AttackDef.stochastic``).
"""

from __future__ import annotations

import foolbox as fb

from .base import ATTACKS, AttackDef, BuildContext, require_positive


def _derive(norm: str, p: dict) -> None:
    require_positive("saltpepper", p, "steps")
    if not isinstance(p["across_channels"], bool):
        raise ValueError(f"parameter 'across_channels' of attack 'saltpepper' must be a bool, "
                         f"got {p['across_channels']!r}")


def _foolbox(ctx: BuildContext):
    p = ctx.params
    return fb.attacks.SaltAndPepperNoiseAttack(steps=p["steps"], across_channels=p["across_channels"],
                                               channel_axis=1), None


SALT_AND_PEPPER = ATTACKS.add(AttackDef(
    name="saltpepper",
    summary="Salt-and-pepper noise (Foolbox): black-box, the closest adversarial draw of extreme-valued pixels",
    norms={"l2": ("foolbox",)},
    defaults={"steps": 1000, "across_channels": True},
    minimization=True,
    stochastic=True,
    derive=_derive,
    build={"foolbox": _foolbox},
    toolkit_defaults={"foolbox": {"steps": 1000, "across_channels": True}},
), rank=190)
