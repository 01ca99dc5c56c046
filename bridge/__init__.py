"""The bridge: one attack spec, run on ART, Foolbox, adv-lib (optional) or the native backend, and cross-validated.

>>> from advbridge.bridge import Model, AttackSpec, run_attack, crossval
"""

from .attacks import ATTACKS, BACKENDS, NORMS, AttackDef, backend_unavailable, get_attack
from .crossval import CrossvalReport, Flag, aa_check, crossval
from .model import Model, Normalize, default_device
from .result import AttackResult, perturbation_norms
from .run import run_attack, seed_everything
from .spec import AttackSpec

__all__ = ["ATTACKS", "BACKENDS", "NORMS", "AttackDef", "AttackResult", "AttackSpec", "CrossvalReport", "Flag",
           "Model", "Normalize", "aa_check", "backend_unavailable", "crossval", "default_device", "get_attack", "perturbation_norms", "run_attack",
           "seed_everything"]
