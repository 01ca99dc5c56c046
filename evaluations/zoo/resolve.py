"""Model names to models, through the family registry (`advbridge.evaluations.zoo.family.FAMILIES`): the one place
a suite, an estimator or the CLI turns a model name into a ``Model``."""

from __future__ import annotations

from typing import Any

from advbridge.bridge import Model
from advbridge.evaluations.zoo.family import FAMILIES, ModelFamily


def family_of(name: str) -> ModelFamily | None:
    """The family that owns model ``name``, or ``None``."""
    return next((f for f in FAMILIES.values() if f.owns(name)), None)


def resolve_model(spec: str, dataset: str, seed: int, device: str | None, data=None,
                  data_root: str | None = None) -> tuple[Model, dict[str, Any]]:
    """A zoo name, a training variant (``<zoo name>+<variant>``), a generative model, a GPDNN, or
    ``package.module:function``, as a ``Model`` plus its info; an unknown name gets the zoo's error."""
    family = family_of(spec) or FAMILIES["zoo"]
    return family.load(spec, dataset, seed=seed, device=device, data=data, data_root=data_root)


def model_names() -> list[tuple[str, str, str]]:
    """Every model name a suite can use, with its kind and a description, family by family
    (``package.module:function`` aside)."""
    return [row for family in FAMILIES.values() for row in family.listing()]


def model_checkpoints(name: str, dataset: str = "mnist5k", seed: int = 0) -> list[str]:
    """The manifest names of the shipped checkpoints ``resolve_model(name, dataset, seed, ...)`` reads; a model is
    shipped when all of them are (``is_shipped``)."""
    family = family_of(name)
    if family is None or family.checkpoints is None:
        raise ValueError(f"unknown model {name!r}")
    return family.checkpoints(name, dataset, seed)


def model_error(name: Any) -> str | None:
    """Why ``name`` is not a model a suite can use, or ``None``: a zoo model, a trained variant
    (``<zoo model>+<variant>``), a generative model, a GPDNN, or ``package.module:function``."""
    if not isinstance(name, str):
        return f"models must be strings, got {name!r}"
    family = family_of(name)
    if family is not None:
        return family.validate(name) if family.validate else None
    hints = ""
    for family in sorted(FAMILIES.values(), key=lambda f: f.hint_rank):
        hint = family.describe()
        hints += (" " if hint.startswith("(") else ", ") * bool(hints) + hint
    return f"unknown model {name!r}; {hints}"
