"""`AttackResult` and the one definition of success used everywhere: re-predict on ``x_adv``, count only inputs
the model classifies correctly when clean, norms in input space.

:func:`judge_success` is the definition (every consumer calls it or :func:`judge`):

- an input the model misclassifies when clean is **already misclassified**: it is never a success (untargeted or
  targeted), it is reported apart (``already_misclassified``), and robust accuracy counts it as wrong;
- untargeted success: the clean prediction is the true label and the adversarial prediction is not;
- targeted success: the clean prediction is the true label and the adversarial prediction is the target (a target
  equal to the true label is refused by ``run.resolve_targets``);
- a non-finite toolkit output is a failure (and is replaced by the input);
- rates use the correctly classified inputs as denominator; robust accuracy uses all inputs.
"""

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

#: The definitions paragraph every report renders (Markdown), so a number is never read under another meaning.
DEFINITIONS = (
    "**Definitions.** *Already misclassified*: an input the model gets wrong when clean; it is never counted as a "
    "success and is reported apart. *Success*: on an input the model classifies correctly when clean, the "
    "adversarial prediction differs from the true label (untargeted) or equals the target (targeted; a target never "
    "equals the true label: explicit targets equal to it are refused, least-likely and random targets never draw "
    "it); a non-finite output is a failure. *Success rate*: successes over the correctly classified inputs. "
    "*Robust (adversarial) accuracy*: inputs classified correctly both clean and after the attack, over all inputs "
    "(already-misclassified inputs count as wrong); *error rate* = 1 − robust accuracy. Median and mean norms and "
    "the distortion of successes are over successes only; the distortion over all inputs is over the correctly "
    "classified ones.")


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


def _as_int_array(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {arr.shape}")
    return arr.astype(np.int64)


def judge_success(labels: Any, pred_clean: Any, pred_adv: Any, targets: Any = None,
                  nonfinite: Any = None) -> dict[str, np.ndarray]:
    """The one definition of attack success (module docstring), per sample.

    :param labels: True labels ``(N,)``.
    :param pred_clean: The judging model's predictions on the clean inputs ``(N,)``.
    :param pred_adv: Its predictions on the adversarial inputs ``(N,)``.
    :param targets: Target labels ``(N,)`` for a targeted attack, else ``None``.
    :param nonfinite: Samples whose toolkit output held NaN/inf ``(N,)`` (failures), or ``None``.
    :return: ``success`` (attack succeeded on a correctly classified input), ``already_misclassified`` (wrong when
        clean) and ``robust`` (right both clean and after the attack), boolean arrays ``(N,)``.
    """
    y = _as_int_array(labels, "labels")
    clean = _as_int_array(pred_clean, "pred_clean")
    adv = _as_int_array(pred_adv, "pred_adv")
    if not len(y) == len(clean) == len(adv):
        raise ValueError(f"labels, pred_clean and pred_adv must have one entry per sample, got lengths {len(y)}, "
                         f"{len(clean)} and {len(adv)}")
    correct = clean == y
    if targets is not None:
        t = _as_int_array(targets, "targets")
        if len(t) != len(y):
            raise ValueError(f"targets must have {len(y)} entries like labels, got {len(t)}")
        hit = adv == t
    else:
        hit = adv != y
    success = correct & hit
    if nonfinite is not None:
        success &= ~np.asarray(nonfinite, bool)
    return {"success": success, "already_misclassified": ~correct, "robust": correct & (adv == y)}


def success_rate(success: np.ndarray, already_misclassified: np.ndarray | None = None) -> float:
    """Successes over the correctly classified inputs (NaN when there is none)."""
    success = np.asarray(success, bool)
    correct = np.ones_like(success) if already_misclassified is None else ~np.asarray(already_misclassified, bool)
    n = int(correct.sum())
    return float((success & correct).sum() / n) if n else float("nan")


@dataclass
class AttackResult:
    """One backend's run of one spec on one batch.

    :ivar x_adv: Adversarial inputs (CPU float32); failed or non-finite samples equal the input.
    :ivar pred_clean: The judging model's predictions on the clean inputs.
    :ivar success: Attack succeeded on an input the model classifies correctly when clean (``judge_success``):
        judged by re-predicting on ``x_adv`` with the bridge's own model, never by the toolkit's flag.
    :ivar nonfinite: Samples whose raw toolkit output held NaN/inf (counted as failed).
    :ivar already_misclassified: Inputs the model gets wrong when clean (never a success); derived from
        ``pred_clean`` and ``labels`` when not given.
    """

    spec: AttackSpec
    backend: str
    params: dict[str, Any]
    x_adv: torch.Tensor
    labels: np.ndarray
    targets: np.ndarray | None
    pred_clean: np.ndarray | None
    pred_adv: np.ndarray
    success: np.ndarray
    nonfinite: np.ndarray
    norms: dict[str, np.ndarray]
    time_s: float
    seed: int
    versions: dict[str, str] = field(default_factory=library_versions)
    already_misclassified: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.success)

    @property
    def misclassified(self) -> np.ndarray:
        """``already_misclassified`` as given, else from ``pred_clean``; all False when neither is known."""
        if self.already_misclassified is not None:
            return np.asarray(self.already_misclassified, bool)
        if self.pred_clean is not None and self.labels is not None:
            return np.asarray(self.pred_clean) != np.asarray(self.labels)
        return np.zeros(self.n, bool)

    @property
    def n_correct(self) -> int:
        """Inputs the model classifies correctly when clean: the denominator of :attr:`success_rate`."""
        return int((~self.misclassified).sum())

    @property
    def success_rate(self) -> float:
        """Successes over the correctly classified inputs (NaN when there is none)."""
        return success_rate(self.success, self.misclassified)

    @property
    def robust_accuracy(self) -> float:
        """Inputs right both clean and after the attack, over all inputs (NaN without predictions)."""
        if self.pred_adv is None or self.labels is None:
            return float("nan")
        return float((~self.misclassified & (np.asarray(self.pred_adv) == np.asarray(self.labels))).mean())

    def median_norm(self, norm: str, mask: np.ndarray | None = None) -> float:
        """Median ``norm`` over successful samples (and ``mask``); NaN when there are none."""
        keep = self.success & ~self.misclassified
        keep = keep if mask is None else keep & mask
        return float(np.median(self.norms[norm][keep])) if keep.any() else float("nan")

    def summary(self) -> dict[str, float]:
        """Success rate, median norms of the successes (every norm), time and the already-misclassified count."""
        out: dict[str, float] = {"success_rate": self.success_rate}
        for norm in NORM_NAMES:
            out[f"median_{norm}"] = self.median_norm(norm)
        out["time_s"] = self.time_s
        out["already_misclassified"] = int(self.misclassified.sum())
        return out

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per sample."""
        records = []
        misclassified = self.misclassified
        for i in range(self.n):
            rec = {"index": i, "backend": self.backend, "attack": self.spec.name, "norm": self.spec.norm,
                   "label": int(self.labels[i]), "pred_adv": int(self.pred_adv[i]), "success": bool(self.success[i]),
                   "nonfinite": bool(self.nonfinite[i]), "already_misclassified": bool(misclassified[i])}
            if self.targets is not None:
                rec["target"] = int(self.targets[i])
            if self.pred_clean is not None:
                rec["pred_clean"] = int(self.pred_clean[i])
            rec.update({k: float(v[i]) for k, v in self.norms.items()})
            records.append(rec)
        return records


def judge(model, x: torch.Tensor, x_adv: torch.Tensor, labels: torch.Tensor,
          targets: torch.Tensor | None, batch_size: int = 512) -> dict[str, Any]:
    """Judge every toolkit the same way: re-predict on ``x`` and ``x_adv`` and apply :func:`judge_success`;
    non-finite outputs fail and revert to ``x``."""
    x_adv = x_adv.detach().to("cpu", torch.float32).clone()
    nonfinite = ~torch.isfinite(x_adv).flatten(1).all(1)
    x_adv[nonfinite] = x[nonfinite]
    pred_clean = model.predict(x, batch_size).numpy()
    pred_adv = model.predict(x_adv, batch_size).numpy()
    judged = judge_success(labels, pred_clean, pred_adv, targets, nonfinite.numpy())
    return {"x_adv": x_adv, "pred_clean": pred_clean, "pred_adv": pred_adv, "success": judged["success"],
            "already_misclassified": judged["already_misclassified"], "robust": judged["robust"],
            "nonfinite": nonfinite.numpy(), "norms": perturbation_norms(x, x_adv, model.bounds)}
