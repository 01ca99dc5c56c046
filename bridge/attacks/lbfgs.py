"""Szegedy's box-constrained L-BFGS attack (Szegedy et al. 2014), native: scipy L-BFGS-B, bisection on c.

For each c, minimise ``c·||x' - x||² + CE(f(x'), t)`` subject to ``x' ∈ bounds``; the search keeps, per
sample, the smallest perturbation that reaches the goal. Untargeted mode aims at the runner-up class
(the nearest by logit), which is the minimal-distortion reading of the paper's protocol.
"""

from __future__ import annotations

import logging

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator, LossGradientsMixin
from art.utils import to_categorical
from scipy.optimize import Bounds, minimize

from .base import AttackDef, BuildContext, require_positive

logger = logging.getLogger(__name__)


def per_sample_loss_gradient(estimator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∇_x of each sample's own loss (``y``: one-hot), undoing the estimator's mean reduction."""
    grad = estimator.loss_gradient(x, y)
    reduction = getattr(getattr(estimator, "_loss", None), "reduction", "mean")
    return grad * len(x) if reduction == "mean" else grad


class LBFGS(EvasionAttack):
    """Box-constrained L-BFGS attack with a per-sample bisection on the distortion weight ``c``.

    :param estimator: ART classifier with loss gradients and ``clip_values``.
    :param initial_const: First value of ``c``.
    :param binary_search_steps: Number of values of ``c`` tried per sample.
    :param max_iter: L-BFGS-B iterations per value of ``c``.
    :param targeted: Reach ``y`` (targets) rather than leave ``y`` (true labels).
    :param batch_size: Inputs optimised jointly (the objective is separable per sample).
    """

    attack_params = EvasionAttack.attack_params + [
        "initial_const", "binary_search_steps", "max_iter", "targeted", "batch_size"]
    _estimator_requirements = (BaseEstimator, LossGradientsMixin, ClassifierMixin)

    def __init__(self, estimator, initial_const: float = 0.1, binary_search_steps: int = 6, max_iter: int = 100,
                 targeted: bool = False, batch_size: int = 128) -> None:
        super().__init__(estimator=estimator)
        self.initial_const = initial_const
        self.binary_search_steps = binary_search_steps
        self.max_iter = max_iter
        self._targeted = targeted
        self.batch_size = batch_size
        self._check_params()

    def _check_params(self) -> None:
        if not isinstance(self.initial_const, (int, float)) or self.initial_const <= 0:
            raise ValueError(f"initial_const must be a positive number, got {self.initial_const!r}")
        for name in ("binary_search_steps", "max_iter", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.estimator.clip_values is None:
            raise ValueError("estimator must have clip_values: the L-BFGS box constraint needs them")

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """Return minimal adversarial examples; failed samples are returned unchanged.

        :param x: Inputs, float32.
        :param y: Targets when ``targeted``, else true labels (predictions when ``None``); indices or one-hot.
        """
        x = np.asarray(x, dtype=np.float32)
        if y is None:
            if self.targeted:
                raise ValueError("y (target labels) is required for a targeted L-BFGS attack")
            y = self.estimator.predict(x, batch_size=self.batch_size).argmax(1)
        y = np.asarray(y)
        if y.ndim == 2:
            y = y.argmax(1)
        out = x.copy()
        for start in range(0, len(x), self.batch_size):
            sl = slice(start, start + self.batch_size)
            out[sl] = self._attack_batch(x[sl], y[sl])
        return out

    def _attack_batch(self, x0: np.ndarray, y: np.ndarray) -> np.ndarray:
        n = len(x0)
        if self.targeted:
            target = y
        else:
            logits = self.estimator.predict(x0, batch_size=self.batch_size)
            logits[np.arange(n), y] = -np.inf
            target = logits.argmax(1)
        c = np.full(n, float(self.initial_const))
        lo, hi = np.zeros(n), np.full(n, np.inf)
        best, best_norm = x0.copy(), np.full(n, np.inf)
        for step in range(self.binary_search_steps):
            xa = self._minimise(x0, target, c)
            pred = self.estimator.predict(xa, batch_size=self.batch_size).argmax(1)
            ok = pred == target if self.targeted else pred != y
            dist = np.sqrt(((xa - x0).reshape(n, -1).astype(np.float64) ** 2).sum(1))
            better = ok & (dist < best_norm)
            best[better], best_norm[better] = xa[better], dist[better]
            # A success lets c grow (more weight on distortion); a failure makes it shrink.
            lo = np.where(ok, np.maximum(lo, c), lo)
            hi = np.where(ok, hi, np.minimum(hi, c))
            both = (lo > 0) & np.isfinite(hi)
            c = np.where(both, np.sqrt(lo * hi), np.where(ok, c * 10.0, c / 10.0))
            logger.debug("lbfgs step %d: %d/%d succeeded", step, int(ok.sum()), n)
        return best

    def _minimise(self, x0: np.ndarray, target: np.ndarray, c: np.ndarray) -> np.ndarray:
        shape, n = x0.shape, len(x0)
        flat0 = x0.reshape(-1).astype(np.float64)
        weights = np.repeat(c, flat0.size // n)
        onehot = to_categorical(target, self.estimator.nb_classes)

        def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
            xa = v.reshape(shape).astype(np.float32)
            r = v - flat0
            ce = self.estimator.compute_loss(xa, onehot, reduction="none")
            grad = per_sample_loss_gradient(self.estimator, xa, onehot).reshape(-1).astype(np.float64)
            return float((weights * r * r).sum() + np.asarray(ce, np.float64).sum()), 2.0 * weights * r + grad

        low, high = (float(v) for v in self.estimator.clip_values)
        res = minimize(objective, flat0, jac=True, method="L-BFGS-B",
                       bounds=Bounds(np.full(flat0.size, low), np.full(flat0.size, high)),
                       options={"maxiter": self.max_iter})
        return np.clip(res.x.reshape(shape), low, high).astype(np.float32)


def _derive(norm: str, p: dict) -> None:
    require_positive("lbfgs", p, "initial_const", "binary_search_steps", "steps")


def _native(ctx: BuildContext):
    p = ctx.params
    return LBFGS(ctx.model.art(), initial_const=p["initial_const"], binary_search_steps=p["binary_search_steps"],
                 max_iter=p["steps"], targeted=ctx.targeted, batch_size=ctx.batch_size)


LBFGS_ATTACK = AttackDef(
    name="lbfgs",
    summary="Szegedy's box-constrained L-BFGS: minimal L2 via scipy L-BFGS-B and a bisection on c (native)",
    norms={"l2": ("native",)},
    defaults={"initial_const": 0.1, "binary_search_steps": 6, "steps": 100},
    targeted_backends=frozenset({"native"}),
    minimization=True,
    derive=_derive,
    build={"native": _native},
)
