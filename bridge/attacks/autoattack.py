"""ART's ``AutoAttack``: an ensemble run in order, each input keeping the first attack that breaks it.

ART's default ensemble is APGD-CE, APGD-DLR, **DeepFool** and Square; the original AutoAttack (Croce & Hein 2020)
runs APGD-CE, APGD-T (targeted DLR), **FAB-T** and Square. So ART's is not the standard AutoAttack: it has no FAB
and no targeted APGD. advbridge builds ART's ensemble with ART's own members and settings, except the budgets,
which are parameters (``steps`` for APGD, ``queries`` and ``restarts`` for Square). Random (APGD starts, Square):
one input at a time with a seed of its own (``AttackDef.stochastic``).
"""

from __future__ import annotations

from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, DeepFool, SquareAttack

from .base import ATTACKS, AttackDef, BuildContext, art_norm, require_positive

DIFFERS_FROM_ORIGINAL = ("ART's AutoAttack runs APGD-CE, APGD-DLR, DeepFool and Square; the original runs "
                         "APGD-CE, APGD-T, FAB-T and Square (no FAB, no targeted APGD in ART's)")


def _derive(norm: str, p: dict) -> None:
    if p["step_size"] is None:
        p["step_size"] = p["eps"]
    require_positive("autoattack", p, "eps", "steps", "restarts", "queries", "step_size")


def _art(ctx: BuildContext):
    p, est = ctx.params, ctx.model.art()
    norm = art_norm(ctx.norm)
    apgd = [AutoProjectedGradientDescent(est, norm=norm, eps=p["eps"], eps_step=p["step_size"], max_iter=p["steps"],
                                         targeted=False, nb_random_init=p["restarts"], batch_size=ctx.batch_size,
                                         loss_type=loss, verbose=False)
            for loss in ("cross_entropy", "difference_logits_ratio")]
    members = [*apgd, DeepFool(est, max_iter=100, epsilon=1e-3, nb_grads=10, batch_size=ctx.batch_size, verbose=False),
               SquareAttack(est, norm=norm, max_iter=p["queries"], eps=p["eps"], p_init=0.8, nb_restarts=p["restarts"],
                            batch_size=ctx.batch_size, verbose=False)]
    return AutoAttack(est, norm=norm, eps=p["eps"], eps_step=p["step_size"], attacks=members,
                      batch_size=ctx.batch_size)


AUTOATTACK = ATTACKS.add(AttackDef(
    name="autoattack",
    summary="ART's AutoAttack ensemble (APGD-CE, APGD-DLR, DeepFool, Square: not the original's FAB-T/APGD-T)",
    norms={"linf": ("art",), "l2": ("art",)},
    defaults={"steps": 100, "restarts": 1, "queries": 1000, "step_size": None},
    norm_defaults={"linf": {"eps": 0.1}, "l2": {"eps": 1.0}},
    stochastic=True,
    derive=_derive,
    build={"art": _art},
    toolkit_defaults={"art": {"eps": 0.3, "step_size": 0.1, "steps": 100, "restarts": 5, "queries": 5000}},
), rank=160)
