"""EAD: elastic-net attack, C&W with an added β·L1 term solved by ISTA/FISTA (Chen et al. 2018)."""

from __future__ import annotations

from art.attacks.evasion import ElasticNet
import foolbox as fb

from .base import ATTACKS, AttackDef, BuildContext, KnownCause, require_choice, require_positive

DECISION_RULES = ("en", "l1", "l2")


def _derive(norm: str, p: dict) -> None:
    p["decision_rule"] = p["decision_rule"].lower()
    require_choice("ead", p, "decision_rule", DECISION_RULES)
    require_positive("ead", p, "initial_const", "steps", "learning_rate", "binary_search_steps", "beta")
    if p["confidence"] < 0:
        raise ValueError(f"parameter 'confidence' of attack 'ead' must be >= 0, got {p['confidence']}")


def _art(ctx: BuildContext):
    if tuple(ctx.model.bounds) != (0.0, 1.0):
        raise ValueError("backend 'art' cannot honour the model's bounds "
                         f"{ctx.model.bounds} for attack 'ead': ART ElasticNet clamps to [0, 1] whatever "
                         "clip_values say (toolkits.md §4); use backend 'foolbox' or rescale the model to [0, 1]")
    p = ctx.params
    return ElasticNet(ctx.model.art(), confidence=p["confidence"], targeted=ctx.targeted,
                      learning_rate=p["learning_rate"], binary_search_steps=p["binary_search_steps"],
                      max_iter=p["steps"], beta=p["beta"], initial_const=p["initial_const"],
                      batch_size=ctx.batch_size, decision_rule=p["decision_rule"].upper(), verbose=False)


def _foolbox(ctx: BuildContext):
    p = ctx.params
    if p["decision_rule"] == "l2":
        raise ValueError("parameter 'decision_rule'='l2' cannot be honoured by backend 'foolbox' for attack 'ead' "
                         "(Foolbox EADAttack supports 'en' and 'l1')")
    return fb.attacks.EADAttack(binary_search_steps=p["binary_search_steps"], steps=p["steps"],
                                initial_stepsize=p["learning_rate"], confidence=p["confidence"],
                                initial_const=p["initial_const"], regularization=p["beta"],
                                decision_rule=p["decision_rule"].upper(), abort_early=p["abort_early"]), None


EAD = ATTACKS.add(AttackDef(
    name="ead",
    summary="Elastic-net attack (L1-oriented C&W); decision_rule 'en' or 'l1', beta weights the L1 term",
    norms={"l1": ("art", "foolbox")},
    defaults={"confidence": 0.01, "initial_const": 1.0, "binary_search_steps": 5, "steps": 100,
              "learning_rate": 0.01, "beta": 0.01, "decision_rule": "en", "abort_early": False},
    targeted_backends=frozenset({"art", "foolbox"}),
    minimization=True,
    derive=_derive,
    build={"art": _art, "foolbox": _foolbox},
    toolkit_defaults={
        "art": {"confidence": 0.0, "learning_rate": 0.01, "binary_search_steps": 9, "steps": 100, "beta": 1e-3,
                "initial_const": 1e-3, "decision_rule": "en"},
        "foolbox": {"binary_search_steps": 9, "steps": 10000, "learning_rate": 0.01, "confidence": 0.0,
                    "initial_const": 1e-3, "beta": 1e-2, "decision_rule": "en", "abort_early": True},
    },
    unsupported={"art": {"abort_early": False}},
    known_causes=(
        KnownCause(frozenset({"norm_gap", "success_gap"}),
                   "ART ElasticNet zeroes the whole gradient, distance term included, once the margin is met, "
                   "and its shrinkage step clamps to [0, 1] whatever clip_values say (found here, no upstream "
                   "issue); Foolbox EAD checked success on y_k instead of x_k before 3.1",
                   ("https://github.com/bethgelab/foolbox/pull/559",
                    "https://github.com/bethgelab/foolbox/issues/579")),
    ),
), rank=50)
