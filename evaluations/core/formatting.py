"""Formatting helpers shared by the report sections: numbers and rates, file-name-safe text, grid settings.

Plain functions of plain values (no store, no suite), so that every section formats the same number the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

def fmt(value: Any, pct: bool = False) -> str:
    """A table cell: "–" for a missing or non-finite number, a float as a percentage (``pct``) or to 4 significant
    digits, anything else as ``str``."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{100 * value:.1f}%" if pct else f"{value:.4g}"
    return str(value)


def safe(text: str) -> str:
    """``text`` as a piece of a file name: letters, digits, "-" and "." kept, the rest "_", at most 60 characters."""
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text)[:60]


def setting_key(setting: Mapping[str, Any]) -> tuple:
    """Sort key of a grid point that sorts numbers numerically (eps=0.1 before eps=0.15), then other values as text."""
    return tuple((k, (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))) for k, v in sorted(setting.items()))


def setting_text(setting: Mapping[str, Any]) -> str:
    """A grid point as ``k=v, k=v`` in key order; "defaults" for the empty point."""
    return ", ".join(f"{k}={v}" for k, v in sorted(setting.items())) or "defaults"


def embed(paths: Iterable[str]) -> list[str]:
    """Markdown image lines for plots (paths relative to the report)."""
    return [f"![{p}]({p})" for p in paths]
