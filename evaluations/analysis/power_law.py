"""Small-ε power law of adversarial error, ``err_adv(ε) ≈ A·ε^B`` (Cubuk et al. 2017; algorithms.md §6.1).

:func:`fit_power_law` fits ``log err = log A + B·log ε`` by least squares over the points with ``err > min_err``
(and ``ε ≤ max_eps``) and gives a 95 % percentile-bootstrap interval for ``B``. It takes plain numbers, so it
works for any attack's ε grid and any norm.

JSON encoding (``to_dict()``): NaN is written as ``null``, ``±∞`` as ``"inf"``/``"-inf"``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from advbridge.evaluations.core.jsonio import json_float

logger = logging.getLogger(__name__)

CI_LEVEL = 0.95


@dataclass(frozen=True)
class PowerLawFit:
    """``err ≈ A·ε^B`` fitted in log-log space.

    :ivar A: Prefactor (the fitted error at ``ε = 1``, in the units of ``ε``).
    :ivar B: Exponent.
    :ivar B_ci: 95 % percentile-bootstrap interval of ``B``; ``(nan, nan)`` without a bootstrap.
    :ivar n_points: Number of ``(ε, err)`` points the fit used.
    :ivar eps_range: ``(min ε, max ε)`` of those points.
    :ivar n_boot: Bootstrap replicates that gave a fit (replicates with fewer than 2 usable points are dropped).
    :ivar resampled: ``"samples"`` (per-sample errors were resampled), ``"points"`` or ``"none"``.
    """

    A: float
    B: float
    B_ci: tuple[float, float]
    n_points: int
    eps_range: tuple[float, float]
    n_boot: int = 0
    resampled: str = "none"

    def predict(self, eps: Any) -> np.ndarray:
        """``A·ε^B`` at ``eps``."""
        return self.A * np.asarray(eps, dtype=np.float64) ** self.B

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (NaN → ``None``)."""
        return {"A": json_float(self.A), "B": json_float(self.B), "B_ci": [json_float(v) for v in self.B_ci],
                "n_points": self.n_points, "eps_range": [json_float(v) for v in self.eps_range],
                "n_boot": self.n_boot, "resampled": self.resampled, "ci_level": CI_LEVEL}


def _vector(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _usable(eps: np.ndarray, err: np.ndarray, max_eps: float | None, min_err: float) -> np.ndarray:
    mask = np.isfinite(err) & (err > min_err)
    if max_eps is not None:
        mask &= eps <= max_eps
    return mask


def _fit(log_eps: np.ndarray, log_err: np.ndarray) -> tuple[float, float]:
    """Least squares of ``log err`` on ``log ε``: ``(log A, B)``."""
    x0 = log_eps - log_eps.mean()
    slope = float(np.dot(x0, log_err - log_err.mean()) / np.dot(x0, x0))
    return float(log_err.mean() - slope * log_eps.mean()), slope


def fit_power_law(eps: Any, err: Any, *, samples: Any = None, n_boot: int = 1000, seed: int = 0,
                  max_eps: float | None = None, min_err: float = 0.0) -> PowerLawFit:
    """Fit ``err ≈ A·ε^B`` by least squares of ``log err`` on ``log ε`` (§6.1 [R]).

    Points with ``err ≤ min_err`` (``log`` undefined or in the noise floor) or ``ε > max_eps`` (past the
    small-ε range) are left out. The 95 % interval for ``B`` is a percentile bootstrap:

    - with ``samples``, a ``(n_samples, n_eps)`` array of per-sample adversarial errors (booleans or 0/1,
      ``err = samples.mean(0)``), whole samples (rows) are resampled with replacement, ``err`` recomputed and
      the fit repeated; this reflects the sampling noise of ``err``;
    - otherwise the usable ``(ε, err)`` points are resampled, which only reflects scatter about the line.

    Replicates with fewer than 2 usable points at distinct ε are dropped (``n_boot`` counts the rest).

    :param eps: Attack strengths (any units, any norm), all ``> 0``.
    :param err: Adversarial error at each ``ε`` (e.g. ``acc_clean − acc_adv``).
    :param samples: Optional per-sample errors, shape ``(n_samples, len(eps))``.
    :param n_boot: Bootstrap replicates (0: no interval).
    :param seed: Seed of the bootstrap generator.
    :param max_eps: Largest ``ε`` used, or ``None`` for all.
    :param min_err: Points need ``err > min_err``.
    :raises ValueError: For mismatched lengths, non-positive or non-finite ``ε``, a bad ``samples`` shape, or
        fewer than 2 usable points.
    """
    eps_a = _vector("eps", eps)
    err_a = _vector("err", err)
    if len(eps_a) != len(err_a):
        raise ValueError(f"eps and err must have the same length, got {len(eps_a)} and {len(err_a)}")
    if not np.all(np.isfinite(eps_a)) or np.any(eps_a <= 0):
        bad = eps_a[~np.isfinite(eps_a) | (eps_a <= 0)]
        raise ValueError(f"eps must be positive and finite, got {bad.tolist()}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    if max_eps is not None and not max_eps > 0:
        raise ValueError(f"max_eps must be positive, got {max_eps!r}")
    mask = _usable(eps_a, err_a, max_eps, min_err)
    if mask.sum() < 2 or len(np.unique(eps_a[mask])) < 2:
        where = f"err > {min_err:g}" + ("" if max_eps is None else f" and eps <= {max_eps:g}")
        raise ValueError(f"need at least 2 points at distinct eps with {where} to fit a power law, "
                         f"got {int(mask.sum())}")
    log_eps, log_err = np.log(eps_a[mask]), np.log(err_a[mask])
    log_a, b = _fit(log_eps, log_err)

    sample_arr = None
    if samples is not None:
        if hasattr(samples, "detach"):
            samples = samples.detach().cpu().numpy()
        sample_arr = np.asarray(samples, dtype=np.float64)
        if sample_arr.ndim != 2 or sample_arr.shape[1] != len(eps_a):
            raise ValueError(f"samples must have shape (n_samples, {len(eps_a)}), got {sample_arr.shape}")
        if sample_arr.shape[0] < 2:
            raise ValueError(f"samples must hold at least 2 samples, got {sample_arr.shape[0]}")
        gap = np.nanmax(np.abs(sample_arr.mean(0) - err_a))
        if gap > 1e-6:
            logger.warning("fit_power_law: err differs from samples.mean(0) by up to %.3g; the interval "
                           "resamples the samples", gap)

    boots: list[float] = []
    rng = np.random.default_rng(seed)
    if n_boot:
        if sample_arr is not None:
            n = sample_arr.shape[0]
            for _ in range(n_boot):
                err_b = sample_arr[rng.integers(0, n, n)].mean(0)
                m = _usable(eps_a, err_b, max_eps, min_err)
                if m.sum() >= 2 and len(np.unique(eps_a[m])) >= 2:
                    boots.append(_fit(np.log(eps_a[m]), np.log(err_b[m]))[1])
        else:
            k = len(log_eps)
            for _ in range(n_boot):
                idx = rng.integers(0, k, k)
                if np.ptp(log_eps[idx]) > 0:
                    boots.append(_fit(log_eps[idx], log_err[idx])[1])
        if not boots:
            logger.warning("fit_power_law: no bootstrap replicate had 2 usable points; B_ci is NaN")
    alpha = (1 - CI_LEVEL) / 2
    ci = (float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))) if boots else (math.nan, math.nan)
    used = eps_a[mask]
    fit = PowerLawFit(A=float(math.exp(log_a)), B=b, B_ci=ci, n_points=int(mask.sum()),
                      eps_range=(float(used.min()), float(used.max())), n_boot=len(boots),
                      resampled=("none" if not n_boot else "samples" if sample_arr is not None else "points"))
    logger.info("fit_power_law: B = %.3f [%.3f, %.3f], A = %.4g over %d points, eps in [%g, %g]", fit.B, *fit.B_ci,
                fit.A, fit.n_points, *fit.eps_range)
    return fit
