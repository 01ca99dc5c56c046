"""`AttackDef`: one attack's canonical parameters, shared defaults and its translation to each backend.

Each attack lives in its own module (``fgsm.py``, ``cw.py``, …) holding one ``AttackDef``. The ART and
Foolbox mappings sit side by side there, so the parameter correspondence of toolkits.md §1 is read and
reviewed in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..registry import Registry

BACKENDS = ("art", "foolbox", "native", "advlib")
NORMS = ("linf", "l2", "l1", "l0")
TARGET_MODES = ("none", "least_likely", "random")


@dataclass(frozen=True)
class BuildContext:
    """What a backend builder needs to instantiate a toolkit attack."""

    model: Any  # bridge.Model
    norm: str
    params: Mapping[str, Any]
    targeted: bool
    batch_size: int


@dataclass(frozen=True)
class KnownCause:
    """A measured toolkit discrepancy: which crossval flags it explains, why, and where upstream."""

    flags: frozenset[str]
    cause: str
    upstream: tuple[str, ...] = ()
    norms: frozenset[str] | None = None  # None: every norm


@dataclass(frozen=True)
class AttackDef:
    """Canonical description of one attack.

    :param name: Canonical name (``fgsm``, ``cw``, …).
    :param summary: One line for ``advbridge attacks``.
    :param norms: Each supported norm mapped to the backends that run it.
    :param defaults: Shared canonical defaults, identical for every backend.
    :param norm_defaults: Per-norm additions or overrides of ``defaults``.
    :param targeted_backends: Backends that support targeted modes.
    :param requires_target: The attack is always targeted (JSMA).
    :param fixed_target: The only target mode allowed (``least_likely`` for step_ll).
    :param minimization: Returns minimal perturbations rather than working at a fixed budget.
    :param stochastic: Draws random numbers in every run (Square, HopSkipJump, Boundary, the noise attacks). Such an
        attack runs one input at a time, every RNG seeded from the run's seed and the input itself
        (``bridge.run.input_seed``), so an input's result does not depend on its batch, its position or the batch
        size, and the same seed gives the same numbers. Crossval compares stochastic attacks statistically.
    :param same_algorithm: Both toolkits implement the same deterministic algorithm, so outputs must
        match to 1e-5 when no random start is used.
    :param derive: Fills derived parameters (e.g. an absolute step size from ``eps``).
    :param build: Backend name mapped to its builder.
    :param toolkit_defaults: Backend mapped to that toolkit's own defaults, in canonical names (or a function
        of ``(norm, params)`` returning them, where a default is relative to eps).
    :param unsupported: Backend mapped to ``{param: the only value it can honour}``.
    :param known_causes: Measured discrepancies that explain crossval flags.
    :param untargeted_only: ``(backend, norm)`` pairs among the targeted backends whose targeted mode is broken
        upstream, mapped to the reason given in the ``ValueError``.
    """

    name: str
    summary: str
    norms: Mapping[str, tuple[str, ...]]
    defaults: Mapping[str, Any]
    norm_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    targeted_backends: frozenset[str] = frozenset()
    requires_target: bool = False
    fixed_target: str | None = None
    minimization: bool = False
    stochastic: bool = False
    same_algorithm: bool = False
    derive: Callable[[str, dict[str, Any]], None] | None = None
    build: Mapping[str, Callable[[BuildContext], Any]] = field(default_factory=dict)
    toolkit_defaults: Mapping[str, Mapping[str, Any] | Callable[[str, Mapping[str, Any]], Mapping[str, Any]]] = \
        field(default_factory=dict)
    unsupported: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    known_causes: tuple[KnownCause, ...] = ()
    untargeted_only: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def can_target(self, backend: str, norm: str) -> bool:
        """Whether ``backend`` runs this attack targeted at ``norm``."""
        return backend in self.targeted_backends and (backend, norm) not in self.untargeted_only

    @property
    def default_norm(self) -> str:
        return next(iter(self.norms))

    def backends(self, norm: str | None = None) -> tuple[str, ...]:
        """Backends able to run this attack at ``norm`` (every norm when ``None``)."""
        if norm is not None:
            return tuple(self.norms.get(norm, ()))
        seen: list[str] = []
        for names in self.norms.values():
            seen.extend(b for b in names if b not in seen)
        return tuple(seen)

    def param_defaults(self, norm: str) -> dict[str, Any]:
        """Shared defaults at ``norm`` (before derivation)."""
        merged = dict(self.defaults)
        merged.update(self.norm_defaults.get(norm, {}))
        return merged

    def resolve(self, norm: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``params`` over the shared defaults and derive dependent values; unknown keys raise."""
        merged = self.param_defaults(norm)
        unknown = sorted(set(params) - set(merged))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for attack '{self.name}' at norm '{norm}'; "
                             f"known: {sorted(merged)}")
        for key, value in params.items():
            merged[key] = _coerce(self.name, key, value, merged[key])
        if self.derive is not None:
            self.derive(norm, merged)
        return merged

    def check_backend(self, backend: str, norm: str, params: Mapping[str, Any], targeted: bool) -> None:
        """Raise ``ValueError`` when ``backend`` cannot honour this norm, target mode or a parameter value."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend '{backend}'; expected one of {list(BACKENDS)}")
        if backend not in self.backends(norm):
            raise ValueError(f"backend '{backend}' does not implement attack '{self.name}' at norm '{norm}'; "
                             f"backends for it: {list(self.backends(norm))}")
        if targeted and backend not in self.targeted_backends:
            raise ValueError(f"backend '{backend}' cannot run attack '{self.name}' targeted; "
                             f"targeted backends: {sorted(self.targeted_backends) or 'none'}")
        if targeted and (backend, norm) in self.untargeted_only:
            raise ValueError(f"targeted: backend '{backend}' cannot run attack '{self.name}' at norm '{norm}' "
                             f"targeted: {self.untargeted_only[(backend, norm)]}")
        for key, only in self.unsupported.get(backend, {}).items():
            if key in params and params[key] != only:
                raise ValueError(f"parameter '{key}'={params[key]!r} cannot be honoured by backend '{backend}' "
                                 f"for attack '{self.name}' (it supports only {key}={only!r})")

    def differing_toolkit_defaults(self, backend: str, norm: str, params: Mapping[str, Any]) -> dict[str, tuple]:
        """Parameters whose value here differs from ``backend``'s own default: ``{param: (toolkit, shared)}``."""
        own = self.toolkit_defaults.get(backend, {})
        if callable(own):
            own = own(norm, params)
        out = {}
        for key, native in own.items():
            if key in params and not _same(params[key], native):
                out[key] = (native, params[key])
        return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0.0))
    return a == b


def _coerce(attack: str, key: str, value: Any, default: Any) -> Any:
    """Cast ``value`` to the type of the default, raising a clear error when it cannot be.

    Every numeric parameter (a float default, or a ``None`` default standing for "derived", such as
    ``step_size``) must be finite: NaN or ±inf is a ``ValueError`` naming the parameter, since ART would
    silently return the input and Foolbox NaN.
    """
    if default is None:
        if value is None:
            return value
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"parameter '{key}' of attack '{attack}' must be a number, got {value!r}")
        _finite(attack, key, value)
        return int(value) if isinstance(value, (int, np.integer)) else float(value)
    if isinstance(default, bool):
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise TypeError(f"parameter '{key}' of attack '{attack}' must be a bool, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if isinstance(value, (float, np.floating)):
            if float(value).is_integer():
                return int(value)
            _finite(attack, key, value)
        raise TypeError(f"parameter '{key}' of attack '{attack}' must be an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(f"parameter '{key}' of attack '{attack}' must be a number, got {value!r}")
        try:
            float(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"parameter '{key}' of attack '{attack}' must be a number, got {value!r}") from err
        return _finite(attack, key, value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TypeError(f"parameter '{key}' of attack '{attack}' must be a string, got {value!r}")
        return value
    return value


def _finite(attack: str, key: str, value: Any) -> float:
    """``value`` (a number) as a float; ``ValueError`` naming the parameter for NaN or ±inf."""
    out = float(value)
    if not np.isfinite(out):
        raise ValueError(f"parameter '{key}' of attack '{attack}' must be a finite number, got {value!r}")
    return out


def require_positive(attack: str, params: Mapping[str, Any], *keys: str) -> None:
    """Raise ``ValueError`` unless each of ``keys`` is > 0."""
    for key in keys:
        if params[key] is not None and params[key] <= 0:
            raise ValueError(f"parameter '{key}' of attack '{attack}' must be > 0, got {params[key]}")


def require_choice(attack: str, params: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``params[key]`` is one of ``choices``."""
    if params[key] not in choices:
        raise ValueError(f"parameter '{key}' of attack '{attack}' must be one of {list(choices)}, "
                         f"got {params[key]!r}")


def art_norm(norm: str) -> float | int:
    """ART's spelling of a canonical norm."""
    return {"linf": np.inf, "l2": 2, "l1": 1}[norm]


ATTACKS: Registry[AttackDef] = Registry("attack", "advbridge.bridge.attacks")
"""Every attack, one module each in this package, in the order ``advbridge attacks`` lists them (their ``rank``)."""
