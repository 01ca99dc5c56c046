"""Estimators a suite can run (``[[estimators]]``): each computes once per model and stores like an attack cell.

An estimator takes the model and the cell's data slice and returns its headline ``metrics``, a JSON ``result``
(what the report and the CLI read) and per-sample ``samples``. Estimator cells run on the driver, after the attack
cells, with either executor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from advbridge.bridge import Model

from .hardness import DEFAULT_LEVELS, HEADLINE_DISTORTION, hardness_matrix


@dataclass(frozen=True)
class Estimator:
    """``validate(params) -> error or None``; ``compute(model, x, y, params, progress) -> (metrics, result,
    samples)``."""

    validate: Callable[[dict[str, Any]], str | None]
    compute: Callable[..., tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]
    summary: str


def _check_keys(params: dict[str, Any], allowed: dict[str, Any]) -> str | None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        return f"unknown parameter(s) {unknown}; expected some of {sorted(allowed)}"
    return None


HARDNESS_PARAMS = {"levels": list(DEFAULT_LEVELS), "saliency_on": "probs", "theta": 1.0,
                   "headline_distortion": HEADLINE_DISTORTION, "batch_size": 256}


def _validate_hardness(params: dict[str, Any]) -> str | None:
    error = _check_keys(params, HARDNESS_PARAMS)
    if error:
        return error
    levels = params.get("levels", HARDNESS_PARAMS["levels"])
    if not isinstance(levels, list) or len(levels) < 2 or \
            any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1 for v in levels):
        return f"levels must list at least 2 distortion fractions in (0, 1], got {levels!r}"
    if params.get("saliency_on", "probs") not in ("probs", "logits"):
        return f"saliency_on must be 'probs' or 'logits', got {params.get('saliency_on')!r}"
    if params.get("theta", 1.0) == 0:
        return "theta must be non-zero"
    return None


def _hardness(model: Model, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any], progress: bool = True):
    p = {**HARDNESS_PARAMS, **params}
    result = hardness_matrix(model, x, y, levels=p["levels"], saliency_on=p["saliency_on"], theta=p["theta"],
                             batch_size=p["batch_size"], headline_distortion=p["headline_distortion"],
                             progress=progress)
    metrics = {"success_rate": result.success_rate, "mean_distortion_all": result.mean_distortion_all,
               "mean_distortion_successful": result.mean_distortion_successful, "robustness": result.robustness,
               "vjp_calls": result.vjp_calls, "vjp_calls_separate_runs": result.vjp_calls_separate}
    return metrics, result.to_dict(), result.per_pair


ESTIMATORS: dict[str, Estimator] = {
    "hardness": Estimator(_validate_hardness, _hardness,
                          "Papernot's hardness matrix, adversarial distance and robustness from one JSMA pass"),
}
