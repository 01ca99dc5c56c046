"""APGD: Auto-PGD with a step-size schedule and momentum, on the cross-entropy or the DLR loss (Croce & Hein 2020).

ART (``AutoProjectedGradientDescent``) and adv-lib (``apgd``, a port of Croce & Hein's code). Its first step is ``2·step_size``, so the default ``step_size = eps``
gives the paper's η⁽⁰⁾ = 2ε. Every restart draws a random start in the ε-ball (``restarts`` ≥ 1), so APGD is
stochastic: it runs one input at a time with a seed of its own (``AttackDef.stochastic``).
"""

from __future__ import annotations

from art.attacks.evasion import AutoProjectedGradientDescent

from .advlib import AdvLibAttack
from .base import ATTACKS, AttackDef, BuildContext, art_norm, require_choice, require_positive

#: Canonical loss names -> ART's ``loss_type``.
LOSSES = {"ce": "cross_entropy", "dlr": "difference_logits_ratio"}


def _derive(norm: str, p: dict) -> None:
    if p["step_size"] is None:
        p["step_size"] = p["eps"]
    require_positive("apgd", p, "eps", "steps", "restarts", "step_size")
    require_choice("apgd", p, "loss", tuple(LOSSES))


def _art(ctx: BuildContext):
    p = ctx.params
    return AutoProjectedGradientDescent(ctx.model.art(), norm=art_norm(ctx.norm), eps=p["eps"], eps_step=p["step_size"],
                                        max_iter=p["steps"], targeted=ctx.targeted, nb_random_init=p["restarts"],
                                        batch_size=ctx.batch_size, loss_type=LOSSES[p["loss"]], verbose=False)


def _advlib(ctx: BuildContext):
    """adv-lib's first step is fixed at 2ε (the paper's η⁽⁰⁾), which is ART's at ``step_size = eps``."""
    p = ctx.params
    if p["step_size"] != p["eps"]:
        raise ValueError(f"parameter 'step_size'={p['step_size']!r} cannot be honoured by backend 'advlib' for attack "
                         f"'apgd' (adv-lib's first step is 2·eps: step_size = eps = {p['eps']!r} only)")
    return AdvLibAttack("apgd", ctx.model, ctx.targeted, eps=p["eps"], norm=art_norm(ctx.norm), n_iter=p["steps"],
                        n_restarts=p["restarts"], loss_function=p["loss"])


APGD = ATTACKS.add(AttackDef(
    name="apgd",
    summary="Auto-PGD (ART, adv-lib): adaptive step size and momentum, on the CE or the DLR loss (`loss`), `restarts` starts",
    norms={"linf": ("art", "advlib"), "l2": ("art", "advlib")},
    defaults={"steps": 100, "restarts": 1, "step_size": None, "loss": "ce"},
    norm_defaults={"linf": {"eps": 0.1}, "l2": {"eps": 1.0}},
    targeted_backends=frozenset({"art", "advlib"}),
    stochastic=True,
    derive=_derive,
    build={"art": _art, "advlib": _advlib},
    toolkit_defaults={"art": {"eps": 0.3, "step_size": 0.1, "steps": 100, "restarts": 5},
                      "advlib": {"steps": 100, "restarts": 1, "loss": "dlr"}},
), rank=140)
