"""JSON encoding of floats and arrays for stored results (every ``to_dict()`` of the analyses).

``+∞`` is written as the string ``"inf"`` (``−∞`` as ``"-inf"``), NaN as ``null``; numpy arrays and tensors become
(nested) lists and integer dictionary keys become strings.
"""

from __future__ import annotations

import math
from typing import Any, SupportsFloat

import numpy as np
import torch


def json_float(v: SupportsFloat) -> float | str | None:
    """A float for JSON: NaN as ``None``, ±∞ as ``"inf"``/``"-inf"``."""
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def json_array(a: np.ndarray) -> Any:
    """A float array as nested lists of :func:`json_float` values (a 0-d array as one value)."""
    return json_float(a) if a.ndim == 0 else [json_array(v) for v in a]


def jsonable(value: Any) -> Any:
    """JSON-safe copy: ±∞ → ``"inf"``/``"-inf"``, NaN → ``None``, arrays and tensors → lists, int keys → strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return json_float(value)
    return value
