"""BIM: iterated FGSM with projection onto the ε-ball, no random start (Kurakin et al. 2017)."""

from __future__ import annotations

from art.attacks.evasion import BasicIterativeMethod, ProjectedGradientDescent
import foolbox as fb

from .base import ATTACKS, AttackDef, BuildContext, KnownCause, require_positive

#: Shared default step, relative to eps (Foolbox's default `rel_stepsize`).
REL_STEP = 0.2


def _derive(norm: str, p: dict) -> None:
    if p["step_size"] is None:
        p["step_size"] = REL_STEP * p["eps"]
    require_positive("bim", p, "eps", "steps", "step_size")


def _art(ctx: BuildContext):
    p = ctx.params
    if ctx.norm == "linf":
        return BasicIterativeMethod(ctx.model.art(), eps=p["eps"], eps_step=p["step_size"], max_iter=p["steps"],
                                    targeted=ctx.targeted, batch_size=ctx.batch_size, verbose=False)
    # ART's BasicIterativeMethod is L∞ only; PGD without random start is BIM for L2.
    return ProjectedGradientDescent(ctx.model.art(), norm=2, eps=p["eps"], eps_step=p["step_size"],
                                    max_iter=p["steps"], targeted=ctx.targeted, num_random_init=0,
                                    batch_size=ctx.batch_size, verbose=False)


def _foolbox(ctx: BuildContext):
    p = ctx.params
    cls = fb.attacks.LinfBasicIterativeAttack if ctx.norm == "linf" else fb.attacks.L2BasicIterativeAttack
    return cls(abs_stepsize=p["step_size"], steps=p["steps"], random_start=False), p["eps"]


BIM = ATTACKS.add(AttackDef(
    name="bim",
    summary="Basic iterative method: `steps` gradient steps of `step_size` projected onto the eps-ball",
    norms={"linf": ("art", "foolbox"), "l2": ("art", "foolbox")},
    defaults={"steps": 10, "step_size": None},
    norm_defaults={"linf": {"eps": 0.1}, "l2": {"eps": 1.0}},
    targeted_backends=frozenset({"art", "foolbox"}),
    same_algorithm=True,
    derive=_derive,
    build={"art": _art, "foolbox": _foolbox},
    toolkit_defaults={
        "art": {"eps": 0.3, "step_size": 0.1, "steps": 100},
        "foolbox": lambda norm, p: {"steps": 10, "step_size": REL_STEP * p["eps"]},
    },
    known_causes=(KnownCause(
        frozenset({"outputs_differ"}),
        "for L2, ART runs BIM as ProjectedGradientDescent(norm=2), which steps, clips to the bounds and then "
        "rescales the perturbation onto the eps-ball; Foolbox's L2BasicIterativeAttack steps, projects and then "
        "clips, so ART's L2 norm equals eps while Foolbox's ends inside the ball (max |dx| 0.024 at eps = 1, "
        "10 steps of 0.2)", norms=frozenset({"l2"})),),
), rank=20)
