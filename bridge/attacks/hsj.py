"""HopSkipJump: a decision-based attack from label queries only (Chen et al. 2020), in L2 and L∞.

ART ``HopSkipJump`` ↔ Foolbox ``HopSkipJumpAttack``, both untargeted here, both starting from random noise that
the model misclassifies (the same start for both: ``bridge.attacks.starts``). Canonical parameters: ``steps`` (ART ``max_iter``), ``max_evals`` and ``init_evals`` (the
gradient-estimation queries per step, at most / at first) and ``gamma``, Foolbox's binary-search threshold
θ = γ/d^1.5 (L2) or γ/d² (L∞). ART computes θ itself as 0.01/√d (L2) or 0.01/d (L∞), which is γ = 0.01·d; the
bridge sets ART's θ from ``gamma``, so one spec is one algorithm setting on both. Random: one input at a time with
a seed of its own, and crossval compares the two toolkits statistically (``bridge.stats``).
"""

from __future__ import annotations

import math

import foolbox as fb
from art.attacks.evasion import HopSkipJump

from .starts import ArtFromStarts, FoolboxFromStarts
from .base import ATTACKS, AttackDef, BuildContext, KnownCause, art_norm, require_positive


def _derive(norm: str, p: dict) -> None:
    require_positive("hsj", p, "steps", "max_evals", "init_evals", "gamma")
    if p["init_evals"] > p["max_evals"]:
        raise ValueError(f"parameter 'init_evals' of attack 'hsj' must be <= max_evals, got {p['init_evals']} > "
                         f"{p['max_evals']}")


def theta(norm: str, gamma: float, d: int) -> float:
    """Foolbox's binary-search threshold for dimension ``d``."""
    return gamma / (d * d) if norm == "linf" else gamma / (d * math.sqrt(d))


def _art(ctx: BuildContext):
    p = ctx.params
    attack = HopSkipJump(ctx.model.art(), batch_size=ctx.batch_size, targeted=False, norm=art_norm(ctx.norm),
                         max_iter=p["steps"], max_eval=p["max_evals"], init_eval=p["init_evals"], init_size=100,
                         verbose=False)
    attack.theta = theta(ctx.norm, p["gamma"], math.prod(ctx.model.input_shape))
    return ArtFromStarts(ctx.model, attack, "x_adv_init")


def _foolbox(ctx: BuildContext):
    p = ctx.params
    attack = fb.attacks.HopSkipJumpAttack(steps=p["steps"], initial_gradient_eval_steps=p["init_evals"],
                                          max_gradient_eval_steps=p["max_evals"], gamma=p["gamma"],
                                          constraint="linf" if ctx.norm == "linf" else "l2")
    return FoolboxFromStarts(ctx.model, attack), None


HSJ = ATTACKS.add(AttackDef(
    name="hsj",
    summary="HopSkipJump: decision-based (labels only), gradient estimates at the boundary, geometric step search",
    norms={"l2": ("art", "foolbox"), "linf": ("art", "foolbox")},
    defaults={"steps": 20, "max_evals": 1000, "init_evals": 100, "gamma": 1.0},
    minimization=True,
    stochastic=True,
    derive=_derive,
    build={"art": _art, "foolbox": _foolbox},
    toolkit_defaults={"art": {"steps": 50, "max_evals": 10000, "init_evals": 100, "gamma": 7.84},
                      "foolbox": {"steps": 64, "max_evals": 10000, "init_evals": 100, "gamma": 1.0}},
    known_causes=(KnownCause(
        frozenset({"success_gap", "norm_gap"}),
        "both start from the same points (bridge.attacks.starts); the remaining differences are each toolkit's "
        "gradient-estimation draws and step-size search, e.g. on a linear model at 10 steps of at most 500 queries "
        "the median distance is 1.57x the exact minimum on ART and 1.29x on Foolbox"),),
), rank=210)
