"""Papernot et al.'s hardness matrix, adversarial distance and robustness (algorithms.md §5.5–5.7), in one JSMA pass.

JSMA is greedy and deterministic, so its run at a maximum distortion Υ_k is a prefix of its run at Υ_max: one
``PapernotJSMA`` pass at the largest level records, per (sample, target) pair, the iteration of its first success,
and gives the success rate ε_k and mean distortion τ_k of every level. ``H(s, t)`` is the trapezoid of ε over τ,
the points sorted by τ; ``A(X, t)`` is the fraction of features whose single-feature saliency is zero at the first
iteration; ``R(F)`` is the smallest ``A``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advbridge.bridge import Model
from advbridge.bridge.attacks.jsma import SALIENCY_ON, PapernotJSMA
from advbridge.bridge.validation import (check_finite, check_inputs, check_labels, check_positive,
                                         check_positive_int)

from advbridge.evaluations.papers.papernot import PAPER

logger = logging.getLogger(__name__)

#: The 9 distortion levels Υ_k of §5.7 (fractions of the features).
DEFAULT_LEVELS = (0.003, 0.013, 0.026, 0.051, 0.077, 0.102, 0.128, 0.255, 0.383)
#: The paper's headline budget (§5.4) at which success and distortion are reported (§5.6).
HEADLINE_DISTORTION = 0.145


@dataclass
class HardnessResult:
    """What ``hardness_matrix`` measured. Matrices are indexed ``[source, target]`` with NaN on the diagonal."""

    levels: list[float]
    success: np.ndarray            # (K, C, C): ε_k(s, t), success rate at level k
    distortion: np.ndarray         # (K, C, C): τ_k(s, t), mean fraction of features changed at level k
    hardness: np.ndarray           # (C, C): H(s, t)
    adversarial_distance: np.ndarray  # (C, C): mean A(X, t) over the sources of class s
    robustness: float              # R(F) = min A(X, t)
    success_rate: float            # at the headline budget Υ = 14.5%
    mean_distortion_all: float
    mean_distortion_successful: float
    n_samples: int
    time_s: float
    vjp_calls: int                 # of the single pass
    vjp_calls_separate: int        # what one run per level would have taken
    headline_distortion: float = HEADLINE_DISTORTION
    saliency_on: str = "probs"
    per_pair: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def listed(m: np.ndarray):
            return [[None if not np.isfinite(v) else float(v) for v in row] for row in m]
        return {"success_rate": self.success_rate, "mean_distortion_all": self.mean_distortion_all,
                "mean_distortion_successful": self.mean_distortion_successful,
                "headline_distortion": self.headline_distortion, "hardness": listed(self.hardness),
                "adversarial_distance": listed(self.adversarial_distance), "robustness": self.robustness,
                "levels": self.levels, "success_by_level": [listed(m) for m in self.success],
                "distortion_by_level": [listed(m) for m in self.distortion], "n_samples": self.n_samples,
                "saliency_on": self.saliency_on, "time_s": self.time_s, "vjp_calls": self.vjp_calls,
                "vjp_calls_separate_runs": self.vjp_calls_separate, "paper": PAPER}


def all_target_pairs(x: torch.Tensor, y: torch.Tensor, nb_classes: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """Each input repeated toward every other class: ``(x_pairs, sources, targets)``, ``N·(C−1)`` rows."""
    targets = torch.tensor([t for label in y.tolist() for t in range(nb_classes) if t != label], dtype=torch.long)
    return x.repeat_interleave(nb_classes - 1, 0), y.repeat_interleave(nb_classes - 1), targets


def adversarial_distance(model: Model, x: torch.Tensor, targets: torch.Tensor, saliency_on: str = "probs",
                         batch_size: int = 256) -> np.ndarray:
    """``A(X, t) = 1 − (1/D)·#{i : S(X, t)[i] > 0}`` with the single-feature saliency of §5.2 at ``X``.

    ``S[i] > 0`` iff ``∂F_t/∂X_i > 0`` and ``Σ_{c≠t} ∂F_c/∂X_i < 0``.

    :param model: The bridge model.
    :param x: Inputs ``(N, *model.input_shape)`` within ``model.bounds``.
    :param targets: One target class per input.
    :param saliency_on: ``probs`` (``F`` = softmax outputs) or ``logits``.
    :param batch_size: Inputs per batch.
    :raises ValueError: for bad inputs, targets, ``saliency_on`` or ``batch_size`` (see ``bridge.validation``).
    """
    x = check_inputs(x, model, "x")
    targets = check_labels(targets, len(x), model.nb_classes, "targets")
    batch_size = check_positive_int(batch_size, "batch_size")
    if saliency_on not in SALIENCY_ON:
        raise ValueError(f"saliency_on must be one of {list(SALIENCY_ON)}, got {saliency_on!r}")
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(model.device).requires_grad_(True)
        tb = targets[start:start + batch_size].to(model.device)
        with torch.enable_grad():
            logits = model.pipeline(xb)
            if saliency_on == "probs":  # Σ_c p_c = 1, so Σ_{c≠t} ∂p_c/∂X_i = −∂p_t/∂X_i: S > 0 iff ∂p_t/∂X_i > 0
                alpha, = torch.autograd.grad(torch.softmax(logits, 1).gather(1, tb.unsqueeze(1)).sum(), xb)
                salient = alpha.flatten(1) > 0
            else:
                alpha, = torch.autograd.grad(logits.gather(1, tb.unsqueeze(1)).sum(), xb, retain_graph=True)
                total, = torch.autograd.grad(logits.sum(), xb)
                salient = (alpha.flatten(1) > 0) & ((total - alpha).flatten(1) < 0)
        out.append((1.0 - salient.float().mean(1)).cpu())
    return torch.cat(out).numpy()


def trapezoid_hardness(success: np.ndarray, distortion: np.ndarray) -> float:
    """``H = Σ_k (τ_{k+1} − τ_k)(ε_{k+1} + ε_k)/2`` over the levels sorted by τ (§5.7)."""
    order = np.argsort(distortion, kind="stable")
    tau, eps = np.asarray(distortion)[order], np.asarray(success)[order]
    return float(np.sum(np.diff(tau) * (eps[1:] + eps[:-1]) / 2))


def hardness_matrix(model: Model, x: torch.Tensor, y: torch.Tensor, *, levels=DEFAULT_LEVELS,
                    saliency_on: str = "probs", theta: float = 1.0, batch_size: int = 256,
                    headline_distortion: float = HEADLINE_DISTORTION, progress: bool = True) -> HardnessResult:
    """Hardness H(s, t), adversarial distance A and robustness R of ``model`` from one JSMA pass.

    :param model: The bridge model.
    :param x: Source inputs; each is attacked toward every other class.
    :param y: Their true labels.
    :param levels: Distortion levels Υ_k (fractions); the pass runs at ``max(levels + [headline])``.
    :param saliency_on: ``probs`` or ``logits``.
    :param theta: +1 (increase features) or −1.
    :param batch_size: (sample, target) pairs per batch.
    :param headline_distortion: Υ at which ``success_rate`` and the mean distortions are reported.
    :raises ValueError: for inputs of the wrong shape (channels-last named as such), outside ``model.bounds``
        (e.g. 0–255 pixels), with NaN/inf or an empty batch; labels outside ``[0, nb_classes)`` or of the wrong
        length; bad levels, ``saliency_on``, ``theta``, ``batch_size`` or ``headline_distortion``.
    :raises TypeError: for non-floating inputs or non-integer labels. float64 inputs are cast to float32.
    """
    try:
        levels = [float(v) for v in levels]
    except (TypeError, ValueError) as err:
        raise ValueError(f"levels must list at least 2 distortion fractions in (0, 1], got {levels!r}") from err
    if len(levels) < 2 or any(not 0 < v <= 1 for v in levels):
        raise ValueError(f"levels must list at least 2 distortion fractions in (0, 1], got {levels}")
    if saliency_on not in SALIENCY_ON:
        raise ValueError(f"saliency_on must be one of {list(SALIENCY_ON)}, got {saliency_on!r}")
    theta = check_finite(theta, "theta")
    if theta == 0:
        raise ValueError("theta must be non-zero (+1 increases features, -1 decreases them), got 0.0")
    batch_size = check_positive_int(batch_size, "batch_size")
    headline_distortion = check_positive(headline_distortion, "headline_distortion")
    if headline_distortion > 1:
        raise ValueError(f"headline_distortion must be a fraction in (0, 1], got {headline_distortion!r}")
    x = check_inputs(x, model, "x")
    y = check_labels(y, len(x), model.nb_classes, "y")
    nb = model.nb_classes
    x_pairs, sources, targets = all_target_pairs(x, y, nb)
    start = time.perf_counter()
    attack = PapernotJSMA(model.art(), theta=theta, max_distortion=max(levels + [headline_distortion]),
                          saliency_on=saliency_on, batch_size=batch_size, forward=model.pipeline)
    trace = attack.trace(x_pairs.numpy(), targets.numpy(), progress=progress)
    distance = adversarial_distance(model, x_pairs, targets, saliency_on, batch_size)
    elapsed = time.perf_counter() - start
    src, tgt = sources.numpy(), targets.numpy()
    success = np.full((len(levels), nb, nb), np.nan)
    distortion = np.full((len(levels), nb, nb), np.nan)
    calls_separate = 0
    for k, level in enumerate(levels):
        ok, dist = trace.at(level)
        for s in range(nb):
            for t in range(nb):
                sel = (src == s) & (tgt == t)
                if sel.any():
                    success[k, s, t], distortion[k, s, t] = ok[sel].mean(), dist[sel].mean()
        calls_separate += separate_run_vjps(trace, level, batch_size, 1 if saliency_on == "probs" else 2)
    hardness = np.full((nb, nb), np.nan)
    dist_matrix = np.full((nb, nb), np.nan)
    for s in range(nb):
        for t in range(nb):
            if s != t and not np.isnan(success[:, s, t]).any():
                hardness[s, t] = trapezoid_hardness(success[:, s, t], distortion[:, s, t])
                dist_matrix[s, t] = distance[(src == s) & (tgt == t)].mean()
    ok, dist = trace.at(headline_distortion)
    logger.info("JSMA hardness: %d pairs, %.1f%% success at Υ=%.3f, %.1f s, %d VJPs (separate runs: %d)",
                len(ok), 100 * ok.mean(), headline_distortion, elapsed, trace.vjp_calls, calls_separate)
    return HardnessResult(levels, success, distortion, hardness, dist_matrix, float(distance.min()),
                          float(ok.mean()), float(dist.mean()), float(dist[ok].mean()) if ok.any() else float("nan"),
                          len(x), elapsed, trace.vjp_calls, calls_separate, headline_distortion, saliency_on,
                          {"source": src.tolist(), "target": tgt.tolist(), "success_iter": trace.success_iter.tolist(),
                           "stop_iter": trace.stop_iter.tolist(), "adversarial_distance": distance.tolist()})


def separate_run_vjps(trace, level: float, batch_size: int, per_iteration: int) -> int:
    """The VJPs a separate run at ``level`` would compute: per batch, ``per_iteration`` per iteration while any
    of its pairs is still running (the counting of ``PapernotJSMA``)."""
    limit = int(np.floor(trace.dims * level / 2))
    iters = np.minimum(np.where(trace.success_iter >= 0, trace.success_iter, trace.stop_iter), limit)
    total = 0
    for start in range(0, len(iters), batch_size):
        block = iters[start:start + batch_size]
        total += per_iteration * int(block.max()) if len(block) else 0
    return total


def plot_hardness(result: HardnessResult, folder: str | Path, stem: str) -> list[Path]:
    """Heatmap PNGs of H(s, t) and A(s, t)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, matrix, title in (("hardness", result.hardness, "hardness H(s, t)"),
                                ("adversarial_distance", result.adversarial_distance, "adversarial distance A(s, t)")):
        fig, ax = plt.subplots(figsize=(6.2, 5.4))
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap="magma")
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                if np.isfinite(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.3f}", ha="center", va="center", fontsize=6, color="grey")
        ax.set_xticks(range(matrix.shape[1]))
        ax.set_yticks(range(matrix.shape[0]))
        ax.set_xlabel("target class")
        ax.set_ylabel("source class")
        ax.set_title(f"{title}, JSMA ({result.saliency_on}), {result.n_samples} sources")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        path = folder / f"{stem}_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
