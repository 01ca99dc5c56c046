"""The (source, target) attack-success matrices of Kos, Fischer & Song (2017) (algorithms.md §4.3–4.4).

For each pair of source class ``s`` (the true label) and target class ``t ≠ s``, over the samples attacked from
``s`` toward ``t``:

- ``AS_ignore-target = mean(ŷ ≠ s)`` (the attack moved the prediction anywhere else),
- ``AS_target = mean(ŷ = t)`` (it reached the target),

with ``ŷ`` the reconstruction-feedback prediction, over the samples whose clean input the classifier (with the same
feedback) gets right: an already-misclassified source image is never a success and is counted apart (the one
definition of success, ``advbridge.bridge.result``). ``AS_target ≤ AS_ignore-target`` cell by cell. The
paper's MNIST classifier-attack numbers (§4.4) to compare with are in `advbridge.evaluations.papers.kos`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _labels(name: str, values: Any, nb_classes: int, n: int | None) -> np.ndarray:
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} must have {n} entries like source, got {len(arr)}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices")
        arr = arr.astype(np.int64)
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= nb_classes):
        raise ValueError(f"{name} must lie in [0, {nb_classes}), got {arr.min()}..{arr.max()}")
    return arr


def as_matrices(source: Any, target: Any, pred: Any, nb_classes: int = 10,
                pred_clean: Any = None) -> dict[str, np.ndarray]:
    """Per-(source, target) attack success rates, as fractions in [0, 1], under the one definition of success.

    An input whose clean prediction is not its source class is *already misclassified*: it is never a success
    (neither AS_ignore-target nor AS_target), it is left out of the rates' denominator and counted apart.

    :param source: True labels ``(N,)``.
    :param target: Target labels ``(N,)``.
    :param pred: Predictions on the adversarial inputs ``(N,)`` (reconstruction feedback in the paper).
    :param nb_classes: ``K``.
    :param pred_clean: Predictions on the clean inputs ``(N,)``, by the same classifier (with the same feedback);
        ``None`` treats every input as correctly classified.
    :return: ``{"as_ignore_target": (K, K), "as_target": (K, K), "counts": (K, K) int, "counted": (K, K) int,
        "already_misclassified": (K, K) int}`` indexed ``[source, target]``: ``counts`` holds every input of the
        pair, ``counted`` the correctly classified ones (the rates' denominator) and ``already_misclassified`` the
        others; rates are NaN on the diagonal and where a pair has no correctly classified input.
    """
    if isinstance(nb_classes, bool) or not isinstance(nb_classes, (int, np.integer)) or nb_classes < 2:
        raise ValueError(f"nb_classes must be an integer >= 2, got {nb_classes!r}")
    s = _labels("source", source, nb_classes, None)
    t = _labels("target", target, nb_classes, len(s))
    p = _labels("pred", pred, nb_classes, len(s))
    correct = np.ones(len(s), bool) if pred_clean is None else _labels("pred_clean", pred_clean, nb_classes,
                                                                       len(s)) == s
    k = int(nb_classes)
    counts = np.zeros((k, k), dtype=np.int64)
    counted = np.zeros((k, k), dtype=np.int64)
    moved = np.zeros((k, k), dtype=np.float64)
    hit = np.zeros((k, k), dtype=np.float64)
    np.add.at(counts, (s, t), 1)
    np.add.at(counted, (s, t), correct.astype(np.int64))
    np.add.at(moved, (s, t), (correct & (p != s)).astype(np.float64))
    np.add.at(hit, (s, t), (correct & (p == t)).astype(np.float64))
    valid = counted > 0
    valid[np.diag_indices(k)] = False
    as_ignore = np.full((k, k), np.nan)
    as_target = np.full((k, k), np.nan)
    as_ignore[valid] = moved[valid] / counted[valid]
    as_target[valid] = hit[valid] / counted[valid]
    return {"as_ignore_target": as_ignore, "as_target": as_target, "counts": counts, "counted": counted,
            "already_misclassified": counts - counted}


def per_source_means(matrix: np.ndarray) -> np.ndarray:
    """Mean of each row over its non-NaN cells (the paper's per-source means); NaN for an all-NaN row."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square (K, K), got shape {m.shape}")
    finite = ~np.isnan(m)
    n = finite.sum(1)
    sums = np.where(finite, m, 0.0).sum(1)
    out = np.full(m.shape[0], np.nan)
    out[n > 0] = sums[n > 0] / n[n > 0]
    return out


def overall_mean(matrix: np.ndarray) -> float:
    """Unweighted mean over the non-NaN cells (the paper's mean over the 90 pairs); NaN when none."""
    m = np.asarray(matrix, dtype=np.float64)
    finite = m[~np.isnan(m)]
    return float(finite.mean()) if finite.size else float("nan")


def plot_matrix(matrix: np.ndarray, path: str | Path, title: str) -> Path:
    """Save a heatmap of a (source, target) rate matrix (fractions) as PNG, each cell annotated in %.

    :return: The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square (K, K), got shape {m.shape}")
    k = m.shape[0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.2, 0.55 * k + 1.6))
    image = ax.imshow(np.ma.masked_invalid(m), vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(k):
        for j in range(k):
            if np.isnan(m[i, j]):
                continue
            ax.text(j, i, f"{100 * m[i, j]:.0f}%", ha="center", va="center", fontsize=7,
                    color="black" if m[i, j] > 0.6 else "white")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("target class")
    ax.set_ylabel("source class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
