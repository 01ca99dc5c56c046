"""A validated suite and its expansion into cells (attack cells and estimator cells).

:func:`advbridge.evaluations.suites.load.load_suite` reads and validates a suite file into a :class:`Suite`; the
schema is in :mod:`.schema` and documented in docs/suites.md.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advbridge.bridge import ATTACKS, AttackSpec, backend_unavailable

from advbridge.evaluations.core.keys import jsonable
from advbridge.evaluations.systems.recipes import resolved_defense_config

logger = logging.getLogger(__name__)

__all__ = ["AttackEntry", "Cell", "EstimatorCell", "EstimatorEntry", "Suite", "grid"]


@dataclass(frozen=True)
class AttackEntry:
    """One ``[[attacks]]`` table: a spec template whose list-valued params expand into a grid."""

    name: str
    norm: str | None
    targeted: str
    params: dict[str, Any]
    backends: tuple[str, ...] | None
    n: int | None
    defaults: str  # "shared" or "toolkit" (each toolkit's own defaults)
    label: str
    num_cpus: float | None = None
    num_gpus: float | None = None
    threats: tuple[str, ...] | None = None  # overrides [defense].threats for this attack
    models: tuple[str, ...] | None = None   # overrides [suite].models for this attack


@dataclass(frozen=True)
class EstimatorEntry:
    """One ``[[estimators]]`` table: an estimator (``hardness``, ``meanfield``) run once per model."""

    name: str
    models: tuple[str, ...] | None
    n: int | None
    params: dict[str, Any]
    label: str


@dataclass(frozen=True)
class EstimatorCell:
    """One estimator on one model and data slice: a unit of work stored like an attack cell."""

    suite: str
    model: str
    name: str
    n: int
    params: tuple[tuple[str, Any], ...]
    label: str

    def config(self, suite: "Suite", versions: dict[str, str]) -> dict[str, Any]:
        """Everything that decides the estimate, which is what its key hashes."""
        return {"estimator": self.name, "model": self.model, "params": dict(self.params), "seed": suite.seed,
                "data": {**suite.data, "n": self.n}, "versions": versions}


@dataclass(frozen=True)
class Cell:
    """One unit of work: a model, a dataset slice, one attack setting and one backend."""

    suite: str
    model: str
    spec: AttackSpec
    backend: str
    label: str
    n: int
    defaults: str
    point: tuple[tuple[str, Any], ...] = ()
    threat: str = "none"  # "none" (no defense), "oblivious", "adaptive" or "adaptive:<ae>"
    num_cpus: float = 1.0  # executor resources: they never change a cell's numbers, so not in its key
    num_gpus: float = 0.0

    @property
    def setting(self) -> dict[str, Any]:
        """The grid point this cell runs (the suite's own parameter values, before toolkit defaults)."""
        return dict(self.point)

    def config(self, suite: "Suite", versions: dict[str, str]) -> dict[str, Any]:
        """Everything that decides this cell's numbers, which is what its key hashes."""
        config = {"model": self.model, "spec": self.spec.to_dict(),
                  "resolved": jsonable(self.spec.resolved_params()), "backend": self.backend, "seed": suite.seed,
                  "data": {**suite.data, "n": self.n}, "defaults": self.defaults, "versions": versions}
        if self.threat != "none":  # keeps the keys of suites without defenses unchanged
            config.update(threat=self.threat, defense=suite.defense, defenses=suite.defenses,
                          autoencoders=resolved_defense_config(suite.defense, suite.defenses))
        return config


@dataclass
class Suite:
    """A validated suite."""

    name: str
    path: Path | None
    text: str
    description: str
    seed: int
    models: list[str]
    backends: tuple[str, ...]
    metrics: tuple[str, ...]
    data: dict[str, Any]
    attacks: list[AttackEntry]
    paper: list[dict[str, Any]] = field(default_factory=list)
    data_note: str = ""
    quick: bool = False
    caps: dict[str, float] = field(default_factory=dict)  # --quick caps on numeric parameters (e.g. steps)
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    defense: dict[str, Any] = field(default_factory=dict)       # the [defense] table
    defenses: list[dict[str, Any]] = field(default_factory=list)  # the [[defenses]] systems
    estimators: list[EstimatorEntry] = field(default_factory=list)  # the [[estimators]] tables
    power_law: dict[str, Any] = field(default_factory=dict)       # the [power_law] table (fits in the report)

    def estimator_cells(self) -> list[EstimatorCell]:
        """Each estimator on each of its models (the suite's by default)."""
        return [EstimatorCell(self.name, model, e.name, e.n if e.n is not None else self.data["n"],
                              tuple(sorted(e.params.items())), e.label)
                for e in self.estimators for model in (e.models or self.models)]

    @property
    def threats(self) -> tuple[str, ...]:
        if not self.defenses:
            return ("none",)
        return tuple(self.defense.get("threats", ["oblivious", "adaptive"]))

    def cells(self) -> list[Cell]:
        """Expand models × attack grids × backends into cells (backends lacking an attack are skipped, and so are those
        not installed here, with a warning that says what to install)."""
        out = []
        missing = {b: why for b in dict.fromkeys(self.backends + tuple(b for e in self.attacks for b in e.backends or ()))
                   if (why := backend_unavailable(b)) is not None}
        for why in missing.values():
            logger.warning("suite %s: skipping its cells of %s", self.name, why)
        for model in dict.fromkeys(self.models + [m for e in self.attacks for m in e.models or ()]):
            for entry in self.attacks:
                if model not in (entry.models or self.models):
                    continue
                attack = ATTACKS[entry.name]
                norm = entry.norm or attack.default_norm
                backends = [b for b in (entry.backends or self.backends) if b in attack.backends(norm) and b not in missing]
                for point in grid(entry.params):
                    for backend in backends:
                        params = dict(point)
                        if entry.defaults == "toolkit":
                            params = _toolkit_params(attack, backend, norm, params)
                        params = _apply_caps(attack, norm, params, self.caps)
                        spec = AttackSpec(entry.name, norm, entry.targeted, params)
                        n = entry.n if entry.n is not None else self.data["n"]
                        for threat in (entry.threats if entry.threats and self.defenses else self.threats):
                            out.append(Cell(self.name, model, spec, backend, entry.label, n, entry.defaults,
                                            tuple(sorted(point.items())), threat,
                                            entry.num_cpus if entry.num_cpus is not None else self.num_cpus,
                                            entry.num_gpus if entry.num_gpus is not None else self.num_gpus))
        return out


def _toolkit_params(attack, backend: str, norm: str, params: dict[str, Any]) -> dict[str, Any]:
    """Replace shared defaults by ``backend``'s own defaults (keeping explicit values and what it cannot honour)."""
    own = attack.toolkit_defaults.get(backend, {})
    resolved = attack.resolve(norm, params)
    if callable(own):
        own = own(norm, resolved)
    allowed = attack.param_defaults(norm)
    merged = {k: v for k, v in own.items() if k in allowed and k not in params}
    merged.update(params)
    return merged


def _apply_caps(attack, norm: str, params: dict[str, Any], caps: dict[str, float]) -> dict[str, Any]:
    """Lower each capped parameter the attack has to at most the cap (never raise it)."""
    if not caps:
        return params
    resolved = attack.resolve(norm, params)
    out = dict(params)
    for key, cap in caps.items():
        if key in resolved and key != "eps" and isinstance(resolved[key], (int, float)) and resolved[key] > cap:
            out[key] = type(resolved[key])(cap)
    return out


def grid(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the list-valued ``params`` (a scalar is a one-point axis), in the order they are given."""
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in params.items()}
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]
