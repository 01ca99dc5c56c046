"""Estimators a suite can run (``[[estimators]]``): each computes once per model and stores like an attack cell.

An estimator takes the model, the cell's data slice and the run's ``data_root`` (the folder of user-supplied data
files, or ``None``) and returns its headline ``metrics``, a JSON ``result``
(what the report and the CLI read) and per-sample ``samples``. Estimator cells run on the driver, after the attack
cells, with either executor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from advbridge.bridge import Model
from advbridge.bridge.validation import check_finite, check_positive, check_positive_int

from advbridge.evaluations.estimators.domain_shift import DOMAIN_SHIFT_SUMMARY, compute_domain_shift, validate_domain_shift
from advbridge.evaluations.analysis.hardness import DEFAULT_LEVELS, HEADLINE_DISTORTION, hardness_matrix
from advbridge.evaluations.estimators.transfer import TRANSFER_SUMMARY, compute_transfer, validate_transfer


@dataclass(frozen=True)
class Estimator:
    """``validate(params) -> error or None``; ``compute(model, x, y, params, progress, data_root) -> (metrics,
    result, samples)``."""

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
    try:  # the checks hardness_matrix makes, at load time rather than when the cell runs
        if check_finite(params.get("theta", 1.0), "theta") == 0:
            return "theta must be non-zero (+1 increases features, -1 decreases them), got 0.0"
        if check_positive(params.get("headline_distortion", HEADLINE_DISTORTION), "headline_distortion") > 1:
            return f"headline_distortion must be a fraction in (0, 1], got {params['headline_distortion']!r}"
        check_positive_int(params.get("batch_size", 256), "batch_size")
    except ValueError as err:
        return str(err)
    return None


def _hardness(model: Model, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any], progress: bool = True,
              data_root: str | None = None):
    p = {**HARDNESS_PARAMS, **params}
    result = hardness_matrix(model, x, y, levels=p["levels"], saliency_on=p["saliency_on"], theta=p["theta"],
                             batch_size=p["batch_size"], headline_distortion=p["headline_distortion"],
                             progress=progress)
    metrics = {"success_rate": result.success_rate, "mean_distortion_all": result.mean_distortion_all,
               "mean_distortion_successful": result.mean_distortion_successful, "robustness": result.robustness,
               "vjp_calls": result.vjp_calls, "vjp_calls_separate_runs": result.vjp_calls_separate}
    return metrics, result.to_dict(), result.per_pair


MEANFIELD_PARAMS = {"directions": ["l2", "sign"], "batch_size": 256, "method": "auto", "quantile": 0.2}


def _validate_meanfield(params: dict[str, Any]) -> str | None:
    error = _check_keys(params, MEANFIELD_PARAMS)
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


def _meanfield(model: Model, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any], progress: bool = True,
               data_root: str | None = None):
    from advbridge.evaluations.analysis.meanfield import estimate_meanfield

    p = {**MEANFIELD_PARAMS, **params}
    metrics, result, samples = {}, {}, {}
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


ESTIMATORS: dict[str, Estimator] = {
    "meanfield": Estimator(_validate_meanfield, _meanfield,
                           "Cubuk's linear-response and mean-field ε estimates, ⟨Γ⟩ by rank and logit-gap exponents"),
    "hardness": Estimator(_validate_hardness, _hardness,
                          "Papernot's hardness matrix, adversarial distance and robustness from one JSMA pass"),
    "transfer": Estimator(validate_transfer, compute_transfer, TRANSFER_SUMMARY),
    "domain_shift": Estimator(validate_domain_shift, compute_domain_shift, DOMAIN_SHIFT_SUMMARY),
}
