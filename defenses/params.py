"""Parameter checks shared by the defenses' ``_check_params``: each raises ``ValueError`` naming the argument."""

from __future__ import annotations

import math

import numpy as np


def check_positive_int(value, name: str) -> int:
    """``value`` as an int ≥ 1, or ``ValueError("<name> must be a positive integer, got …")``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive(value, name: str) -> float:
    """``value`` as a finite float > 0, or ``ValueError("<name> must be a positive finite number, got …")``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)
