"""Szegedy's box-constrained L-BFGS attack (Szegedy et al. 2014), native: scipy L-BFGS-B, bisection on c.

For each c, minimise ``c·||x' - x||² + CE(f(x'), t)`` subject to ``x' ∈ bounds``; the search keeps, per
sample, the smallest perturbation that reaches the goal. Untargeted mode aims at the runner-up class
(the nearest by logit), which is the minimal-distortion reading of the paper's protocol.

Every sample is optimised alone, in a batch of one: its own scipy L-BFGS-B run (curvature pairs, line
search, termination test) and its own bisection on ``c``, so its result does not depend on the batch it is
in, its position or the batch size. Evaluating the samples of a batch together is not enough: the float32
round-off of a batched forward pass (~1e-6 in the logits) grows along 100 L-BFGS iterations to differences
of 1e-2 in ``x_adv`` (measured on the tiny test CNN).
"""

from __future__ import annotations

import logging

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator, LossGradientsMixin
from art.utils import to_categorical
from scipy.optimize import Bounds, minimize

from .base import ATTACKS, AttackDef, BuildContext, require_positive

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
    :param batch_size: Batch size of the label predictions when ``y`` is ``None``; the attack itself runs
        one sample at a time, so its result does not depend on the batch.
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
        if isinstance(self.initial_const, bool) or not isinstance(self.initial_const, (int, float)) \
                or not np.isfinite(self.initial_const) or self.initial_const <= 0:
            raise ValueError(f"initial_const must be a positive number, got {self.initial_const!r}")
        for name in ("binary_search_steps", "max_iter", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
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
        for i in range(len(x)):
            out[i] = self._attack_one(x[i:i + 1], int(y[i]))[0]
        return out

    def _attack_one(self, x0: np.ndarray, y: int) -> np.ndarray:
        """One sample (``x0`` of shape ``(1, C, H, W)``): its bisection on ``c``, one L-BFGS-B run per value."""
        if self.targeted:
            target = y
        else:
            logits = self.estimator.predict(x0, batch_size=1)[0]
            logits[y] = -np.inf
            target = int(logits.argmax())
        onehot = to_categorical(np.array([target]), self.estimator.nb_classes)
        c, lo, hi = float(self.initial_const), 0.0, np.inf
        best, best_norm = x0, np.inf
        for step in range(self.binary_search_steps):
            xa = self._minimise(x0, onehot, c)
            pred = int(self.estimator.predict(xa, batch_size=1).argmax(1)[0])
            ok = pred == target if self.targeted else pred != y
            dist = float(np.sqrt(((xa - x0).astype(np.float64) ** 2).sum()))
            if ok and dist < best_norm:
                best, best_norm = xa, dist
            # A success lets c grow (more weight on distortion); a failure makes it shrink.
            if ok:
                lo = max(lo, c)
            else:
                hi = min(hi, c)
            c = float(np.sqrt(lo * hi)) if lo > 0 and np.isfinite(hi) else (c * 10.0 if ok else c / 10.0)
            logger.debug("lbfgs step %d: success=%s l2=%.4g", step, ok, dist)
        return best

    def _minimise(self, x0: np.ndarray, onehot: np.ndarray, c: float) -> np.ndarray:
        shape = x0.shape
        flat0 = x0.reshape(-1).astype(np.float64)

        def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
            xa = v.reshape(shape).astype(np.float32)
            r = v - flat0
            ce = float(np.asarray(self.estimator.compute_loss(xa, onehot, reduction="none"), np.float64).sum())
            grad = per_sample_loss_gradient(self.estimator, xa, onehot).reshape(-1).astype(np.float64)
            return c * float(r @ r) + ce, 2.0 * c * r + grad

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


LBFGS_ATTACK = ATTACKS.add(AttackDef(
    name="lbfgs",
    summary="Szegedy's box-constrained L-BFGS: minimal L2 via scipy L-BFGS-B and a bisection on c (native)",
    norms={"l2": ("native",)},
    defaults={"initial_const": 0.1, "binary_search_steps": 6, "steps": 100},
    targeted_backends=frozenset({"native"}),
    minimization=True,
    derive=_derive,
    build={"native": _native},
), rank=100)
