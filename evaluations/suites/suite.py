"""Suite files: TOML schema, validation with the offending key and line, and expansion into cells.

A suite is validated completely before any work starts. The schema is documented in docs/suites.md.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advbridge.bridge import ATTACKS, BACKENDS, AttackSpec

from advbridge.evaluations.data.datasets import DATASETS
from advbridge.evaluations.zoo.resolve import model_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Attack-cell metrics (definitions: ``runner.attack_metrics`` and ``bridge.result.judge_success``). Success counts
#: only inputs the model classifies correctly when clean; ``already_misclassified`` counts the others, which robust
#: (adversarial) accuracy counts as wrong. A suite's data is not filtered to correct inputs unless
#: ``[data] correct_only = true``: the definition makes the filter unnecessary for the rates.
METRICS = ("clean_accuracy", "adversarial_accuracy", "error_rate", "success_rate", "mean_confidence_on_errors",
           "median_l0", "median_l1", "median_l2", "median_linf", "mean_l2", "distortion_all",
           "distortion_successful", "already_misclassified")
TOP_KEYS = {"suite", "data", "quick", "attacks", "paper", "defense", "defenses", "estimators", "power_law"}
SUITE_KEYS = {"name": str, "description": str, "seed": int, "models": list, "backends": list, "metrics": list,
              "data_note": str, "num_cpus": float, "num_gpus": float}
DATA_KEYS = {"dataset": str, "split": str, "n": int, "seed": int, "correct_only": bool}
QUICK_KEYS = {"n": int, "models": list, "params": dict, "attack_n": int}
ATTACK_KEYS = {"name": str, "norm": str, "targeted": str, "params": dict, "backends": list, "n": int,
               "defaults": str, "label": str, "num_cpus": float, "num_gpus": float, "threats": list, "models": list}
ESTIMATOR_KEYS = {"name": str, "models": list, "n": int, "params": dict, "label": str}
POWER_LAW_KEYS = {"max_eps": dict, "n_boot": int, "attacks": list}
PAPER_KEYS = {"model": str, "attack": str, "norm": str, "params": dict, "metric": str, "value": float,
              "source": str, "note": str, "threat": str, "label": str}
DEFENSE_KEYS = {"threats": list, "reformer": str, "fit_n": int, "autoencoder": dict, "diverse": dict,
                "generator": dict, "projection": dict, "enhanced": dict}
SYSTEM_KEYS = {"name": str, "reformer": str, "detectors": list, "randomize": list, "query_size": int,
               "description": str, "classifier": str}
#: Per-system metrics recorded for every cell of a suite with [[defenses]] (``name[system]`` in the records).
DEFENSE_METRICS = ("accuracy_with_defense", "accuracy_detector_only", "accuracy_reformer_only", "detection_rate",
                   "clean_accuracy_with_defense", "false_positive_rate")
AUTOENCODER_NAME = re.compile(r"^(I|II|cifar|D\d+|alphagan|invert)$")


class SuiteError(ValueError):
    """A suite file problem, reported with the key and its line."""


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
                  "resolved": _jsonable(self.spec.resolved_params()), "backend": self.backend, "seed": suite.seed,
                  "data": {**suite.data, "n": self.n}, "defaults": self.defaults, "versions": versions}
        if self.threat != "none":  # keeps the keys of suites without defenses unchanged
            from advbridge.evaluations.systems.defended import resolved_defense_config

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
        """Expand models × attack grids × backends into cells (backends lacking an attack are skipped)."""
        out = []
        for model in dict.fromkeys(self.models + [m for e in self.attacks for m in e.models or ()]):
            for entry in self.attacks:
                if model not in (entry.models or self.models):
                    continue
                attack = ATTACKS[entry.name]
                norm = entry.norm or attack.default_norm
                backends = [b for b in (entry.backends or self.backends) if b in attack.backends(norm)]
                for point in _grid(entry.params):
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


def _grid(params: dict[str, Any]) -> list[dict[str, Any]]:
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in params.items()}
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def config_key(config: dict[str, Any]) -> str:
    """The cell key: a hash of its fully resolved config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:24]


# --------------------------------------------------------------------------- loading and validation
def load_suite(source: str | Path, *, quick: bool = False, text: str | None = None) -> Suite:
    """Parse and validate a suite file (or ``text``); ``quick`` applies its ``[quick]`` table."""
    path = Path(source) if text is None else None
    if text is None:
        if not path.exists():
            raise SuiteError(f"suite file not found: {path}")
        text = path.read_text()
    where = str(path) if path else str(source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{where}: invalid TOML: {err}") from err
    loc = _Locator(text, where)

    _check_keys(doc, TOP_KEYS, loc, None)
    for table in ("suite", "data"):
        if table not in doc:
            raise SuiteError(f"{where}: missing table [{table}]")
    suite_t = _table(doc, "suite", SUITE_KEYS, loc)
    data_t = _table(doc, "data", DATA_KEYS, loc)
    quick_t = _table(doc, "quick", QUICK_KEYS, loc) if "quick" in doc else {}

    for key in ("name", "models"):
        if key not in suite_t:
            raise SuiteError(f"{loc.at('suite', key)}: [suite] needs '{key}'")
    data = {"dataset": "mnist5k", "split": "test", "n": 100, "seed": 0, "correct_only": False}
    data.update(data_t)
    if data["dataset"] not in DATASETS:
        raise SuiteError(f"{loc.at('data', 'dataset')}: unknown dataset {data['dataset']!r}; expected one of "
                         f"{list(DATASETS)}")
    if data["split"] not in ("train", "val", "test"):
        raise SuiteError(f"{loc.at('data', 'split')}: split must be 'train', 'val' or 'test'")
    if data["n"] < 1:
        raise SuiteError(f"{loc.at('data', 'n')}: n must be a positive integer, got {data['n']}")

    models = suite_t["models"]
    if quick and "models" in quick_t:
        models = quick_t["models"]
    if not models:
        raise SuiteError(f"{loc.at('suite', 'models')}: empty grid: 'models' lists no model")
    for m in models:
        error = model_error(m)
        if error:
            raise SuiteError(f"{loc.at('suite', 'models')}: {error}")
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

    caps = dict(quick_t.get("params", {})) if quick else {}
    for key, value in caps.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SuiteError(f"{loc.at('quick', key)}: quick cap '{key}' must be a number, got {value!r}")
    if quick and "n" in quick_t:
        data["n"] = min(data["n"], quick_t["n"])
    defense = _table(doc, "defense", DEFENSE_KEYS, loc) if "defense" in doc else {}
    defenses = _defense_systems(doc, defense, loc)
    raw_attacks = doc.get("attacks", [])
    if not isinstance(raw_attacks, list) or (not raw_attacks and not doc.get("estimators")):
        raise SuiteError(f"{where}: a suite needs at least one [[attacks]] or [[estimators]] table")
    attacks = [_attack_entry(i, a, loc, quick_t if quick else {}, [d["name"] for d in defenses])
               for i, a in enumerate(raw_attacks)]
    paper = [_paper_entry(i, p, loc, [d["name"] for d in defenses]) for i, p in enumerate(doc.get("paper", []))]
    estimators = [_estimator_entry(i, e, loc, quick_t if quick else {}) for i, e in enumerate(doc.get("estimators", []))]
    power_law = _table(doc, "power_law", POWER_LAW_KEYS, loc) if "power_law" in doc else {}
    for norm, value in power_law.get("max_eps", {}).items():
        if norm not in ("linf", "l2", "l1", "l0") or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or value <= 0:
            raise SuiteError(f"{loc.at('power_law', 'max_eps')}: max_eps maps a norm (linf, l2, l1, l0) to a positive "
                             f"ε, got {norm} = {value!r}")
    suite = Suite(name=suite_t["name"], path=path, text=text, description=suite_t.get("description", ""),
                  seed=suite_t.get("seed", 0), models=list(models), backends=backends, metrics=metrics, data=data,
                  attacks=attacks, paper=paper, data_note=suite_t.get("data_note", ""), quick=quick, caps=caps,
                  num_cpus=float(suite_t.get("num_cpus", 1.0)), num_gpus=float(suite_t.get("num_gpus", 0.0)),
                  defense=defense, defenses=defenses, estimators=estimators, power_law=power_law)
    for where_, value in (("num_cpus", suite.num_cpus), ("num_gpus", suite.num_gpus)):
        if value < 0 or (where_ == "num_cpus" and value == 0):
            raise SuiteError(f"{loc.at('suite', where_)}: {where_} must be {'> 0' if where_ == 'num_cpus' else '>= 0'}")
    if not suite.cells() and not suite.estimator_cells():
        raise SuiteError(f"{where}: the suite expands to no cell (no backend implements its attacks)")
    return suite


def _attack_entry(i: int, raw: Any, loc: "_Locator", quick: dict[str, Any], systems: list[str] = ()) -> AttackEntry:
    table = f"attacks[{i}]"
    if not isinstance(raw, dict):
        raise SuiteError(f"{loc.where}: [[attacks]] #{i + 1} must be a table")
    _check_table(raw, ATTACK_KEYS, loc, table)
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
    norm = raw.get("norm")
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
        for point in _grid(params):  # validates names, types and values of every grid point
            AttackSpec(name, norm, raw.get("targeted", "none"), point)
    except (ValueError, TypeError) as err:
        bad = re.search(r"'(\w+)'", str(err))
        key = bad.group(1) if bad and bad.group(1) in params else ("norm" if "norm" in str(err) else "name")
        raise SuiteError(f"{loc.at(table, key)}: {err}") from err
    label = raw.get("label", name if defaults == "shared" else f"{name} (toolkit defaults)")
    for key in ("num_cpus", "num_gpus"):
        if key in raw and (raw[key] < 0 or (key == "num_cpus" and raw[key] == 0)):
            raise SuiteError(f"{loc.at(table, key)}: {key} must be {'> 0' if key == 'num_cpus' else '>= 0'}")
    threats = raw.get("threats")
    if threats is not None:
        _check_threats(threats, loc, table, systems)
    models = raw.get("models")
    for m in models or ():
        error = model_error(m)
        if error:
            raise SuiteError(f"{loc.at(table, 'models')}: {error}")
    return AttackEntry(name, norm, raw.get("targeted", "none"), params, backends, n, defaults, label,
                       float(raw["num_cpus"]) if "num_cpus" in raw else None,
                       float(raw["num_gpus"]) if "num_gpus" in raw else None,
                       tuple(threats) if threats is not None else None, tuple(models) if models else None)


def _estimator_entry(i: int, raw: Any, loc: "_Locator", quick: dict[str, Any]) -> EstimatorEntry:
    from advbridge.evaluations.estimators.base import ESTIMATORS

    table = f"estimators[{i}]"
    if not isinstance(raw, dict):
        raise SuiteError(f"{loc.where}: [[estimators]] #{i + 1} must be a table")
    _check_table(raw, ESTIMATOR_KEYS, loc, table)
    name = raw.get("name")
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
    return EstimatorEntry(name, models, n, dict(raw.get("params", {})), raw.get("label", name))


def _check_threats(threats: list, loc: "_Locator", table: str, systems: list[str] = ()) -> None:
    if not threats:
        raise SuiteError(f"{loc.at(table, 'threats')}: empty grid: 'threats' lists no threat")
    for threat in threats:
        kind, _, target = str(threat).partition(":")
        if kind not in ("oblivious", "adaptive") or (kind == "oblivious" and target) or \
                (target and not AUTOENCODER_NAME.match(target) and target not in systems):
            raise SuiteError(f"{loc.at(table, 'threats')}: unknown threat {threat!r}; expected 'oblivious', "
                             "'adaptive', 'adaptive:<autoencoder>' (I, II, cifar, D0, D1, ..., invert, alphagan) or "
                             f"'adaptive:<system>' (one of {list(systems)})")


def _defense_systems(doc: dict[str, Any], defense: dict[str, Any], loc: "_Locator") -> list[dict[str, Any]]:
    """Validate ``[defense]`` and the ``[[defenses]]`` systems (names, detectors, autoencoders, threats)."""
    from advbridge.evaluations.systems.defended import (CLASSIFIERS, AutoencoderRecipe, DiverseRecipe, EnhancedRecipe, ProjectionSettings,
                           validate_detector, validate_projection, validate_recipe)
    from advbridge.evaluations.zoo.generative import GeneratorRecipe

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
        _check_table(cfg, SYSTEM_KEYS, loc, table)
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
        _check_threats(defense["threats"], loc, "defense", [s["name"] for s in systems])
    return systems


def _paper_entry(i: int, raw: Any, loc: "_Locator", systems: list[str] = ()) -> dict[str, Any]:
    table = f"paper[{i}]"
    if not isinstance(raw, dict):
        raise SuiteError(f"{loc.where}: [[paper]] #{i + 1} must be a table")
    _check_table(raw, PAPER_KEYS, loc, table)
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


def _table(doc: dict, name: str, schema: dict[str, type], loc: "_Locator") -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise SuiteError(f"{loc.at(None, name)}: [{name}] must be a table")
    _check_table(table, schema, loc, name)
    return table


def _check_table(table: dict, schema: dict[str, type], loc: "_Locator", name: str) -> None:
    """Unknown keys and wrong types in ``table`` raise, naming the key and its line."""
    _check_keys(table, set(schema), loc, name)
    for key, typ in schema.items():
        if key in table:
            _check_type(table[key], typ, loc, name, key)


def _check_keys(table: dict, allowed: set[str], loc: "_Locator", name: str | None) -> None:
    for key in table:
        if key not in allowed:
            where = f"[{name}]" if name else "the top level"
            raise SuiteError(f"{loc.at(name, key)}: unknown key '{key}' in {where}; expected one of {sorted(allowed)}")


def _check_type(value: Any, typ: type, loc: "_Locator", table: str, key: str) -> None:
    ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
    if typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise SuiteError(f"{loc.at(table, key)}: '{key}' must be of type {typ.__name__}, got "
                         f"{type(value).__name__} ({value!r})")


class _Locator:
    """Finds the line of ``key`` inside table ``table`` (``attacks[2]`` is the third ``[[attacks]]``)."""

    def __init__(self, text: str, where: str) -> None:
        self.lines = text.splitlines()
        self.where = where

    def at(self, table: str | None, key: str | None) -> str:
        line = self._find(table, key)
        return f"{self.where}:{line}" if line else self.where

    def _find(self, table: str | None, key: str | None) -> int | None:
        name, index = table, 0
        if table and "[" in table:
            name, index = table.split("[")[0], int(table.split("[")[1].rstrip("]"))
        current, count = None, {}
        start = None
        for no, raw in enumerate(self.lines, 1):
            line = raw.strip()
            header = re.match(r"^\[\[?\s*([\w.]+)\s*\]\]?", line)
            if header:
                current = header.group(1).split(".")[0]
                if line.startswith("[["):
                    count[current] = count.get(current, -1) + 1
                if current == name and count.get(current, 0) == index and start is None:
                    start = no
                continue
            in_table = (name is None and current is None) or (
                current == name and count.get(current, 0) == index)
            if in_table and key and re.match(rf"^{re.escape(key)}\s*=", line):
                return no
            if in_table and key and re.search(rf"[{{,]\s*{re.escape(key)}\s*=", line):
                return no
        return start
