"""The attack registry: one module per attack, each registering one `AttackDef` in ``ATTACKS`` (`base`)."""

from __future__ import annotations

from .advlib import unavailable as advlib_unavailable
from .base import ATTACKS, BACKENDS, NORMS, TARGET_MODES, AttackDef, BuildContext, KnownCause
from .kos_base import KosAttack
from .kos_classifier import KosClassifierAttack
from .kos_latent import KosLatentAttack
from .kos_vae import KosVAEAttack
from .lbfgs import LBFGS
from .step_ll import StepLL


def backend_unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot run here (with what to install), or ``None`` when it can; only the optional adv-lib
    backend can be missing."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    return advlib_unavailable() if backend == "advlib" else None


def get_attack(name: str) -> AttackDef:
    """The registered `AttackDef` called ``name``; raises ``ValueError`` listing the known names."""
    return ATTACKS.lookup(name)


__all__ = ["ATTACKS", "BACKENDS", "NORMS", "TARGET_MODES", "AttackDef", "BuildContext", "KnownCause", "KosAttack",
           "KosClassifierAttack", "KosLatentAttack", "KosVAEAttack", "LBFGS", "StepLL", "backend_unavailable", "get_attack"]
