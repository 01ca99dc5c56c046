"""`AttackResult` and the shared judge: success by re-predicting on ``x_adv``, norms in input space."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .spec import AttackSpec

#: A coordinate counts toward L0 when it moved by more than this fraction of the bounds' range.
L0_RELATIVE_TOLERANCE = 1e-6
NORM_NAMES = ("l0", "l1", "l2", "linf")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide an attack's numbers."""
    out = {}
    for dist in ("advbridge", "torch", "adversarial-robustness-toolbox", "foolbox", "numpy", "scipy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor, bounds: tuple[float, float]) -> dict[str, np.ndarray]:
    """Per-sample L0/L1/L2/L∞ of ``x_adv - x`` in the raw input space."""
    delta = (x_adv.double() - x.double()).flatten(1)
    tol = L0_RELATIVE_TOLERANCE * (bounds[1] - bounds[0])
    return {
        "l0": (delta.abs() > tol).sum(1).numpy().astype(np.float64),
        "l1": delta.abs().sum(1).numpy(),
        "l2": delta.norm(dim=1).numpy(),
        "linf": delta.abs().amax(1).numpy(),
    }


@dataclass
class AttackResult:
    """One backend's run of one spec on one batch.

    :ivar x_adv: Adversarial inputs (CPU float32); failed or non-finite samples equal the input.
    :ivar success: Judged by re-predicting on ``x_adv`` with the bridge's own model.
    :ivar nonfinite: Samples whose raw toolkit output held NaN/inf (counted as failed).
    """

    spec: AttackSpec
    backend: str
    params: dict[str, Any]
    x_adv: torch.Tensor
    labels: np.ndarray
    targets: np.ndarray | None
    pred_clean: np.ndarray | None  # filled by crossval (one clean pass shared by every backend)
    pred_adv: np.ndarray
    success: np.ndarray
    nonfinite: np.ndarray
    norms: dict[str, np.ndarray]
    time_s: float
    seed: int
    versions: dict[str, str] = field(default_factory=library_versions)

    @property
    def n(self) -> int:
        return len(self.success)

    @property
    def success_rate(self) -> float:
        return float(self.success.mean())

    def median_norm(self, norm: str, mask: np.ndarray | None = None) -> float:
        """Median ``norm`` over successful samples (and ``mask``); NaN when there are none."""
        keep = self.success if mask is None else self.success & mask
        return float(np.median(self.norms[norm][keep])) if keep.any() else float("nan")

    def summary(self) -> dict[str, float]:
        out = {"success_rate": self.success_rate}
        for norm in ("l0", "l2", "linf"):
            out[f"median_{norm}"] = self.median_norm(norm)
        out["time_s"] = self.time_s
        return out

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per sample."""
        records = []
        for i in range(self.n):
            rec = {"index": i, "backend": self.backend, "attack": self.spec.name, "norm": self.spec.norm,
                   "label": int(self.labels[i]), "pred_adv": int(self.pred_adv[i]), "success": bool(self.success[i]),
                   "nonfinite": bool(self.nonfinite[i])}
            if self.targets is not None:
                rec["target"] = int(self.targets[i])
            if self.pred_clean is not None:
                rec["pred_clean"] = int(self.pred_clean[i])
            rec.update({k: float(v[i]) for k, v in self.norms.items()})
            records.append(rec)
        return records


def judge(model, x: torch.Tensor, x_adv: torch.Tensor, labels: torch.Tensor,
          targets: torch.Tensor | None, batch_size: int = 512) -> dict[str, Any]:
    """Judge every toolkit the same way: re-predict on ``x_adv``; non-finite outputs fail and revert to ``x``."""
    x_adv = x_adv.detach().to("cpu", torch.float32).clone()
    nonfinite = ~torch.isfinite(x_adv).flatten(1).all(1)
    x_adv[nonfinite] = x[nonfinite]
    pred_adv = model.predict(x_adv, batch_size).numpy()
    success = pred_adv == targets.numpy() if targets is not None else pred_adv != labels.numpy()
    success &= ~nonfinite.numpy()
    return {"x_adv": x_adv, "pred_adv": pred_adv, "success": success, "nonfinite": nonfinite.numpy(),
            "norms": perturbation_norms(x, x_adv, model.bounds)}
