"""FGSM / FGM: one signed (L∞) or normalised (L2, L1) gradient step of size ε (Goodfellow et al. 2015)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from art.attacks.evasion import FastGradientMethod
import foolbox as fb

from .base import ATTACKS, AttackDef, BuildContext, KnownCause, art_norm, require_positive


#: Foolbox's attack classes per norm (one BIM step stands in for targeted FGSM).
FOOLBOX_FGM: dict[str, Callable[..., Any]] = {"linf": fb.attacks.LinfFastGradientAttack,
                                              "l2": fb.attacks.L2FastGradientAttack,
                                              "l1": fb.attacks.L1FastGradientAttack}
FOOLBOX_BIM: dict[str, Callable[..., Any]] = {"linf": fb.attacks.LinfBasicIterativeAttack,
                                              "l2": fb.attacks.L2BasicIterativeAttack,
                                              "l1": fb.attacks.L1BasicIterativeAttack}


def _derive(norm: str, p: dict) -> None:
    require_positive("fgsm", p, "eps")


def _art(ctx: BuildContext):
    p = ctx.params
    return FastGradientMethod(ctx.model.art(), norm=art_norm(ctx.norm), eps=p["eps"], eps_step=p["eps"],
                              targeted=ctx.targeted, num_random_init=int(p["random_start"]),
                              batch_size=ctx.batch_size)


def _foolbox(ctx: BuildContext):
    p = ctx.params
    if ctx.targeted:
        # Foolbox's FGSM rejects targeted criteria; one BIM step with rel_stepsize=1 is the same update
        # (verified bit-exact against ART, toolkits.md §2).
        return FOOLBOX_BIM[ctx.norm](rel_stepsize=1.0, steps=1, random_start=p["random_start"]), p["eps"]
    return FOOLBOX_FGM[ctx.norm](random_start=p["random_start"]), p["eps"]


FGSM = ATTACKS.add(AttackDef(
    name="fgsm",
    summary="Fast gradient sign (L∞) / fast gradient (L2, L1) method, one step of size eps",
    norms={"linf": ("art", "foolbox"), "l2": ("art", "foolbox"), "l1": ("art", "foolbox")},
    defaults={"random_start": False},
    norm_defaults={"linf": {"eps": 0.1}, "l2": {"eps": 1.0}, "l1": {"eps": 10.0}},
    targeted_backends=frozenset({"art", "foolbox"}),
    same_algorithm=True,
    derive=_derive,
    build={"art": _art, "foolbox": _foolbox},
    toolkit_defaults={"art": {"eps": 0.3, "random_start": False}, "foolbox": {"random_start": False}},
    known_causes=(KnownCause(
        frozenset({"outputs_differ", "success_gap", "norm_gap"}),
        "not the same algorithm in L1: ART's FastGradientMethod(norm=1) puts the whole step eps on the one coordinate "
        "of largest |gradient| (then clipped to the bounds, so its L1 norm is at most the bounds' width), Foolbox's "
        "L1FastGradientAttack spreads it over every coordinate along gradient/||gradient||_1 (measured on "
        "mnist_tiny_cnn at eps 10: median L1 0.99 vs 6.7, success 0% vs 9%)", norms=frozenset({"l1"})),),
), rank=10)
