"""JSMA through ART's `SaliencyMapMethod` (Papernot et al. 2016), whose saliency uses only ∂F_t/∂x."""

from __future__ import annotations

from .base import AttackDef, BuildContext, KnownCause


def _derive(norm: str, p: dict) -> None:
    if not 0 < p["max_distortion"] <= 1:
        raise ValueError(f"parameter 'max_distortion' of attack 'jsma' must be in (0, 1], got {p['max_distortion']}")
    if p["theta"] == 0:
        raise ValueError("parameter 'theta' of attack 'jsma' must be non-zero")


def _art(ctx: BuildContext):
    from art.attacks.evasion import SaliencyMapMethod

    p = ctx.params
    return SaliencyMapMethod(ctx.model.art(), theta=p["theta"], gamma=p["max_distortion"],
                             batch_size=ctx.batch_size, verbose=False)


JSMA = AttackDef(
    name="jsma",
    summary="Jacobian saliency map attack (targeted, L0); ART's saliency uses the target-class gradient only",
    norms={"l0": ("art",)},
    defaults={"theta": 1.0, "max_distortion": 0.145},
    targeted_backends=frozenset({"art"}),
    requires_target=True,
    minimization=True,
    derive=_derive,
    build={"art": _art},
    toolkit_defaults={"art": {"theta": 0.1, "max_distortion": 1.0}},
    known_causes=(
        KnownCause(frozenset({"success_gap", "norm_gap"}),
                   "ART SaliencyMapMethod scores features with the target-class gradient only, not Papernot's "
                   "pair saliency (∂F_t/∂x against Σ_{j≠t} ∂F_j/∂x)",
                   ("https://github.com/Trusted-AI/adversarial-robustness-toolbox/issues/2306",)),
    ),
)
