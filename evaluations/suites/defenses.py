"""The ``[defense]`` table and the ``[[defenses]]`` systems of a suite: recipes, detectors, reformers, threats."""

from __future__ import annotations

import copy
import re
from typing import Any

from advbridge.evaluations.suites.entries import check_threats
from advbridge.evaluations.suites.schema import AUTOENCODER_NAME, SYSTEM_KEYS, Locator, SuiteError, check_table
from advbridge.evaluations.systems.recipes import (AutoencoderRecipe, CLASSIFIERS, DiverseRecipe, EnhancedRecipe,
                                                   ProjectionSettings, validate_detector, validate_projection,
                                                   validate_recipe)
from advbridge.evaluations.zoo.generative import GeneratorRecipe

__all__ = ["defense_systems"]


def defense_systems(doc: dict[str, Any], defense: dict[str, Any], loc: Locator) -> list[dict[str, Any]]:
    """Validate ``[defense]`` and the ``[[defenses]]`` systems (names, detectors, autoencoders, threats)."""
    raw = doc.get("defenses", [])
    if defense and not raw:
        raise SuiteError(f"{loc.at('defense', None)}: [defense] needs at least one [[defenses]] system")
    for key, recipe in (("autoencoder", AutoencoderRecipe), ("diverse", DiverseRecipe),
                        ("generator", GeneratorRecipe), ("projection", ProjectionSettings),
                        ("enhanced", EnhancedRecipe)):
        unknown = set(defense.get(key, {})) - set(recipe.__dataclass_fields__)
        if unknown:
            raise SuiteError(f"{loc.at('defense', key)}: unknown {key} field(s) {sorted(unknown)}; expected some of "
                             f"{sorted(recipe.__dataclass_fields__)}")
        error = validate_recipe(recipe, defense.get(key, {}))
        if error:
            raise SuiteError(f"{loc.at('defense', key)}: [defense].{key}: {error}")
    error = validate_projection(defense.get("projection", {}))
    if error:
        raise SuiteError(f"{loc.at('defense', 'projection')}: [defense].projection: {error}")
    systems: list[dict[str, Any]] = []
    for i, cfg in enumerate(raw if isinstance(raw, list) else [raw]):
        table = f"defenses[{i}]"
        if not isinstance(cfg, dict):
            raise SuiteError(f"{loc.where}: [[defenses]] #{i + 1} must be a table")
        check_table(cfg, SYSTEM_KEYS, loc, table)
        name = cfg.get("name")
        if not name or not re.match(r"^[\w.-]+$", name):
            raise SuiteError(f"{loc.at(table, 'name')}: [[defenses]] #{i + 1} needs a name of letters, digits, _.-")
        if name in {s["name"] for s in systems}:
            raise SuiteError(f"{loc.at(table, 'name')}: duplicate defense name {name!r}")
        if "randomize" in cfg:
            if "detectors" in cfg or "reformer" in cfg:
                raise SuiteError(f"{loc.at(table, 'randomize')}: a randomized system lists only its members")
            known = [s["name"] for s in systems]
            missing = [m for m in cfg["randomize"] if m not in known]
            nested = [s["name"] for s in systems if s["name"] in cfg["randomize"] and "randomize" in s]
            if nested:
                raise SuiteError(f"{loc.at(table, 'randomize')}: randomize may list only systems with detectors or a "
                                 f"reformer, not the randomized system(s) {nested}")
            if len(cfg["randomize"]) < 2 or missing:
                raise SuiteError(f"{loc.at(table, 'randomize')}: randomize must list at least 2 systems defined above"
                                 f" it; unknown: {missing}" if missing else
                                 f"{loc.at(table, 'randomize')}: randomize must list at least 2 systems")
        else:
            reformer = cfg.get("reformer", "none")
            if reformer != "none" and not AUTOENCODER_NAME.match(reformer):
                raise SuiteError(f"{loc.at(table, 'reformer')}: reformer must be 'none', an autoencoder name "
                                 f"(I, II, cifar, D0, ..., alphagan) or 'invert', got {reformer!r}")
            detectors = cfg.get("detectors", [])
            if not detectors and reformer == "none":
                raise SuiteError(f"{loc.at(table, None)}: defense {name!r} needs detectors or a reformer")
            for detector in detectors:
                error = validate_detector(detector, loc.at(table, "detectors"))
                if error is None and not AUTOENCODER_NAME.match(detector["ae"]):
                    error = f"{loc.at(table, 'detectors')}: unknown autoencoder {detector['ae']!r}"
                if error:
                    raise SuiteError(error)
            if cfg.get("classifier", "base") not in CLASSIFIERS:
                raise SuiteError(f"{loc.at(table, 'classifier')}: classifier must be one of {list(CLASSIFIERS)}, "
                                 f"got {cfg['classifier']!r}")
        systems.append(copy.deepcopy(cfg))
    if "threats" in defense:
        check_threats(defense["threats"], loc, "defense", [s["name"] for s in systems])
    return systems
