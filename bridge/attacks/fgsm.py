"""FGSM / FGM: one signed (L∞) or normalised (L2) gradient step of size ε (Goodfellow et al. 2015)."""

from __future__ import annotations

from art.attacks.evasion import FastGradientMethod
import foolbox as fb

from .base import ATTACKS, AttackDef, BuildContext, art_norm, require_positive


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
        bim = fb.attacks.LinfBasicIterativeAttack if ctx.norm == "linf" else fb.attacks.L2BasicIterativeAttack
        return bim(rel_stepsize=1.0, steps=1, random_start=p["random_start"]), p["eps"]
    fgm = fb.attacks.LinfFastGradientAttack if ctx.norm == "linf" else fb.attacks.L2FastGradientAttack
    return fgm(random_start=p["random_start"]), p["eps"]


FGSM = ATTACKS.add(AttackDef(
    name="fgsm",
    summary="Fast gradient sign (L∞) / fast gradient (L2) method, one step of size eps",
    norms={"linf": ("art", "foolbox"), "l2": ("art", "foolbox")},
    defaults={"random_start": False},
    norm_defaults={"linf": {"eps": 0.1}, "l2": {"eps": 1.0}},
    targeted_backends=frozenset({"art", "foolbox"}),
    same_algorithm=True,
    derive=_derive,
    build={"art": _art, "foolbox": _foolbox},
    toolkit_defaults={"art": {"eps": 0.3, "random_start": False}, "foolbox": {"random_start": False}},
), rank=10)
