"""The ``[[attacks]]``, ``[[estimators]]`` and ``[[paper]]`` tables of a suite, each validated into its entry."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from advbridge.bridge import ATTACKS, BACKENDS, AttackSpec

from advbridge.evaluations.core.metrics import DEFENSE_METRICS, METRICS
from advbridge.evaluations.estimators.base import ESTIMATORS
from advbridge.evaluations.suites.schema import (ATTACK_KEYS, AUTOENCODER_NAME, ESTIMATOR_KEYS, PAPER_KEYS, Locator,
                                                 SuiteError, check_table)
from advbridge.evaluations.suites.suite import AttackEntry, EstimatorEntry, grid
from advbridge.evaluations.zoo.resolve import model_error

__all__ = ["attack_entry", "check_threats", "estimator_entry", "paper_entry"]


def attack_entry(i: int, raw: Any, loc: Locator, quick: dict[str, Any], systems: Sequence[str] = ()) -> AttackEntry:
    table = f"attacks[{i}]"
    if not isinstance(raw, dict):
        raise SuiteError(f"{loc.where}: [[attacks]] #{i + 1} must be a table")
    check_table(raw, ATTACK_KEYS, loc, table)
    if "name" not in raw:
        raise SuiteError(f"{loc.at(table, None)}: [[attacks]] #{i + 1} needs 'name'")
    name = raw["name"]
    if name not in ATTACKS:
        raise SuiteError(f"{loc.at(table, 'name')}: unknown attack {name!r}; expected one of {sorted(ATTACKS)}")
    params = copy.deepcopy(raw.get("params", {}))
    for key, value in params.items():
        if isinstance(value, list) and not value:
            raise SuiteError(f"{loc.at(table, key)}: empty grid: parameter '{key}' of attack '{name}' lists no value")
    defaults = raw.get("defaults", "shared")
    if defaults not in ("shared", "toolkit"):
        raise SuiteError(f"{loc.at(table, 'defaults')}: defaults must be 'shared' or 'toolkit', got {defaults!r}")
    norm: Any = raw.get("norm")  # a TOML value: checked by AttackSpec below
    n = raw.get("n")
    if quick.get("attack_n") is not None:
        n = min(n, quick["attack_n"]) if n is not None else None
    if n is not None and n < 1:
        raise SuiteError(f"{loc.at(table, 'n')}: n must be a positive integer, got {n}")
    backends = tuple(raw["backends"]) if "backends" in raw else None
    for b in backends or ():
        if b not in BACKENDS:
            raise SuiteError(f"{loc.at(table, 'backends')}: unknown backend {b!r}; expected one of {list(BACKENDS)}")
    try:
        for point in grid(params):  # validates names, types and values of every grid point
            AttackSpec(name, norm, raw.get("targeted", "none"), point)
    except (ValueError, TypeError) as err:
        bad = re.search(r"'(\w+)'", str(err))
        key = bad.group(1) if bad and bad.group(1) in params else ("norm" if "norm" in str(err) else "name")
        raise SuiteError(f"{loc.at(table, key)}: {err}") from err
    label: Any = raw.get("label", name if defaults == "shared" else f"{name} (toolkit defaults)")
    for key in ("num_cpus", "num_gpus"):
        if key in raw and (raw[key] < 0 or (key == "num_cpus" and raw[key] == 0)):
            raise SuiteError(f"{loc.at(table, key)}: {key} must be {'> 0' if key == 'num_cpus' else '>= 0'}")
    threats = raw.get("threats")
    if threats is not None:
        check_threats(threats, loc, table, systems)
    models = raw.get("models")
    for m in models or ():
        error = model_error(m)
        if error:
            raise SuiteError(f"{loc.at(table, 'models')}: {error}")
    return AttackEntry(name, norm, raw.get("targeted", "none"), params, backends, n, defaults, label,
                       float(raw["num_cpus"]) if "num_cpus" in raw else None,
                       float(raw["num_gpus"]) if "num_gpus" in raw else None,
                       tuple(threats) if threats is not None else None, tuple(models) if models else None)


def estimator_entry(i: int, raw: Any, loc: Locator, quick: dict[str, Any]) -> EstimatorEntry:
    table = f"estimators[{i}]"
    if not isinstance(raw, dict):
        raise SuiteError(f"{loc.where}: [[estimators]] #{i + 1} must be a table")
    check_table(raw, ESTIMATOR_KEYS, loc, table)
    name: Any = raw.get("name")
    if name not in ESTIMATORS:
        raise SuiteError(f"{loc.at(table, 'name')}: unknown estimator {name!r}; expected one of {sorted(ESTIMATORS)}")
    error = ESTIMATORS[name].validate(raw.get("params", {}))
    if error:
        raise SuiteError(f"{loc.at(table, 'params')}: estimator {name!r}: {error}")
    n = raw.get("n")
    if quick.get("n") is not None and n is not None:
        n = min(n, quick["n"])
    if n is not None and n < 1:
        raise SuiteError(f"{loc.at(table, 'n')}: n must be a positive integer, got {n}")
    models = tuple(raw["models"]) if "models" in raw else None
    for m in models or ():
        error = model_error(m)
        if error:
            raise SuiteError(f"{loc.at(table, 'models')}: {error}")
    label: Any = raw.get("label", name)
    return EstimatorEntry(name, models, n, dict(raw.get("params", {})), label)


def check_threats(threats: list, loc: Locator, table: str, systems: Sequence[str] = ()) -> None:
    if not threats:
        raise SuiteError(f"{loc.at(table, 'threats')}: empty grid: 'threats' lists no threat")
    for threat in threats:
        kind, _, target = str(threat).partition(":")
        if kind not in ("oblivious", "adaptive") or (kind == "oblivious" and target) or \
                (target and not AUTOENCODER_NAME.match(target) and target not in systems):
            raise SuiteError(f"{loc.at(table, 'threats')}: unknown threat {threat!r}; expected 'oblivious', "
                             "'adaptive', 'adaptive:<autoencoder>' (I, II, cifar, D0, D1, ..., invert, alphagan) or "
                             f"'adaptive:<system>' (one of {list(systems)})")


def paper_entry(i: int, raw: Any, loc: Locator, systems: Sequence[str] = ()) -> dict[str, Any]:
    table = f"paper[{i}]"
    if not isinstance(raw, dict):
        raise SuiteError(f"{loc.where}: [[paper]] #{i + 1} must be a table")
    check_table(raw, PAPER_KEYS, loc, table)
    for key in ("attack", "metric", "value", "source"):
        if key not in raw:
            raise SuiteError(f"{loc.at(table, None)}: [[paper]] #{i + 1} needs '{key}'")
    metric, _, system = raw["metric"].partition("[")
    if metric not in METRICS + DEFENSE_METRICS or (system and system.rstrip("]") not in systems) or \
            (metric in DEFENSE_METRICS and not system):
        raise SuiteError(f"{loc.at(table, 'metric')}: unknown metric {raw['metric']!r}; expected one of "
                         f"{list(METRICS)} or <defense metric>[<system>] with a metric of {list(DEFENSE_METRICS)} "
                         f"and a system of {list(systems)}")
    return dict(raw)
