"""The estimator interface and registry: estimators a suite can run (``[[estimators]]``), one module of this package
each, every one adding one `Estimator` to ``ESTIMATORS``.

An estimator computes once per model and stores like an attack cell. It takes the model, the cell's data slice and
the run's ``data_root`` (the folder of user-supplied data files, or ``None``) and returns its headline ``metrics``, a
JSON ``result`` (what the report and the CLI read) and per-sample ``samples``. Estimator cells run on the driver,
after the attack cells, with either executor. Consumers (the suite loader, the runner) look estimators up by name in
``ESTIMATORS`` and never import an estimator module; estimators never import each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from advbridge.bridge.registry import Registry


@dataclass(frozen=True)
class Estimator:
    """One suite estimator.

    :param name: Its name (``[[estimators]] name = ...``).
    :param validate: ``validate(params) -> error or None``, run when the suite is loaded.
    :param compute: ``compute(model, x, y, params, progress, data_root) -> (metrics, result, samples)``.
    :param summary: One line on what it measures.
    """

    name: str
    validate: Callable[[dict[str, Any]], str | None]
    compute: Callable[..., tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]
    summary: str


ESTIMATORS: Registry[Estimator] = Registry("estimator", "advbridge.evaluations.estimators")
"""Every estimator, in ``(rank, name)`` order: meanfield, hardness, transfer, domain_shift."""


def check_keys(params: Mapping[str, Any], allowed: Mapping[str, Any]) -> str | None:
    """Why ``params`` names a parameter ``allowed`` does not (the unknown ones and the known ones), or ``None``."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        return f"unknown parameter(s) {unknown}; expected some of {sorted(allowed)}"
    return None
