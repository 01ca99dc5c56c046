"""DeepFool: iterative linearisation toward the nearest decision boundary (Moosavi-Dezfooli et al. 2016)."""

from __future__ import annotations

from art.attacks.evasion import DeepFool
import foolbox as fb

from .advlib import AdvLibAttack
from .base import ATTACKS, AttackDef, BuildContext, KnownCause, require_positive


def _derive(norm: str, p: dict) -> None:
    require_positive("deepfool", p, "steps", "candidates")
    if p["overshoot"] < 0:
        raise ValueError(f"parameter 'overshoot' of attack 'deepfool' must be >= 0, got {p['overshoot']}")


def _art(ctx: BuildContext):
    p = ctx.params
    return DeepFool(ctx.model.art(), max_iter=p["steps"], epsilon=p["overshoot"], nb_grads=p["candidates"],
                    batch_size=ctx.batch_size, verbose=False)


def _foolbox(ctx: BuildContext):
    p = ctx.params
    cls = fb.attacks.L2DeepFoolAttack if ctx.norm == "l2" else fb.attacks.LinfDeepFoolAttack
    return cls(steps=p["steps"], candidates=p["candidates"], overshoot=p["overshoot"], loss="logits"), None


def _advlib(ctx: BuildContext):
    """adv-lib's ``df`` linearises every class, so it honours ``candidates`` only when that is the class count."""
    p = ctx.params
    if p["candidates"] != ctx.model.nb_classes:
        raise ValueError(f"parameter 'candidates'={p['candidates']} cannot be honoured by backend 'advlib' for attack "
                         f"'deepfool' (adv-lib's df uses every class: candidates={ctx.model.nb_classes})")
    return AdvLibAttack("df", ctx.model, False, steps=p["steps"], overshoot=p["overshoot"],
                        norm=2 if ctx.norm == "l2" else float("inf"))


DEEPFOOL = ATTACKS.add(AttackDef(
    name="deepfool",
    summary="DeepFool: step to the linearised nearest boundary among the top `candidates` classes",
    norms={"l2": ("art", "foolbox", "advlib"), "linf": ("foolbox", "advlib")},
    defaults={"steps": 50, "overshoot": 0.02, "candidates": 10},
    minimization=True,
    derive=_derive,
    build={"art": _art, "foolbox": _foolbox, "advlib": _advlib},
    toolkit_defaults={"art": {"steps": 100, "overshoot": 1e-6, "candidates": 10},
                      "foolbox": {"steps": 50, "overshoot": 0.02, "candidates": 10},
                      "advlib": {"steps": 100, "overshoot": 0.02}},
    known_causes=(
        KnownCause(frozenset({"norm_gap", "success_gap"}),
                   "overshoot placement: ART applies (1+overshoot) once at the end, Foolbox at every step; ART's "
                   "`candidates` (nb_grads) is the union of top-k classes over the whole batch, Foolbox's is per "
                   "sample; ART also multiplies its step by the clip range (PR #476), ~9x too large for a model "
                   "that works on [0, 255]",
                   ("https://github.com/bethgelab/foolbox/issues/283",
                    "https://github.com/cleverhans-lab/cleverhans/issues/1008",
                    "https://github.com/Trusted-AI/adversarial-robustness-toolbox/pull/476")),
    ),
), rank=60)
