"""Shared machinery of the Kos, Fischer & Song (2017) attacks on generative models (algorithms.md §4), native.

Each attack minimises, over ``x*`` in the data box, ``objective(x*, x, y_t) + lam·‖x − x*‖₂`` (plain, not
squared, L2: §4.2) for a target class ``y_t``; the subclasses (``kos_classifier``, ``kos_latent``, ``kos_vae``)
define ``objective``.

Optimisation (the paper's optimiser was not recovered; §4.2 [R]): Adam over ``x*`` started at ``x``, with
``x*`` clipped to the estimator's ``clip_values`` after every step (projected Adam: the box of §4.1 is kept
exactly, with no change of variables). The per-sample losses are summed, so each sample's update does not
depend on the others in its batch.

What is returned: success is judged by the attacked ART classifier (``estimator.predict(x*) == y_t``, for a
`GenerativeClassifier` with feedback the reconstruction-feedback prediction of §4.3), every ``check_every``
steps and after the last one. Per sample the successful ``x*`` with the smallest L2 distortion among those
checks is kept; a sample never judged successful gets the final ``x*``.

The generative model's pieces are duck-typed (``bridge`` does not import ``defenses``): ``generative`` is a
module with ``encode_mean(x) -> (B, d)``, ``decode(z)``, ``classify_latent(z) -> logits``,
``target_image(t) -> images`` and, for the VAE attack, ``neg_elbo(x_in, x_target) -> (B,)`` — e.g.
``advbridge.defenses.generative.GenerativeClassifier``. It is applied to raw inputs and run, in eval mode, on
the device of its parameters.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator
from torch import nn

from .base import AttackDef, BuildContext, require_positive

logger = logging.getLogger(__name__)

#: Methods every Kos attack needs on the generative module.
GENERATIVE_METHODS = ("encode_mean", "decode", "classify_latent", "target_image")
#: Shared defaults. The penalty lam·‖δ‖₂ has a gradient of norm lam everywhere, so a sample stops moving once the
#: objective's gradient is weaker than lam: lam sets the success/distortion trade-off, and its scale depends on the
#: objective (§4.2 [R] recommends a log grid 1e-4..10 and the best lam per pair). lam = 0.1 sits at the
#: success-favouring end: on a small MNIST VAE (tests/bridge/test_kos.py) the latent and classifier attacks reach
#: 95-100% of random targets for lam in 0.01..1, while lam = 3 (classifier) and 10 (latent) cut both success and
#: L2 sharply; the VAE attack's objective is in nats summed over pixels, so there lam only bites from about 10.
#: 500 Adam steps at lr 0.01 (§4.2 [R]: Adam, lr 1e-2, 1000-5000 steps; the per-sample best is kept, see above).
KOS_DEFAULTS = {"lam": 0.1, "steps": 500, "learning_rate": 0.01}


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


class KosAttack(EvasionAttack):
    """Targeted attack on a generative model: minimise ``objective(x*, x, y_t) + lam·‖x − x*‖₂`` by projected Adam.

    :param estimator: ART classifier of the attacked system (e.g. ``Model(GenerativeClassifier(...)).art()``);
        it judges success and supplies ``clip_values`` (the box ``x*`` is clipped to).
    :param generative: The generative module (see the module docstring for its methods).
    :param lam: λ, weight of the plain L2 distance ``‖x − x*‖₂``.
    :param steps: Adam steps.
    :param learning_rate: Adam learning rate.
    :param batch_size: Inputs optimised jointly (the loss is separable per sample).
    :param check_every: Judge success (and keep the best ``x*``) every this many steps and after the last;
        ``max(1, steps // 20)`` when ``None``.
    """

    attack_params = EvasionAttack.attack_params + [
        "generative", "lam", "steps", "learning_rate", "batch_size", "check_every"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)
    #: Methods the generative module must have for this attack.
    required_methods: tuple[str, ...] = GENERATIVE_METHODS

    def __init__(self, estimator, generative: nn.Module, lam: float = 0.1, steps: int = 500,
                 learning_rate: float = 0.01, batch_size: int = 128, check_every: int | None = None) -> None:
        super().__init__(estimator=estimator)
        self.generative: Any = generative  # an nn.Module with the methods above (checked in _check_params)
        self.lam = lam
        self.steps = steps
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.check_every = check_every
        self._targeted = True
        self._memo: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        #: Mean penalised loss before each step, one list per batch of the last ``generate`` call.
        self.loss_history: list[list[float]] = []
        self._check_params()

    def _check_params(self) -> None:
        missing = [m for m in self.required_methods if not callable(getattr(self.generative, m, None))]
        if not isinstance(self.generative, nn.Module) or missing:
            raise ValueError(f"generative must be a torch module with {', '.join(self.required_methods)}, "
                             f"got {type(self.generative).__name__}")
        for name in ("lam", "learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.check_every is not None and (isinstance(self.check_every, bool)
                                             or not isinstance(self.check_every, (int, np.integer))
                                             or self.check_every < 1):
            raise ValueError(f"check_every must be a positive integer or None, got {self.check_every!r}")
        if self.estimator.clip_values is None:
            raise ValueError("estimator must have clip_values: the Kos attacks clip x* to the data box")

    # ------------------------------------------------------------------ the loss
    @abc.abstractmethod
    def objective(self, x_adv: torch.Tensor, x_orig: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
        """Per-sample attack loss ``(B,)`` without the λ term (differentiable in ``x_adv``)."""
        raise NotImplementedError

    def loss(self, x_adv: torch.Tensor, x_orig: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
        """Per-sample penalised loss ``objective + lam·‖x_orig − x_adv‖₂``, shape ``(B,)``."""
        distance = torch.linalg.vector_norm((x_adv - x_orig).flatten(1), dim=1)
        return self.objective(x_adv, x_orig, target_labels) + self.lam * distance

    def memoised(self, key: str, target_labels: torch.Tensor,
                 compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``compute(target_labels)`` without gradient, computed once per batch during ``generate``."""
        if self._memo is not None and key in self._memo and self._memo[key][0] is target_labels:
            return self._memo[key][1]
        with torch.no_grad():
            value = compute(target_labels)
        if self._memo is not None:
            self._memo[key] = (target_labels, value)
        return value

    @property
    def device(self) -> torch.device:
        """Where the attack runs: the device of the generative module's parameters."""
        return _module_device(self.generative)

    # ------------------------------------------------------------------ ART interface
    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """Return adversarial examples toward ``y``.

        :param x: Inputs within ``clip_values``, float32.
        :param y: Target class indices ``(N,)`` or one-hot ``(N, K)``; required (the attacks are targeted).
        """
        if y is None:
            raise ValueError(f"y (target labels) is required: {type(self).__name__} is a targeted attack")
        x = np.asarray(x, dtype=np.float32)
        targets = np.asarray(y)
        if targets.ndim == 2:
            targets = targets.argmax(1)
        if targets.ndim != 1 or len(targets) != len(x):
            raise ValueError(f"y must hold one target per input ({len(x)}), got shape {np.asarray(y).shape}")
        targets = targets.astype(np.int64)
        nb_classes = self.estimator.nb_classes
        if len(targets) and (targets.min() < 0 or targets.max() >= nb_classes):
            raise ValueError(f"target labels must lie in [0, {nb_classes}), got {targets.min()}..{targets.max()}")
        out = np.empty_like(x)
        self.loss_history = []
        was_training = self.generative.training
        self.generative.eval()
        try:
            for start in range(0, len(x), self.batch_size):
                sl = slice(start, start + self.batch_size)
                out[sl] = self._attack_batch(x[sl], targets[sl])
        finally:
            self.generative.train(was_training)
            self._memo = None
        return out

    def _attack_batch(self, x0_np: np.ndarray, t_np: np.ndarray) -> np.ndarray:
        device = self.device
        n = len(x0_np)
        low, high = (float(v) for v in self.estimator.clip_values)
        x0 = torch.from_numpy(x0_np).to(device)
        t = torch.from_numpy(t_np).to(device)
        self._memo = {}
        x_adv = x0.clone().requires_grad_(True)
        opt = torch.optim.Adam([x_adv], lr=self.learning_rate)
        check_every = self.check_every or max(1, self.steps // 20)
        best = x0.clone()
        best_dist = torch.full((n,), float("inf"), device=device)
        found = torch.zeros(n, dtype=torch.bool, device=device)
        history: list[float] = []
        for step in range(1, self.steps + 1):
            loss = self.loss(x_adv, x0, t)
            grad, = torch.autograd.grad(loss.sum(), x_adv)
            history.append(float(loss.detach().mean()))
            x_adv.grad = grad
            opt.step()
            with torch.no_grad():
                x_adv.clamp_(low, high)
                if step % check_every == 0 or step == self.steps:
                    current = x_adv.detach()
                    pred = self.estimator.predict(current.cpu().numpy(), batch_size=n).argmax(1)
                    success = torch.from_numpy(pred).to(device) == t
                    dist = torch.linalg.vector_norm((current - x0).flatten(1), dim=1)
                    better = success & (dist < best_dist)
                    best[better] = current[better]
                    best_dist[better] = dist[better]
                    found |= success
        self.loss_history.append(history)
        with torch.no_grad():
            best[~found] = x_adv.detach()[~found]
        logger.debug("%s: %d/%d reached the target", type(self).__name__, int(found.sum()), n)
        return best.cpu().numpy()


# ---------------------------------------------------------------------- registry helpers
def _derive(name: str) -> Callable[[str, dict], None]:
    def derive(norm: str, p: dict) -> None:
        require_positive(name, p, "lam", "steps", "learning_rate")
    return derive


def _native_builder(name: str, attack_cls: type[KosAttack]) -> Callable[[BuildContext], KosAttack]:
    def build(ctx: BuildContext) -> KosAttack:
        module = ctx.model.module
        needed = attack_cls.required_methods
        if not all(callable(getattr(module, m, None)) for m in needed):
            raise ValueError(f"attack '{name}' needs a generative classifier model (a module with "
                             f"{', '.join(needed)}), got {type(module).__name__}")
        if ctx.model.preprocessing or ctx.model.mean is not None:
            raise ValueError(f"attack '{name}' applies the generative model to raw inputs, so the Model must have "
                             "no preprocessing and no mean/std normalisation")
        p = ctx.params
        estimator = ctx.model.art()  # also moves the module to the model's device
        return attack_cls(estimator, module, lam=p["lam"], steps=p["steps"], learning_rate=p["learning_rate"],
                          batch_size=ctx.batch_size)
    return build


def kos_attack_def(name: str, summary: str, attack_cls: type[KosAttack]) -> AttackDef:
    """The `AttackDef` of one Kos attack: L2, native only, always targeted."""
    return AttackDef(
        name=name,
        summary=summary,
        norms={"l2": ("native",)},
        defaults=dict(KOS_DEFAULTS),
        targeted_backends=frozenset({"native"}),
        requires_target=True,
        derive=_derive(name),
        build={"native": _native_builder(name, attack_cls)},
    )
