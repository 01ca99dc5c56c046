"""The ``meanfield`` estimator: Cubuk's linear-response and mean-field ε estimates
(`advbridge.evaluations.analysis.meanfield`) for the L2-FGM and FGSM directions."""

from __future__ import annotations

from typing import Any

import torch

from advbridge.bridge import Model
from advbridge.bridge.validation import check_positive, check_positive_int

from advbridge.evaluations.analysis.meanfield import estimate_meanfield
from advbridge.evaluations.estimators.base import ESTIMATORS, Estimator, check_keys

#: ``[[estimators]] name = "meanfield"`` parameters and their defaults.
MEANFIELD_PARAMS = {"directions": ["l2", "sign"], "batch_size": 256, "method": "auto", "quantile": 0.2}


def validate_meanfield(params: dict[str, Any]) -> str | None:
    """Why ``params`` is not a valid ``meanfield`` estimator configuration, or ``None``."""
    error = check_keys(params, MEANFIELD_PARAMS)
    if error:
        return error
    directions = params.get("directions", MEANFIELD_PARAMS["directions"])
    if not isinstance(directions, list) or not directions or any(d not in ("l2", "sign") for d in directions):
        return f"directions must list 'l2' (L2-FGM) and/or 'sign' (FGSM), got {directions!r}"
    if params.get("method", "auto") not in ("auto", "linearized", "double_vjp", "jvp", "jacobian"):
        return f"method must be auto, linearized, double_vjp, jvp or jacobian, got {params.get('method')!r}"
    try:
        check_positive_int(params.get("batch_size", 256), "batch_size")
        quantile = check_positive(params.get("quantile", 0.2), "quantile")
    except ValueError as err:
        return str(err)
    if quantile > 1:
        return f"quantile must lie in (0, 1], got {params['quantile']!r}"
    return None


def compute_meanfield(model: Model, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any], progress: bool = True,
                      data_root: str | None = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ``meanfield`` estimator: :func:`~advbridge.evaluations.analysis.meanfield.estimate_meanfield` per
    direction (``l2_fgm``, ``fgsm``); the per-example thresholds are its samples (``∞`` as ``None``)."""
    p = {**MEANFIELD_PARAMS, **params}
    metrics: dict[str, Any] = {}
    result: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    for direction in p["directions"]:
        est = estimate_meanfield(model, x, y, direction=direction, batch_size=p["batch_size"], method=p["method"],
                                 quantile=p["quantile"])
        name = "l2_fgm" if direction == "l2" else "fgsm"
        metrics[f"eps_lin_median[{name}]"] = est.eps_lin_median
        metrics[f"eps_mf_median[{name}]"] = est.eps_mf_median
        result[name] = est.to_dict(arrays=False)
        samples[f"eps_lin[{name}]"] = [None if not v < float("inf") else float(v) for v in est.eps_lin]
        samples[f"eps_mf[{name}]"] = [None if not v < float("inf") else float(v) for v in est.eps_mf]
        samples["used"] = [bool(v) for v in est.used]
    return metrics, result, samples


MEANFIELD = ESTIMATORS.add(Estimator(
    "meanfield", validate_meanfield, compute_meanfield,
    "Cubuk's linear-response and mean-field ε estimates, ⟨Γ⟩ by rank and logit-gap exponents"), rank=10)
