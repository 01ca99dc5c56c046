"""Step-LL: one FGSM step toward the least-likely class (Kurakin et al. 2017), native and on both toolkits.

``StepLL`` is an ART ``EvasionAttack`` so that ART users can call it directly on any ART classifier with
loss gradients. The same update is a targeted FGSM on ART and a one-step targeted BIM on Foolbox.
"""

from __future__ import annotations

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator, LossGradientsMixin
from art.utils import to_categorical

from .base import ATTACKS, AttackDef, BuildContext, require_positive
from .fgsm import FGSM


class StepLL(EvasionAttack):
    """Targeted FGSM toward the least-likely class: ``x' = clip(x - eps * sign(∇_x CE(f(x), argmin f(x))))``.

    :param estimator: ART classifier with loss gradients.
    :param eps: L∞ step size.
    :param batch_size: Inputs per gradient call.
    """

    attack_params = EvasionAttack.attack_params + ["eps", "batch_size"]
    _estimator_requirements = (BaseEstimator, LossGradientsMixin, ClassifierMixin)

    def __init__(self, estimator, eps: float = 0.1, batch_size: int = 128) -> None:
        super().__init__(estimator=estimator)
        self.eps = eps
        self.batch_size = batch_size
        self._targeted = True
        self._check_params()

    def _check_params(self) -> None:
        if not isinstance(self.eps, (int, float)) or self.eps <= 0:
            raise ValueError(f"eps must be a positive number, got {self.eps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """Return adversarial examples; ``y`` (the least-likely labels) is computed when not given.

        :param x: Inputs, float32.
        :param y: Target class indices or one-hot; ``None`` uses the least-likely class of each input.
        """
        x = np.asarray(x, dtype=np.float32)
        out = np.empty_like(x)
        for start in range(0, len(x), self.batch_size):
            xb = x[start:start + self.batch_size]
            if y is None:
                target = self.estimator.predict(xb, batch_size=self.batch_size).argmin(1)
            else:
                target = np.asarray(y)[start:start + self.batch_size]
                if target.ndim == 2:
                    target = target.argmax(1)
            grad = self.estimator.loss_gradient(xb, to_categorical(target, self.estimator.nb_classes))
            adv = xb - self.eps * np.sign(grad)
            if self.estimator.clip_values is not None:
                adv = np.clip(adv, *self.estimator.clip_values)
            out[start:start + self.batch_size] = adv
        return out


def _derive(norm: str, p: dict) -> None:
    require_positive("step_ll", p, "eps")


def _native(ctx: BuildContext):
    return StepLL(ctx.model.art(), eps=ctx.params["eps"], batch_size=ctx.batch_size)


def _as_fgsm(builder):
    def build(ctx: BuildContext):
        return builder(BuildContext(ctx.model, ctx.norm, {**ctx.params, "random_start": False}, True, ctx.batch_size))
    return build


STEP_LL = ATTACKS.add(AttackDef(
    name="step_ll",
    summary="FGSM toward the least-likely class (native; also a targeted FGSM on ART and Foolbox)",
    norms={"linf": ("native", "art", "foolbox")},
    defaults={"eps": 0.1},
    targeted_backends=frozenset({"native", "art", "foolbox"}),
    fixed_target="least_likely",
    same_algorithm=True,
    derive=_derive,
    build={"native": _native, "art": _as_fgsm(FGSM.build["art"]), "foolbox": _as_fgsm(FGSM.build["foolbox"])},
), rank=90)
