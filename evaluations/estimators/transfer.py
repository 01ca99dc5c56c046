"""The ``transfer`` estimator: the cross-model transfer matrix of one attack with noise control rows
(`advbridge.evaluations.analysis.transfer`, Szegedy et al. 2014 Tables 1-2; Bradshaw et al. 2017, §8.3), over models
loaded by name, and per model its train/test error and average minimal distortion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from advbridge.bridge import ATTACKS, AttackSpec, Model
from advbridge.bridge.validation import check_positive_int

from advbridge.evaluations.analysis.transfer import check_sigmas, transfer_matrix
from advbridge.evaluations.core.jsonio import json_array
from advbridge.evaluations.data.datasets import DATASETS, load_dataset
from advbridge.evaluations.estimators.base import ESTIMATORS, Estimator, check_keys
from advbridge.evaluations.zoo.resolve import model_error, resolve_model

#: ``[[estimators]] name = "transfer"`` parameters and their defaults. ``norm`` defaults to the attack's first norm.
TRANSFER_PARAMS: dict[str, Any] = {"models": None, "attack": "lbfgs", "norm": None, "targeted": "none",
                                   "attack_params": {}, "backend": "native", "noise_sigmas": [0.1, 0.3],
                                   "batch_size": 128, "dataset": "mnist5k", "seed": 0, "table1": True}
TRANSFER_SUMMARY = ("Cross-model transfer matrix of one attack with noise control rows, and per model its train/test "
                    "error and average minimal distortion (Szegedy Tables 1-2, Bradshaw §8.3)")


def validate_transfer(params: Mapping[str, Any]) -> str | None:
    """Why ``params`` is not a valid ``transfer`` estimator configuration, or ``None``."""
    error = check_keys(params, TRANSFER_PARAMS)
    if error:
        return error
    models = params.get("models")
    if not isinstance(models, list) or not models or len(set(map(str, models))) != len(models):
        return f"models must list at least one model name, without repeats, got {models!r}"
    for name in models:
        error = model_error(name)
        if error:
            return error
    p = {**TRANSFER_PARAMS, **params}
    if p["attack"] not in ATTACKS:
        return f"unknown attack {p['attack']!r}; expected one of {sorted(ATTACKS)}"
    if not isinstance(p["attack_params"], dict):
        return f"attack_params must be a table of the attack's parameters, got {p['attack_params']!r}"
    try:
        spec = AttackSpec(p["attack"], p["norm"], p["targeted"], p["attack_params"])
    except (ValueError, TypeError) as err:
        return str(err)
    if p["backend"] not in ATTACKS[p["attack"]].backends(spec.norm):
        return (f"backend {p['backend']!r} does not implement {p['attack']} ({spec.norm}); it has "
                f"{list(ATTACKS[p['attack']].backends(spec.norm))}")
    try:
        check_sigmas(p["noise_sigmas"])
        check_positive_int(p["batch_size"], "batch_size")
    except (ValueError, TypeError) as err:
        return str(err)
    if p["dataset"] not in DATASETS:
        return f"unknown dataset {p['dataset']!r}; expected one of {list(DATASETS)}"
    if isinstance(p["seed"], bool) or not isinstance(p["seed"], int):
        return f"seed must be an integer, got {p['seed']!r}"
    if not isinstance(p["table1"], bool):
        return f"table1 must be true or false, got {p['table1']!r}"
    return None


def compute_transfer(model: Model, x: torch.Tensor, y: torch.Tensor, params: Mapping[str, Any],
                     progress: bool = True, data_root: str | None = None
                     ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ``transfer`` estimator: :func:`transfer_matrix` over ``params["models"]`` on the cell's inputs.

    The cell's own ``model`` only decides the device (list the estimator under one suite model); the models are
    loaded by name (``zoo.resolve.resolve_model``) for ``params["dataset"]`` (its files under ``data_root`` unless it
    is the embedded ``mnist5k``) and ``params["seed"]``. With ``table1`` each model's error on the whole training and
    test splits is added (Szegedy Table 1: its average minimal distortion is its own diagonal row).
    """
    error = validate_transfer(dict(params))
    if error:
        raise ValueError(f"transfer estimator: {error}")
    p = {**TRANSFER_PARAMS, **params}
    data = load_dataset(p["dataset"], root=data_root)
    models, infos = {}, {}
    for name in p["models"]:
        models[name], infos[name] = resolve_model(name, p["dataset"], p["seed"], str(model.device), data, data_root)
    spec = AttackSpec(p["attack"], p["norm"], p["targeted"], p["attack_params"])
    result = transfer_matrix(models, spec, x, y, backend=p["backend"], seed=p["seed"], noise_sigmas=p["noise_sigmas"],
                             batch_size=p["batch_size"], progress=progress)
    metrics: dict[str, Any] = {}
    table1 = []
    for i, name in enumerate(result.columns):
        row = {"model": name, "distortion": json_array(result.distortion[i]),
               "success_rate": json_array(result.success_rate[i]), "n_attacked": int(result.n_attacked[i]),
               "n_counted": int(result.n_counted[i]),
               "description": infos[name].get("description", "")}
        if p["table1"]:
            for split in ("train", "test"):
                xs, ys = data.split(split)
                row[f"{split}_error"] = float((models[name].predict(xs) != ys).float().mean())
                metrics[f"{split}_error[{name}]"] = row[f"{split}_error"]
        metrics[f"distortion[{name}]"] = row["distortion"]
        metrics[f"success_rate[{name}]"] = row["success_rate"]
        table1.append(row)
    attack_rows = [i for i, k in enumerate(result.kinds) if k == "attack"]
    off = [result.error[r, c] for r in attack_rows for c in range(len(result.columns)) if r != c]
    off = [v for v in off if np.isfinite(v)]
    metrics["mean_transfer_error"] = float(np.mean(off)) if off else None
    samples = {f"distortion[{row}]": json_array(result.sample_distortion[i]) for i, row in enumerate(result.rows)}
    return metrics, {"transfer": result.to_dict(), "table1": table1, "params": _jsonable(p)}, samples


def _jsonable(p: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}


TRANSFER = ESTIMATORS.add(Estimator("transfer", validate_transfer, compute_transfer, TRANSFER_SUMMARY), rank=30)
