"""`AttackSpec`: one attack described once, in canonical names, runnable on any backend that has it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .attacks import NORMS, TARGET_MODES, AttackDef, get_attack


@dataclass(frozen=True)
class AttackSpec:
    """An attack in canonical terms.

    :param name: Registered attack name (``advbridge attacks`` lists them).
    :param norm: ``linf``, ``l2``, ``l1`` or ``l0``; the attack's first norm when ``None``.
    :param targeted: ``"none"``, ``"least_likely"``, ``"random"`` or a sequence of explicit target labels.
    :param params: Canonical parameters; anything not given takes the shared default.
    """

    name: str
    norm: str = None  # type: ignore[assignment]  # None: the attack's first norm, set in __post_init__
    targeted: str | tuple[int, ...] = "none"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        attack = get_attack(self.name)
        norm = attack.default_norm if self.norm is None else self.norm
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {list(NORMS)}")
        if norm not in attack.norms:
            raise ValueError(f"attack '{self.name}' does not support norm '{norm}'; supported: {list(attack.norms)}")
        object.__setattr__(self, "norm", norm)
        object.__setattr__(self, "targeted", _normalise_target(attack, self.targeted))
        if not isinstance(self.params, Mapping):
            raise TypeError(f"params must be a mapping of canonical parameter names, got {type(self.params).__name__}")
        params = dict(self.params)
        attack.resolve(norm, params)  # raises on unknown or ill-typed parameters
        object.__setattr__(self, "params", MappingProxyType(params))

    @property
    def definition(self) -> AttackDef:
        return get_attack(self.name)

    @property
    def is_targeted(self) -> bool:
        return self.targeted != "none"

    def resolved_params(self) -> dict[str, Any]:
        """The full parameter set the backends receive: shared defaults, user values, derived values."""
        return self.definition.resolve(self.norm, self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "norm": self.norm,
                "targeted": list(self.targeted) if isinstance(self.targeted, tuple) else self.targeted,
                "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AttackSpec":
        unknown = set(data) - {"name", "norm", "targeted", "params"}
        if unknown:
            raise ValueError(f"unknown AttackSpec key(s) {sorted(unknown)}; expected name, norm, targeted, params")
        if "name" not in data:
            raise ValueError("AttackSpec needs a 'name'")
        targeted = data.get("targeted", "none")
        if isinstance(targeted, list):
            targeted = tuple(targeted)
        return cls(data["name"], data.get("norm"), targeted, data.get("params", {}))  # type: ignore[arg-type]

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    def __str__(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        target = "" if self.targeted == "none" else f", targeted={self.targeted if isinstance(self.targeted, str) else 'labels'}"
        return f"{self.name}[{self.norm}{target}]({extra})"


def _normalise_target(attack: AttackDef, targeted: Any) -> str | tuple[int, ...]:
    if isinstance(targeted, str):
        if targeted not in TARGET_MODES:
            raise ValueError(f"targeted must be one of {list(TARGET_MODES)} or a sequence of target labels, "
                             f"got {targeted!r}")
        mode: str | tuple[int, ...] = targeted
    elif isinstance(targeted, (Sequence, np.ndarray)) and not isinstance(targeted, (bytes, bytearray)):
        labels = np.asarray(targeted)
        if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError("targeted labels must be a non-empty 1-D sequence of integer class indices")
        mode = tuple(int(t) for t in labels)
    else:
        raise TypeError(f"targeted must be a mode string or a sequence of labels, got {type(targeted).__name__}")
    if attack.fixed_target is not None:
        if mode == "none":
            return attack.fixed_target
        if mode != attack.fixed_target:
            raise ValueError(f"attack '{attack.name}' always targets '{attack.fixed_target}', got targeted={mode!r}")
    if attack.requires_target and mode == "none":
        raise ValueError(f"attack '{attack.name}' is targeted only; pass targeted='random', 'least_likely' or labels")
    if mode != "none" and not attack.targeted_backends:
        raise ValueError(f"attack '{attack.name}' has no targeted mode on any backend; use targeted='none'")
    return mode
