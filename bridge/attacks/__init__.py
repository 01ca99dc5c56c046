"""The attack registry: one module per attack, each holding one `AttackDef`."""

from __future__ import annotations

from .base import BACKENDS, NORMS, TARGET_MODES, AttackDef, BuildContext, KnownCause
from .bim import BIM
from .cw import CW
from .deepfool import DEEPFOOL
from .ead import EAD
from .fgsm import FGSM
from .jsma import JSMA
from .kos_base import KosAttack
from .kos_classifier import KOS_CLASSIFIER, KosClassifierAttack
from .kos_latent import KOS_LATENT, KosLatentAttack
from .kos_vae import KOS_VAE, KosVAEAttack
from .lbfgs import LBFGS, LBFGS_ATTACK
from .newtonfool import NEWTONFOOL
from .pgd import PGD
from .step_ll import STEP_LL, StepLL

ATTACKS: dict[str, AttackDef] = {a.name: a for a in (
    FGSM, BIM, PGD, CW, EAD, DEEPFOOL, NEWTONFOOL, JSMA, STEP_LL, LBFGS_ATTACK, KOS_CLASSIFIER, KOS_LATENT, KOS_VAE)}


def get_attack(name: str) -> AttackDef:
    """The registered `AttackDef` called ``name``; raises ``ValueError`` listing the known names."""
    if not isinstance(name, str) or name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; expected one of {sorted(ATTACKS)}")
    return ATTACKS[name]


__all__ = ["ATTACKS", "BACKENDS", "NORMS", "TARGET_MODES", "AttackDef", "BuildContext", "KnownCause", "KosAttack",
           "KosClassifierAttack", "KosLatentAttack", "KosVAEAttack", "LBFGS", "StepLL", "get_attack"]
