"""The attack registry: one module per attack, each registering one `AttackDef` in ``ATTACKS`` (`base`)."""

from __future__ import annotations

from .base import ATTACKS, BACKENDS, NORMS, TARGET_MODES, AttackDef, BuildContext, KnownCause
from .kos_base import KosAttack
from .kos_classifier import KosClassifierAttack
from .kos_latent import KosLatentAttack
from .kos_vae import KosVAEAttack
from .lbfgs import LBFGS
from .step_ll import StepLL


def get_attack(name: str) -> AttackDef:
    """The registered `AttackDef` called ``name``; raises ``ValueError`` listing the known names."""
    return ATTACKS.lookup(name)


__all__ = ["ATTACKS", "BACKENDS", "NORMS", "TARGET_MODES", "AttackDef", "BuildContext", "KnownCause", "KosAttack",
           "KosClassifierAttack", "KosLatentAttack", "KosVAEAttack", "LBFGS", "StepLL", "get_attack"]
