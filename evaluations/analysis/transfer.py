"""Cross-model transfer of adversarial examples (Szegedy et al. 2014, Table 2; Bradshaw et al. 2017, §8.3).

:func:`transfer_matrix` crafts adversarial examples with one attack spec on every model (rows: crafted on) and
measures the error they induce on every model (columns: evaluated on), for any bridge attack and backend, plus
Gaussian-noise control rows ``clip(x + σ·N(0, I))``.

Definitions (algorithms.md §7.4):

- **Distortion** of one example: ``√(Σ_i (x'_i − x_i)² / n)`` with ``n`` the number of input values (784 on MNIST)
  and pixels in [0, 1]; it is the RMS per-pixel change, ``‖x' − x‖₂ / √n``. That ``n`` counts pixels, not samples,
  follows from the paper's noise rows: unclipped noise of std σ has distortion ≈ σ, and Table 2 lists 0.1 and 0.3.
  A row's distortion is the mean over the examples the row counts.
- **The examples a row counts.** An attack row counts the inputs its source model classifies correctly and whose
  attack succeeded (the source misclassifies ``x'``; with a targeted spec, predicts the target): these are the
  source's adversarial examples, so the diagonal is 100% by construction, as in both papers; failures are counted
  separately (``success_rate``, ``n_attacked``). A noise row counts every input.
- **Error** in cell (row, column): among the row's examples that the column model classifies correctly on the
  clean input, the fraction it misclassifies after the perturbation, i.e. the error the perturbation *induces*
  (a column's own clean mistakes are reported once, in ``clean_error``, not mixed into every cell).
- **Log-likelihood** in a cell: the mean of ``log softmax(z)_y`` of the column model over the same examples (for a
  GPDNN, whose outputs are ``log p(y | x)``, this is its log predictive probability), as in Bradshaw's table.

The suite estimator over it is `advbridge.evaluations.estimators.transfer`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from advbridge.bridge import AttackSpec, Model, run_attack
from advbridge.bridge.validation import check_inputs, check_labels, check_positive_int

from advbridge.evaluations.core.jsonio import json_array

logger = logging.getLogger(__name__)


@dataclass
class TransferResult:
    """A transfer matrix: rows are sources (models, then noise levels), columns are the evaluated models.

    :ivar rows: Row names: the crafting models, then ``noise σ=<σ>``.
    :ivar columns: Column names (the models).
    :ivar kinds: ``"attack"`` or ``"noise"`` per row.
    :ivar sigmas: The noise σ per row (``None`` for attack rows).
    :ivar error: ``(rows, columns)`` induced error (module docstring); NaN where a row counts no example.
    :ivar log_likelihood: ``(rows, columns)`` mean log-probability of the true class.
    :ivar counted: ``(rows, columns)`` examples behind each cell.
    :ivar distortion: Per row, the mean ``√(Σ(x' − x)²/n)`` over the row's examples.
    :ivar success_rate: Per attack row, successes among the inputs its source classifies correctly (NaN for noise).
    :ivar n_attacked: Per attack row, inputs its source classifies correctly (all ``n`` for noise rows).
    :ivar n_counted: Per row, the examples it counts.
    :ivar clean_error: Per column, the error on the clean inputs (all ``n``).
    :ivar clean_log_likelihood: Per column, the mean log-probability of the true class on the clean inputs.
    :ivar sample_distortion: Per row, the distortion of every input (NaN where the row does not count it).
    """

    rows: list[str]
    columns: list[str]
    kinds: list[str]
    sigmas: list[float | None]
    error: np.ndarray
    log_likelihood: np.ndarray
    counted: np.ndarray
    distortion: np.ndarray
    success_rate: np.ndarray
    n_attacked: np.ndarray
    n_counted: np.ndarray
    clean_error: np.ndarray
    clean_log_likelihood: np.ndarray
    n: int
    spec: dict[str, Any]
    backend: str
    seed: int
    time_s: float
    sample_distortion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """JSON-ready dict (NaN as ``None``); ``arrays`` adds the per-sample distortions."""
        out = {"rows": list(self.rows), "columns": list(self.columns), "kinds": list(self.kinds),
               "sigmas": list(self.sigmas), "error": json_array(self.error),
               "log_likelihood": json_array(self.log_likelihood), "counted": self.counted.astype(int).tolist(),
               "distortion": json_array(self.distortion), "success_rate": json_array(self.success_rate),
               "n_attacked": self.n_attacked.astype(int).tolist(), "n_counted": self.n_counted.astype(int).tolist(),
               "clean_error": json_array(self.clean_error),
               "clean_log_likelihood": json_array(self.clean_log_likelihood), "n": self.n, "spec": self.spec,
               "backend": self.backend, "seed": self.seed, "time_s": self.time_s}
        if arrays:
            out["sample_distortion"] = json_array(self.sample_distortion)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TransferResult":
        """Inverse of :meth:`to_dict` (per-sample distortions only when they were stored)."""
        def arr(key: str) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in _flat(data[key])], dtype=float).reshape(
                np.shape(np.array(data[key], dtype=object)))

        return cls(list(data["rows"]), list(data["columns"]), list(data["kinds"]), list(data["sigmas"]),
                   arr("error"), arr("log_likelihood"), np.asarray(data["counted"], dtype=float), arr("distortion"),
                   arr("success_rate"), np.asarray(data["n_attacked"], dtype=float),
                   np.asarray(data["n_counted"], dtype=float), arr("clean_error"), arr("clean_log_likelihood"),
                   int(data["n"]), dict(data["spec"]), data["backend"], int(data["seed"]), float(data["time_s"]),
                   arr("sample_distortion") if "sample_distortion" in data else np.zeros((0, 0)))

    def cell(self, row: str, column: str) -> float:
        """``error[row, column]``."""
        if row not in self.rows or column not in self.columns:
            raise ValueError(f"unknown cell ({row!r}, {column!r}); rows {self.rows}, columns {self.columns}")
        return float(self.error[self.rows.index(row), self.columns.index(column)])


def distortion(x: torch.Tensor, x_adv: torch.Tensor) -> np.ndarray:
    """Per-sample ``√(Σ_i (x'_i − x_i)² / n)``, ``n`` = values per input (Szegedy et al. 2014, Table 1)."""
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    delta = (x_adv.double() - x.double()).flatten(1)
    return (delta.pow(2).sum(1) / delta.shape[1]).sqrt().numpy()


def transfer_matrix(models: Mapping[str, Model], spec: AttackSpec, x, y, *, backend: str = "native", seed: int = 0,
                    noise_sigmas: Sequence[float] = (0.1, 0.3), batch_size: int = 128,
                    progress: bool = True) -> TransferResult:
    """Craft ``spec`` on every model and evaluate every model on every model's examples (module docstring).

    :param models: Name -> bridge ``Model``; all must share the input shape and bounds. Rows and columns follow
        this order.
    :param spec: The attack (any bridge attack; a minimal one such as ``lbfgs``, ``deepfool`` or ``cw`` reproduces
        Szegedy's protocol).
    :param x: Inputs, NCHW within the models' bounds.
    :param y: True labels ``(N,)``.
    :param backend: ``native``, ``art`` or ``foolbox`` (must implement ``spec``).
    :param seed: Seeds each attack run and the noise.
    :param noise_sigmas: Std of the Gaussian-noise control rows ``clip(x + σ·z)``, one seeded draw ``z`` shared by
        every σ; empty for none.
    :param batch_size: Inputs per attack call.
    :param progress: Progress bars.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping of name -> Model")
    for name, model in models.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"model names must be non-empty strings, got {name!r}")
        if not isinstance(model, Model):
            raise TypeError(f"models[{name!r}] must be an advbridge.bridge.Model, got {type(model).__name__}")
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"spec must be an AttackSpec, got {type(spec).__name__}")
    first = next(iter(models.values()))
    for name, model in models.items():
        if model.input_shape != first.input_shape or model.bounds != first.bounds:
            raise ValueError(f"all models must share input_shape and bounds; {name!r} has {model.input_shape}, "
                             f"{model.bounds}, the first has {first.input_shape}, {first.bounds}")
    sigmas = [float(s) for s in check_sigmas(noise_sigmas)]
    batch_size = check_positive_int(batch_size, "batch_size")
    x_t = check_inputs(x, first, "x")
    y_t = check_labels(y, len(x_t), first.nb_classes, "y")
    labels = y_t.numpy()
    names = list(models)
    t0 = time.perf_counter()

    def evaluate(x_eval: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per column: (N,) correct flags and (N,) log-probabilities of the true class."""
        correct, logp = [], []
        for model in models.values():
            logits = model.logits(x_eval, batch_size=max(batch_size, 256)).float()
            lp = torch.log_softmax(logits, 1).gather(1, y_t.to(logits.device).unsqueeze(1)).squeeze(1)
            correct.append(logits.argmax(1).cpu().numpy() == labels)
            logp.append(lp.cpu().double().numpy())
        return np.stack(correct), np.stack(logp)

    clean_correct, clean_logp = evaluate(x_t)
    rows, kinds, row_masks, row_correct, row_logp, row_dist = [], [], [], [], [], []
    row_sigmas: list[float | None] = []
    success_rate, n_attacked = [], []
    for i, (name, model) in enumerate(tqdm(models.items(), desc=f"transfer {spec.name}", unit="model",
                                           leave=False, disable=not progress)):
        result = run_attack(model, x_t, y_t, spec, backend, seed=seed, batch_size=batch_size, progress=progress)
        base = clean_correct[i]
        mask = base & result.success
        correct, logp = evaluate(result.x_adv)
        rows.append(name)
        kinds.append("attack")
        row_sigmas.append(None)
        row_masks.append(mask)
        row_correct.append(correct)
        row_logp.append(logp)
        row_dist.append(distortion(x_t, result.x_adv))
        n_attacked.append(int(base.sum()))
        success_rate.append(float(mask.sum() / base.sum()) if base.any() else math.nan)
        logger.info("transfer: %s on %s succeeded on %d of %d correctly classified inputs", spec, name,
                    int(mask.sum()), int(base.sum()))
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(int(seed)))  # one draw for every σ
    low, high = first.bounds
    for sigma in sigmas:
        noisy = (x_t + sigma * z).clamp(low, high)
        correct, logp = evaluate(noisy)
        rows.append(f"noise σ={sigma:g}")
        kinds.append("noise")
        row_sigmas.append(sigma)
        row_masks.append(np.ones(len(x_t), dtype=bool))
        row_correct.append(correct)
        row_logp.append(logp)
        row_dist.append(distortion(x_t, noisy))
        n_attacked.append(len(x_t))
        success_rate.append(math.nan)

    n_rows, n_cols = len(rows), len(names)
    error = np.full((n_rows, n_cols), np.nan)
    loglik = np.full((n_rows, n_cols), np.nan)
    counted = np.zeros((n_rows, n_cols))
    for r in range(n_rows):
        for c in range(n_cols):
            keep = row_masks[r] & clean_correct[c]
            counted[r, c] = keep.sum()
            if keep.any():
                error[r, c] = 1.0 - row_correct[r][c][keep].mean()
                loglik[r, c] = row_logp[r][c][keep].mean()
    sample_dist = np.stack([np.where(m, d, np.nan) for m, d in zip(row_masks, row_dist)])
    dist = np.array([d[m].mean() if m.any() else np.nan for m, d in zip(row_masks, row_dist)])
    return TransferResult(rows, names, kinds, row_sigmas, error, loglik, counted, dist, np.array(success_rate),
                          np.array(n_attacked, dtype=float), np.array([m.sum() for m in row_masks], dtype=float),
                          1.0 - clean_correct.mean(1), clean_logp.mean(1), len(x_t), spec.to_dict(), backend,
                          int(seed), time.perf_counter() - t0, sample_dist)


def plot_transfer(result: TransferResult | Mapping[str, Any], path: str | Path, *, title: str | None = None,
                  row_labels: Mapping[str, str] | None = None) -> Path:
    """Heatmap PNG of ``result.error`` (percent, annotated), the row's distortion in its label.

    :param result: A :class:`TransferResult` or its ``to_dict()``.
    :param path: Output file (parent folders are created).
    :param title: Figure title; the attack and backend by default.
    :param row_labels: Display names for rows and columns (e.g. the paper's model names).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = result if isinstance(result, TransferResult) else TransferResult.from_dict(result)
    labels = dict(row_labels or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = 100 * res.error
    fig, ax = plt.subplots(figsize=(1.3 + 0.85 * len(res.columns), 1.0 + 0.5 * len(res.rows)))
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for r in range(len(res.rows)):
        for c in range(len(res.columns)):
            value = data[r, c]
            text = "–" if not np.isfinite(value) else f"{value:.1f}"
            ax.text(c, r, text, ha="center", va="center", fontsize=7,
                    color="black" if np.isfinite(value) and value > 60 else "white")
    ax.set_xticks(range(len(res.columns)), [labels.get(c, c) for c in res.columns], rotation=35, ha="right",
                  fontsize=7)
    ax.set_yticks(range(len(res.rows)), [f"{labels.get(r, r)} (d={d:.3f})" for r, d in zip(res.rows, res.distortion)],
                  fontsize=7)
    ax.set_xlabel("evaluated on", fontsize=8)
    ax.set_ylabel("crafted on (average distortion)", fontsize=8)
    ax.set_title(title or f"transfer error (%): {res.spec.get('name')} on {res.backend}, n = {res.n}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, label="error (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def check_sigmas(noise_sigmas: Sequence[float]) -> list[float]:
    """``noise_sigmas`` as a list, after checking it is a sequence of finite non-negative numbers."""
    if isinstance(noise_sigmas, (str, bytes)) or not isinstance(noise_sigmas, Sequence):
        raise ValueError(f"noise_sigmas must be a sequence of non-negative numbers, got {noise_sigmas!r}")
    for s in noise_sigmas:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not s >= 0 or not math.isfinite(s):
            raise ValueError(f"noise_sigmas must be a sequence of non-negative numbers, got {list(noise_sigmas)!r}")
    return list(noise_sigmas)


def _flat(values: Any) -> list:
    if isinstance(values, (list, tuple)):
        return [v for item in values for v in _flat(item)]
    return [values]
