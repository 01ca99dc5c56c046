"""The ``hardness`` estimator: Papernot's hardness matrix, adversarial distance and robustness
(`advbridge.evaluations.analysis.hardness`) from one JSMA pass."""

from __future__ import annotations

from typing import Any

import torch

from advbridge.bridge import Model
from advbridge.bridge.validation import check_finite, check_positive, check_positive_int

from advbridge.evaluations.analysis.hardness import DEFAULT_LEVELS, HEADLINE_DISTORTION, hardness_matrix
from advbridge.evaluations.estimators.base import ESTIMATORS, Estimator, check_keys

#: ``[[estimators]] name = "hardness"`` parameters and their defaults.
HARDNESS_PARAMS = {"levels": list(DEFAULT_LEVELS), "saliency_on": "probs", "theta": 1.0,
                   "headline_distortion": HEADLINE_DISTORTION, "batch_size": 256}


def validate_hardness(params: dict[str, Any]) -> str | None:
    """Why ``params`` is not a valid ``hardness`` estimator configuration, or ``None``."""
    error = check_keys(params, HARDNESS_PARAMS)
    if error:
        return error
    levels = params.get("levels", HARDNESS_PARAMS["levels"])
    if not isinstance(levels, list) or len(levels) < 2 or \
            any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1 for v in levels):
        return f"levels must list at least 2 distortion fractions in (0, 1], got {levels!r}"
    if params.get("saliency_on", "probs") not in ("probs", "logits"):
        return f"saliency_on must be 'probs' or 'logits', got {params.get('saliency_on')!r}"
    try:  # the checks hardness_matrix makes, at load time rather than when the cell runs
        if check_finite(params.get("theta", 1.0), "theta") == 0:
            return "theta must be non-zero (+1 increases features, -1 decreases them), got 0.0"
        if check_positive(params.get("headline_distortion", HEADLINE_DISTORTION), "headline_distortion") > 1:
            return f"headline_distortion must be a fraction in (0, 1], got {params['headline_distortion']!r}"
        check_positive_int(params.get("batch_size", 256), "batch_size")
    except ValueError as err:
        return str(err)
    return None


def compute_hardness(model: Model, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any], progress: bool = True,
                     data_root: str | None = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ``hardness`` estimator: :func:`~advbridge.evaluations.analysis.hardness.hardness_matrix` on the cell's
    inputs; the per-pair trace is its samples."""
    p = {**HARDNESS_PARAMS, **params}
    result = hardness_matrix(model, x, y, levels=p["levels"], saliency_on=p["saliency_on"], theta=p["theta"],
                             batch_size=p["batch_size"], headline_distortion=p["headline_distortion"],
                             progress=progress)
    metrics = {"success_rate": result.success_rate, "mean_distortion_all": result.mean_distortion_all,
               "mean_distortion_successful": result.mean_distortion_successful, "robustness": result.robustness,
               "vjp_calls": result.vjp_calls, "vjp_calls_separate_runs": result.vjp_calls_separate}
    return metrics, result.to_dict(), result.per_pair


HARDNESS = ESTIMATORS.add(Estimator(
    "hardness", validate_hardness, compute_hardness,
    "Papernot's hardness matrix, adversarial distance and robustness from one JSMA pass"), rank=20)
