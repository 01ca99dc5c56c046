"""Reading a suite file: TOML, then every table validated (with the offending key and its line) before any work.

The steps run in a fixed order, so a file with several problems always reports the same one first. The schema is
documented in docs/suites.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from advbridge.bridge import BACKENDS

from advbridge.evaluations.core.metrics import METRICS
from advbridge.evaluations.data.datasets import DATASETS
from advbridge.evaluations.suites.defenses import defense_systems
from advbridge.evaluations.suites.entries import attack_entry, estimator_entry, paper_entry
from advbridge.evaluations.suites.schema import (DATA_KEYS, DEFENSE_KEYS, POWER_LAW_KEYS, QUICK_KEYS, SUITE_KEYS,
                                                 TOP_KEYS, Locator, SuiteError, check_keys, read_table)
from advbridge.evaluations.suites.suite import Suite
from advbridge.evaluations.zoo.resolve import model_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["load_suite"]

#: ``[data]`` before the file's own values.
DATA_DEFAULTS = {"dataset": "mnist5k", "split": "test", "n": 100, "seed": 0, "correct_only": False}


def load_suite(source: str | Path, *, quick: bool = False, text: str | None = None) -> Suite:
    """Parse and validate a suite file (or ``text``); ``quick`` applies its ``[quick]`` table.

    :param source: The file's path, or the suite's name when ``text`` is given.
    :param quick: Apply the ``[quick]`` table: fewer inputs and models, capped parameters.
    :param text: The suite's TOML text, instead of reading ``source``.
    :raises SuiteError: (a ``ValueError``) naming the file, the line and the key of the first problem found.
    """
    path, text, doc, loc = _read(source, text)
    suite_t, data_t, quick_t = _top_tables(doc, loc)
    data = _data(data_t, loc)
    models = _models(suite_t, quick_t if quick else {}, loc)
    backends, metrics = _backends_and_metrics(suite_t, loc)
    caps = _caps(quick_t, loc) if quick else {}
    if quick and "n" in quick_t:
        data["n"] = min(data["n"], quick_t["n"])
    defense = read_table(doc, "defense", DEFENSE_KEYS, loc) if "defense" in doc else {}
    defenses = defense_systems(doc, defense, loc)
    systems = [d["name"] for d in defenses]
    raw_attacks = doc.get("attacks", [])
    if not isinstance(raw_attacks, list) or (not raw_attacks and not doc.get("estimators")):
        raise SuiteError(f"{loc.where}: a suite needs at least one [[attacks]] or [[estimators]] table")
    attacks = [attack_entry(i, a, loc, quick_t if quick else {}, systems) for i, a in enumerate(raw_attacks)]
    paper = [paper_entry(i, p, loc, systems) for i, p in enumerate(doc.get("paper", []))]
    estimators = [estimator_entry(i, e, loc, quick_t if quick else {}) for i, e in enumerate(doc.get("estimators", []))]
    power_law = _power_law(doc, loc)
    suite = Suite(name=suite_t["name"], path=path, text=text, description=suite_t.get("description", ""),
                  seed=suite_t.get("seed", 0), models=list(models), backends=backends, metrics=metrics, data=data,
                  attacks=attacks, paper=paper, data_note=suite_t.get("data_note", ""), quick=quick, caps=caps,
                  num_cpus=float(suite_t.get("num_cpus", 1.0)), num_gpus=float(suite_t.get("num_gpus", 0.0)),
                  defense=defense, defenses=defenses, estimators=estimators, power_law=power_law)
    for key, value in (("num_cpus", suite.num_cpus), ("num_gpus", suite.num_gpus)):
        if value < 0 or (key == "num_cpus" and value == 0):
            raise SuiteError(f"{loc.at('suite', key)}: {key} must be {'> 0' if key == 'num_cpus' else '>= 0'}")
    if not suite.cells() and not suite.estimator_cells():
        raise SuiteError(f"{loc.where}: the suite expands to no cell (no backend implements its attacks)")
    return suite


def _read(source: str | Path, text: str | None) -> tuple[Path | None, str, dict[str, Any], Locator]:
    """The file's path (``None`` for ``text``), its text, its TOML document and a locator of its keys."""
    path = Path(source) if text is None else None
    if path is not None:
        if not path.exists():
            raise SuiteError(f"suite file not found: {path}")
        text = path.read_text()
    assert text is not None
    where = str(path) if path else str(source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{where}: invalid TOML: {err}") from err
    return path, text, doc, Locator(text, where)


def _top_tables(doc: dict[str, Any], loc: Locator) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ``[suite]``, ``[data]`` and ``[quick]`` tables, their keys and types checked."""
    check_keys(doc, TOP_KEYS, loc, None)
    for table in ("suite", "data"):
        if table not in doc:
            raise SuiteError(f"{loc.where}: missing table [{table}]")
    suite_t = read_table(doc, "suite", SUITE_KEYS, loc)
    data_t = read_table(doc, "data", DATA_KEYS, loc)
    quick_t = read_table(doc, "quick", QUICK_KEYS, loc) if "quick" in doc else {}
    for key in ("name", "models"):
        if key not in suite_t:
            raise SuiteError(f"{loc.at('suite', key)}: [suite] needs '{key}'")
    return suite_t, data_t, quick_t


def _data(data_t: dict[str, Any], loc: Locator) -> dict[str, Any]:
    data = {**DATA_DEFAULTS, **data_t}
    if data["dataset"] not in DATASETS:
        raise SuiteError(f"{loc.at('data', 'dataset')}: unknown dataset {data['dataset']!r}; expected one of "
                         f"{list(DATASETS)}")
    if data["split"] not in ("train", "val", "test"):
        raise SuiteError(f"{loc.at('data', 'split')}: split must be 'train', 'val' or 'test'")
    if data["n"] < 1:
        raise SuiteError(f"{loc.at('data', 'n')}: n must be a positive integer, got {data['n']}")
    return data


def _models(suite_t: dict[str, Any], quick_t: dict[str, Any], loc: Locator) -> list[str]:
    models = quick_t.get("models", suite_t["models"])
    if not models:
        raise SuiteError(f"{loc.at('suite', 'models')}: empty grid: 'models' lists no model")
    for m in models:
        error = model_error(m)
        if error:
            raise SuiteError(f"{loc.at('suite', 'models')}: {error}")
    return models


def _backends_and_metrics(suite_t: dict[str, Any], loc: Locator) -> tuple[tuple[str, ...], tuple[str, ...]]:
    backends = tuple(suite_t.get("backends", ["art", "foolbox"]))
    for b in backends:
        if b not in BACKENDS:
            raise SuiteError(f"{loc.at('suite', 'backends')}: unknown backend {b!r}; expected one of {list(BACKENDS)}")
    if not backends:
        raise SuiteError(f"{loc.at('suite', 'backends')}: empty grid: 'backends' is empty")
    metrics = tuple(suite_t.get("metrics", METRICS))
    for m in metrics:
        if m not in METRICS:
            raise SuiteError(f"{loc.at('suite', 'metrics')}: unknown metric {m!r}; expected some of {list(METRICS)}")
    return backends, metrics


def _caps(quick_t: dict[str, Any], loc: Locator) -> dict[str, Any]:
    """``[quick].params``: upper bounds on the attacks' numeric parameters (steps, restarts, ...)."""
    caps = dict(quick_t.get("params", {}))
    for key, value in caps.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SuiteError(f"{loc.at('quick', key)}: quick cap '{key}' must be a number, got {value!r}")
    return caps


def _power_law(doc: dict[str, Any], loc: Locator) -> dict[str, Any]:
    power_law = read_table(doc, "power_law", POWER_LAW_KEYS, loc) if "power_law" in doc else {}
    for norm, value in power_law.get("max_eps", {}).items():
        if norm not in ("linf", "l2", "l1", "l0") or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or value <= 0:
            raise SuiteError(f"{loc.at('power_law', 'max_eps')}: max_eps maps a norm (linf, l2, l1, l0) to a positive "
                             f"ε, got {norm} = {value!r}")
    return power_law
