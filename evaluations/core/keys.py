"""Cell keys: a stable hash of everything that decides a cell's numbers."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["config_key", "jsonable"]


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values (anything JSON cannot hold becomes its ``str``)."""
    return json.loads(json.dumps(obj, default=str))


def config_key(config: dict[str, Any]) -> str:
    """The cell key: a hash of its fully resolved config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:24]
