"""NewtonFool: Newton-like steps that shrink the probability of the true class (Jang et al. 2017)."""

from __future__ import annotations

from art.attacks.evasion import NewtonFool
import foolbox as fb

from .base import ATTACKS, AttackDef, BuildContext, KnownCause, require_positive


def _derive(norm: str, p: dict) -> None:
    require_positive("newtonfool", p, "steps", "step_size")


def _art(ctx: BuildContext):
    p = ctx.params
    # ART reads the model output as a probability, so it gets the same model with a softmax head.
    return NewtonFool(ctx.model.art(probabilities=True), max_iter=p["steps"], eta=p["step_size"],
                      batch_size=ctx.batch_size, verbose=False)


def _foolbox(ctx: BuildContext):
    p = ctx.params
    return fb.attacks.NewtonFoolAttack(steps=p["steps"], stepsize=p["step_size"]), None


NEWTONFOOL = ATTACKS.add(AttackDef(
    name="newtonfool",
    summary="NewtonFool: Newton steps on the true-class probability (ART gets a softmax head)",
    norms={"l2": ("art", "foolbox")},
    defaults={"steps": 100, "step_size": 0.01},
    minimization=True,
    derive=_derive,
    build={"art": _art, "foolbox": _foolbox},
    toolkit_defaults={"art": {"steps": 100, "step_size": 0.01}, "foolbox": {"steps": 100, "step_size": 0.01}},
    known_causes=(
        KnownCause(frozenset({"nonfinite", "success_gap", "norm_gap"}),
                   "Foolbox NewtonFoolAttack uses squared norms (||x||², ||g||⁴) where the paper uses norms; the "
                   "first step saturates the softmax, ||g||⁴ underflows to 0 in float32 and the update is "
                   "0/0 = NaN (found here, no upstream issue)"),
    ),
), rank=70)
