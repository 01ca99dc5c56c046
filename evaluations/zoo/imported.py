"""The ``package.module:function`` model family: a user's factory that returns an ``advbridge.bridge.Model``."""

from __future__ import annotations

import importlib
from typing import Any

from advbridge.bridge import Model
from advbridge.evaluations.zoo.family import FAMILIES, ModelFamily


def load_imported(spec: str, dataset: str = "mnist5k", **_ignored: Any) -> tuple[Model, dict[str, Any]]:
    """Call the factory ``spec`` names (``package.module:function``); it must return a bridge ``Model``."""
    module_name, _, func_name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"model {spec!r}: cannot import {func_name} from {module_name} ({err})") from err
    model = factory()
    if not isinstance(model, Model):
        raise TypeError(f"model {spec!r} must return an advbridge.bridge.Model, got {type(model).__name__}")
    return model, {"model": spec}


FAMILIES.add(ModelFamily("import", owns=lambda name: ":" in name, load=load_imported, listing=list,
                         hint="(or package.module:function)", hint_rank=50), rank=50)
