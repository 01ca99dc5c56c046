"""Linear response and mean-field estimates of adversarial error (Cubuk et al. 2017; algorithms.md §6.3–6.5).

With the linear-response vector ``Γ`` of `advbridge.evaluations.analysis.gamma` (``h(x + ε·u) = h(x) + ε·Γ(x) +
O(ε²)`` for the one-step attack direction ``u``), :func:`linear_response` turns ``(h, Γ)`` into the per-example
linear-response threshold ``ε̂_lin`` (§6.3) and the mean-field threshold ``ε̂_MF`` (§6.4);
:func:`predicted_error_curve` gives the predicted adversarial error ``P(ε̂ < ε)``; :func:`logit_gaps` and
:func:`small_gap_exponents` test the logit-difference law ``P(Δ_1j) ∝ Δ_1j^{j−2}`` (§6.5).
:func:`estimate_meanfield` bundles all of it (Γ included) into a JSON-serialisable :class:`MeanFieldEstimate`.

Ranks are 1-based as in the paper: rank 1 is the largest clean logit of an example, rank ``j`` its ``j``-th
largest, and ``Δ_1j = h_1 − h_j ≥ 0``.

JSON encoding (all ``to_dict()`` methods, `advbridge.evaluations.core.jsonio`): ``+∞`` is written as the string
``"inf"`` (``−∞`` as ``"-inf"``), NaN as ``null``; numpy arrays become lists and integer dictionary keys become
strings.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from advbridge.bridge import Model

from advbridge.evaluations.analysis.gamma import as_tensor, gamma_with_method, to_numpy
from advbridge.evaluations.core.jsonio import jsonable

logger = logging.getLogger(__name__)


def _median(a: np.ndarray) -> float:
    """Median that keeps ∞ (``np.median`` of a set with a majority of ∞ is ∞); NaN when empty."""
    if a.size == 0:
        return float("nan")
    s = np.sort(a)
    n = len(s)
    if n % 2:
        return float(s[n // 2])
    lo, hi = s[n // 2 - 1], s[n // 2]
    return float(hi) if np.isinf(hi) else float((lo + hi) / 2)


def _check_logits(name: str, logits: Any) -> torch.Tensor:
    t = as_tensor(name, logits)
    if t.dim() != 2 or t.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, K) with K >= 2, got {tuple(t.shape)}")
    return t.detach().double()


def _rank_sorted(logits: torch.Tensor, gam: torch.Tensor | None = None):
    """Logits (and Γ) of each example sorted by descending clean logit (stable for ties)."""
    hs, idx = torch.sort(logits, dim=1, descending=True, stable=True)
    return hs, (None if gam is None else gam.gather(1, idx))


@dataclass
class LinearResponse:
    """Per-example linear-response and mean-field thresholds (algorithms.md §6.3–6.4).

    Arrays cover all ``N`` examples in input order; ``used`` marks those the summary statistics are taken over
    (the correctly classified ones when labels were given, §6.3 [R]; all of them otherwise).

    :ivar eps_lin: ``ε̂_lin = min_j Δ_1j/(Γ_j − Γ_1)`` over the ranks ``j ≥ 2`` with ``Γ_j − Γ_1 > 0``;
        ``∞`` when no logit gains on the top one.
    :ivar eps_mf: ``ε̂_MF = Δ_12/(⟨Γ_2⟩ − ⟨Γ_1⟩)``; ``∞`` for every example when ``⟨Γ_2⟩ ≤ ⟨Γ_1⟩``.
    :ivar delta12: ``Δ_12 = h_1 − h_2``.
    :ivar used: Boolean mask of the examples the means and medians are over.
    :ivar gamma_mean_by_rank: ``⟨Γ_i⟩``, ``i = 1..K`` (rank-indexed, list index ``i − 1``) over ``used``.
    :ivar eps_lin_median: Median of ``eps_lin[used]`` (``∞`` if most are ``∞``).
    :ivar eps_mf_median: Median of ``eps_mf[used]``.
    """

    eps_lin: np.ndarray
    eps_mf: np.ndarray
    delta12: np.ndarray
    used: np.ndarray
    gamma_mean_by_rank: list[float]
    eps_lin_median: float
    eps_mf_median: float

    @property
    def n_used(self) -> int:
        return int(self.used.sum())

    def error_curve(self, eps_grid: Sequence[float], kind: str = "lin") -> np.ndarray:
        """Predicted adversarial error ``P(ε̂ < ε)`` over the used examples (see :func:`predicted_error_curve`).

        :param eps_grid: The ``ε`` values.
        :param kind: ``"lin"`` (``ε̂_lin``) or ``"mf"`` (``ε̂_MF``).
        """
        if kind not in ("lin", "mf"):
            raise ValueError(f"kind must be 'lin' or 'mf', got {kind!r}")
        return predicted_error_curve((self.eps_lin if kind == "lin" else self.eps_mf)[self.used], eps_grid)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (``∞`` → ``"inf"``, NaN → ``None``, arrays → lists)."""
        return jsonable({"n": len(self.used), "n_used": self.n_used, "gamma_mean_by_rank": self.gamma_mean_by_rank,
                      "eps_lin_median": self.eps_lin_median, "eps_mf_median": self.eps_mf_median,
                      "eps_lin": self.eps_lin, "eps_mf": self.eps_mf, "delta12": self.delta12, "used": self.used})


def linear_response(logits: torch.Tensor, Gamma: torch.Tensor, y: torch.Tensor | None = None) -> LinearResponse:
    """``ε̂_lin`` (§6.3), ``⟨Γ_i⟩`` by rank and ``ε̂_MF`` (§6.4) from clean logits and ``Γ``.

    Each example's logits are sorted in descending order and ``Γ`` is permuted the same way; with
    ``Δ_1j = h_1 − h_j`` the top class is overtaken by rank ``j`` at ``ε̂_j = Δ_1j/(Γ_j − Γ_1)`` when
    ``Γ_j − Γ_1 > 0``, and ``ε̂_lin`` is the smallest of these (``∞`` if there is none). The linear prediction of
    the adversarial error is then ``P(ε̂_lin < ε)`` (exact for a linear model).

    :param logits: Clean logits ``(N, K)``.
    :param Gamma: ``Γ`` from :func:`.gamma.gamma`, ``(N, K)``, class-indexed like ``logits``.
    :param y: Optional labels ``(N,)``. When given, ``⟨Γ_i⟩``, ``ε̂_MF`` and the medians are taken over the
        correctly classified examples only (§6.3 [R]: ``err_adv(ε) = P(ε̂ < ε)`` holds for clean examples that
        are classified correctly); otherwise over all. Per-example arrays always cover all ``N``.
    :returns: A :class:`LinearResponse` (numpy float64 arrays).
    """
    h = _check_logits("logits", logits)
    gam = as_tensor("Gamma", Gamma).detach().double().to(h.device)
    if gam.shape != h.shape:
        raise ValueError(f"logits and Gamma must have the same shape, got {tuple(h.shape)} and {tuple(gam.shape)}")
    if y is not None:
        yt = as_tensor("y", y).to(h.device)
        if yt.dim() != 1 or len(yt) != len(h):
            raise ValueError(f"y must have shape ({len(h)},) like logits, got {tuple(yt.shape)}")
        used = h.argmax(1) == yt.long()
    else:
        used = torch.ones(len(h), dtype=torch.bool, device=h.device)
    hs, gs = _rank_sorted(h, gam)
    delta = hs[:, :1] - hs                                   # Δ_1j, column j−1
    dgam = gs - gs[:, :1]                                    # Γ_j − Γ_1
    ratio = torch.where(dgam > 0, delta / dgam.where(dgam > 0, torch.ones_like(dgam)),
                        torch.full_like(delta, math.inf))
    eps_lin = ratio[:, 1:].min(dim=1).values
    if bool(used.any()):
        gmean = gs[used].mean(0)
    else:
        logger.warning("linear_response: no correctly classified example; means and medians are NaN")
        gmean = torch.full((h.shape[1],), math.nan, dtype=h.dtype, device=h.device)
    den = float(gmean[1] - gmean[0])
    if den > 0:
        eps_mf = delta[:, 1] / den
    else:
        if not math.isnan(den):
            logger.warning("linear_response: <Γ_2> − <Γ_1> = %.4g <= 0; the mean-field estimate predicts no "
                           "flips (ε̂_MF = inf)", den)
        eps_mf = torch.full_like(delta[:, 1], math.inf if not math.isnan(den) else math.nan)
    used_np = to_numpy(used)
    eps_lin_np, eps_mf_np = to_numpy(eps_lin), to_numpy(eps_mf)
    return LinearResponse(eps_lin=eps_lin_np, eps_mf=eps_mf_np, delta12=to_numpy(delta[:, 1]), used=used_np,
                          gamma_mean_by_rank=[float(v) for v in to_numpy(gmean)],
                          eps_lin_median=_median(eps_lin_np[used_np]), eps_mf_median=_median(eps_mf_np[used_np]))


def predicted_error_curve(eps_hat: Any, eps_grid: Sequence[float]) -> np.ndarray:
    """Predicted adversarial error ``P(ε̂ < ε)`` for each ``ε`` of ``eps_grid``.

    The fraction of ``eps_hat`` strictly below ``ε`` (``∞`` never counts). Pass the thresholds of the correctly
    classified examples to predict the fraction of them that an ``ε`` attack flips; multiply by the clean
    accuracy for ``acc_clean − acc_adv`` over a whole data set.

    :param eps_hat: Per-example thresholds (``ε̂_lin`` or ``ε̂_MF``), any shape, no NaN.
    :param eps_grid: The ``ε`` values.
    :returns: float64 array of ``len(eps_grid)`` fractions in ``[0, 1]``.
    """
    e = np.asarray(to_numpy(eps_hat) if isinstance(eps_hat, torch.Tensor) else eps_hat, dtype=np.float64).ravel()
    grid = np.asarray(eps_grid, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("eps_hat is empty")
    if np.isnan(e).any():
        raise ValueError("eps_hat must not contain NaN")
    if np.isnan(grid).any():
        raise ValueError("eps_grid must not contain NaN")
    s = np.sort(e)
    return np.searchsorted(s, grid, side="left") / len(s)


# --------------------------------------------------------------------------- logit-difference law
def logit_gaps(logits: torch.Tensor) -> dict[int, torch.Tensor]:
    """``Δ_1j = h_1 − h_j`` for the ranks ``j = 2..K`` of each example (§6.5).

    :param logits: Clean logits ``(N, K)``.
    :returns: ``{j: (N,) float64 tensor}``, on ``logits``' device; every gap is ``≥ 0``.
    """
    h = _check_logits("logits", logits)
    hs, _ = _rank_sorted(h)
    return {j: hs[:, 0] - hs[:, j - 1] for j in range(2, h.shape[1] + 1)}


def small_gap_exponents(logits: torch.Tensor, quantile: float = 0.2, *, min_points: int = 5) -> dict[int, float]:
    """Fitted small-``Δ`` exponent ``a_j`` of the density ``P(Δ_1j) ∝ Δ_1j^{a_j}``, ``j = 2..K`` (§6.5).

    Estimator: sort the ``n`` gaps ``Δ_(1) ≤ … ≤ Δ_(n)`` of rank ``j``; the empirical CDF at ``Δ_(i)`` is the
    Weibull plotting position ``i/(n+1)`` (its expectation). Over the smallest ``quantile`` of the gaps
    (``i ≤ ⌊quantile·n⌋``, keeping only ``Δ > 0``), least squares of ``log CDF`` on ``log Δ`` gives the CDF
    exponent ``s``; the density exponent is ``a_j = s − 1``. For i.i.d. logits the law predicts
    ``a_j = j − 2`` (``Δ_12`` has a non-zero density at 0). Fitting the CDF rather than a histogram needs no
    binning; the cost is a bias from the ``O(Δ)`` correction, which shrinks with ``quantile``.

    :param logits: Clean logits ``(N, K)`` (pass the correctly classified ones to match :func:`linear_response`).
    :param quantile: Fraction of the smallest gaps the fit uses, in ``(0, 1]``.
    :param min_points: Fewest positive gaps needed for a fit; below it the exponent is NaN.
    :returns: ``{j: a_j}``.
    """
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile <= 1:
        raise ValueError(f"quantile must lie in (0, 1], got {quantile!r}")
    if min_points < 2:
        raise ValueError(f"min_points must be at least 2, got {min_points}")
    out: dict[int, float] = {}
    for j, gaps in logit_gaps(logits).items():
        d = np.sort(to_numpy(gaps))
        n = len(d)
        m = math.floor(quantile * n)
        cdf = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
        d, cdf = d[:m], cdf[:m]
        keep = (d > 0) & np.isfinite(d)
        d, cdf = d[keep], cdf[keep]
        if len(d) < min_points or np.ptp(np.log(d)) == 0:
            logger.warning("small_gap_exponents: rank %d has %d positive gaps in the lowest %.0f%%; exponent "
                           "is NaN", j, len(d), 100 * quantile)
            out[j] = float("nan")
            continue
        slope = np.polyfit(np.log(d), np.log(cdf), 1)[0]
        out[j] = float(slope - 1)
    return out


# --------------------------------------------------------------------------- bundle
@dataclass
class MeanFieldEstimate:
    """Everything :func:`estimate_meanfield` computes for one model and data set.

    Per-example arrays cover all ``n`` inputs in order; summary statistics are over the ``used`` (correctly
    classified) ones. ``to_dict()`` writes ``∞`` as ``"inf"`` and NaN as ``null``.

    :ivar direction: ``"l2"`` (L2-FGM) or ``"sign"`` (FGSM).
    :ivar method: The Γ method that ran (``"linearized"``, ``"double_vjp"``, ``"jvp"``, ``"jacobian"``, or
        e.g. ``"double_vjp+jvp"`` when ``"auto"`` fell back part-way).
    :ivar n: Number of inputs.
    :ivar n_used: Number of correctly classified inputs.
    :ivar clean_accuracy: ``n_used / n``.
    :ivar gamma_mean_by_rank: ``⟨Γ_i⟩``, ``i = 1..K`` (list index ``i − 1``).
    :ivar eps_mf_median: Median ``ε̂_MF``.
    :ivar eps_lin_median: Median ``ε̂_lin``.
    :ivar exponents: ``{j: a_j}`` small-gap density exponents of ``Δ_1j`` (see :func:`small_gap_exponents`).
    :ivar quantile: The fraction of gaps the exponent fits use.
    :ivar eps_lin: Per-example ``ε̂_lin``.
    :ivar eps_mf: Per-example ``ε̂_MF``.
    :ivar delta12: Per-example ``Δ_12``.
    :ivar used: Per-example mask of correct classification.
    """

    direction: str
    method: str
    n: int
    n_used: int
    clean_accuracy: float
    gamma_mean_by_rank: list[float]
    eps_mf_median: float
    eps_lin_median: float
    exponents: dict[int, float]
    quantile: float
    eps_lin: np.ndarray = field(repr=False)
    eps_mf: np.ndarray = field(repr=False)
    delta12: np.ndarray = field(repr=False)
    used: np.ndarray = field(repr=False)

    def error_curve(self, eps_grid: Sequence[float], kind: str = "lin") -> np.ndarray:
        """Predicted ``P(ε̂ < ε)`` over the correctly classified inputs.

        :param eps_grid: The ``ε`` values.
        :param kind: ``"lin"`` (``ε̂_lin``) or ``"mf"`` (``ε̂_MF``).
        """
        if kind not in ("lin", "mf"):
            raise ValueError(f"kind must be 'lin' or 'mf', got {kind!r}")
        return predicted_error_curve((self.eps_lin if kind == "lin" else self.eps_mf)[self.used], eps_grid)

    def to_dict(self, arrays: bool = True) -> dict[str, Any]:
        """JSON-safe dictionary (``∞`` → ``"inf"``, NaN → ``None``; exponent keys are strings).

        :param arrays: Include the per-example arrays.
        """
        out: dict[str, Any] = {"direction": self.direction, "method": self.method, "n": self.n,
                               "n_used": self.n_used, "clean_accuracy": self.clean_accuracy,
                               "gamma_mean_by_rank": self.gamma_mean_by_rank, "eps_mf_median": self.eps_mf_median,
                               "eps_lin_median": self.eps_lin_median, "exponents": self.exponents,
                               "quantile": self.quantile}
        if arrays:
            out.update(eps_lin=self.eps_lin, eps_mf=self.eps_mf, delta12=self.delta12, used=self.used)
        return jsonable(out)


def estimate_meanfield(model: nn.Module | Model, x: torch.Tensor, y: torch.Tensor, *,
                       direction: str = "l2", batch_size: int = 256, method: str = "auto", quantile: float = 0.2,
                       input_shape: Sequence[int] | None = None,
                       bounds: tuple[float, float] | None = None) -> MeanFieldEstimate:
    """Γ, ``ε̂_lin``, ``ε̂_MF`` and the logit-gap exponents of ``model`` on ``(x, y)`` in one call.

    :param model: Torch module returning logits, or a bridge ``Model`` (see :func:`.gamma.gamma`).
    :param x: Inputs ``(N, ...)``.
    :param y: True labels ``(N,)``; statistics are over the correctly classified inputs.
    :param direction: ``"l2"`` or ``"sign"``.
    :param batch_size: Examples per batch.
    :param method: Γ method (see :func:`.gamma.gamma`).
    :param quantile: Fraction of the smallest gaps used by :func:`small_gap_exponents`.
    :param input_shape: Shape ``x`` must have (see :func:`.gamma.gamma`); a bridge ``Model`` supplies its own.
    :param bounds: Range ``x`` must lie in (see :func:`.gamma.gamma`); a bridge ``Model`` supplies its own.
    :raises ValueError: For bad arguments or inputs, as :func:`.gamma.gamma`.
    """
    logits, gam, used_method = gamma_with_method(model, x, y, direction=direction, batch_size=batch_size,
                                                 method=method, input_shape=input_shape, bounds=bounds)
    y_t = as_tensor("y", y).to(logits.device)
    lr = linear_response(logits, gam, y_t)
    correct = torch.as_tensor(lr.used, device=logits.device)
    if lr.n_used >= 2:
        exponents = small_gap_exponents(logits[correct], quantile)
    else:
        exponents = {j: float("nan") for j in range(2, logits.shape[1] + 1)}
    n = len(lr.used)
    est = MeanFieldEstimate(direction=direction, method=used_method, n=n, n_used=lr.n_used,
                            clean_accuracy=lr.n_used / n, gamma_mean_by_rank=lr.gamma_mean_by_rank,
                            eps_mf_median=lr.eps_mf_median, eps_lin_median=lr.eps_lin_median, exponents=exponents,
                            quantile=float(quantile), eps_lin=lr.eps_lin, eps_mf=lr.eps_mf, delta12=lr.delta12,
                            used=lr.used)
    logger.info("estimate_meanfield: %d/%d correct, median eps_lin %.4g, median eps_MF %.4g, method %s",
                est.n_used, n, est.eps_lin_median, est.eps_mf_median, used_method)
    return est
