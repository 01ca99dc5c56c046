"""Training-time defenses as ART ``Trainer`` classes: Goodfellow's α-mix adversarial training and entropy regularisation.

Both train the torch model of an ART ``PyTorchClassifier`` (``classifier.model``) in place, from whatever weights it
holds, with Adam or Nesterov SGD (the zoo's optimisers), seeded shuffling and a seeded global RNG (dropout) that is
restored afterwards, and record one ``history`` dict per epoch.

- ``AdversarialTraining`` (algorithms.md §7.3): ``J̃ = α·CE(x, y) + (1−α)·CE(x_adv, y)``, with ``x_adv`` crafted for
  every batch from the current weights (model in eval mode while crafting, train mode for the step). The attack is any
  bridge ``AttackSpec`` (run through ``run_attack`` on the chosen backend) or a callable ``(module, x, y) -> x_adv``.
  With ``entropy_beta = β > 0`` the clean term becomes ``CE(x, y) + β·H(p(x))``: the "both" regime of Cubuk et al.'s
  Figure 5 (§6.6), and ``α = 1`` then reduces exactly to ``EntropyRegularized``.
- ``EntropyRegularized`` (§6.6): ``CE(x, y) + β·H(p(x))`` with ``H(p) = −Σ_k p_k log p_k``, the batch mean. Minimising
  it lowers predictive entropy, i.e. raises confidence and widens logit gaps.

Fast path. Going through ``run_attack`` costs, per batch, the attack's one forward-backward plus: a forward pass in
ART's ``compute_success`` (FGM logs its success rate), the bridge's judging forward pass, for ``step_ll`` a forward pass
for the least-likely labels, numpy round trips and attack construction. For ``fgsm`` (L∞, untargeted, no random start)
and ``step_ll`` on the ``art`` and ``native`` backends, ``craft`` therefore computes the same update directly in torch
with one forward-backward; it replicates ART's arithmetic (``clip(x + ε·sign(∇))`` followed by ART's L∞ projection on
``art``; ``clip(x − ε·sign(∇))`` for the native ``StepLL``), so its output equals the bridge's bit for bit (tested).
``fast_path=False`` forces the bridge. Foolbox and every other attack always go through the bridge.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from art.defences.trainer.trainer import Trainer
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from advbridge.bridge import Model
from advbridge.bridge.attacks import BACKENDS
from advbridge.bridge.model import Normalize
from advbridge.bridge.run import run_attack
from advbridge.bridge.spec import AttackSpec

from .params import check_positive, check_positive_int

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
#: Attacks ``AdversarialTraining`` can craft in torch directly (``fast_path``), on these backends.
FAST_PATH_ATTACKS = ("fgsm", "step_ll")
FAST_PATH_BACKENDS = ("art", "native")


# --------------------------------------------------------------------------- helpers
def predictive_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``H(p) = −Σ_k p_k log p_k`` of ``p = softmax(logits)`` per row, shape ``(B,)``, in nats."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1)


def _check_non_negative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


def as_training_data(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` as a float32 CPU tensor and int64 class indices; ``y`` may be indices or one-hot, numpy or torch."""
    x_t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    if not x_t.is_floating_point():
        raise ValueError(f"x must be floating point, got dtype {x_t.dtype}")
    x_t = x_t.to("cpu", torch.float32)
    y_t = y.detach().cpu() if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y))
    if y_t.dim() == 2:
        y_t = y_t.argmax(1)
    elif y_t.dim() != 1:
        raise ValueError(f"y must be class indices (N,) or one-hot (N, K), got shape {tuple(y_t.shape)}")
    if x_t.dim() < 2 or len(x_t) == 0:
        raise ValueError(f"x must be a non-empty batch of inputs, got shape {tuple(x_t.shape)}")
    if len(x_t) != len(y_t):
        raise ValueError(f"x and y must have the same length, got {len(x_t)} and {len(y_t)}")
    return x_t, y_t.long()


@contextlib.contextmanager
def _preserved_rng(device: torch.device):
    """Run a block without disturbing Python's, numpy's or torch's global RNG (``run_attack`` reseeds them all)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


# --------------------------------------------------------------------------- shared loop
class _TorchTrainer(Trainer):
    """The loop both trainers share: checks, the optimiser, seeded shuffling, progress, history."""

    name = "train"
    #: ``(standardisation + model, model)``, built by ``forward_module`` on first use (unset until then).
    _normalised: tuple[nn.Module, nn.Module]

    def __init__(self, classifier, *, epochs: int, batch_size: int, lr: float, optimizer: str, weight_decay: float,
                 seed: int) -> None:
        super().__init__(classifier)
        self.epochs, self.batch_size, self.lr, self.optimizer = epochs, batch_size, lr, optimizer
        self.weight_decay, self.seed = weight_decay, seed
        self.history: list[dict[str, float]] = []

    def _check_common(self) -> None:
        if not hasattr(self.classifier, "model") or not isinstance(self.classifier.model, nn.Module):
            raise TypeError("classifier must be an ART PyTorchClassifier (with a torch .model)")
        if getattr(self.classifier, "preprocessing_defences", None):
            raise ValueError("classifier must not have preprocessing_defences: the trainers train the torch model on "
                             "raw inputs (wrap defenses around the trained model instead)")
        self._normalisation()  # raises on preprocessing other than mean/std standardisation
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        check_positive(self.lr, "lr")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        _check_non_negative(self.weight_decay, "weight_decay")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    # ------------------------------------------------------------------ the function being trained
    def _normalisation(self) -> tuple[list[float], list[float]] | None:
        """The classifier's mean/std standardisation as per-channel lists, or ``None`` when it is the identity."""
        prep = getattr(self.classifier, "preprocessing", None)
        if prep is None:
            return None
        if not (hasattr(prep, "mean") and hasattr(prep, "std")):
            raise ValueError(f"classifier preprocessing must be mean/std standardisation, got {type(prep).__name__}")
        mean = np.atleast_1d(np.asarray(prep.mean, dtype=np.float64)).ravel()
        std = np.atleast_1d(np.asarray(prep.std, dtype=np.float64)).ravel()
        if np.all(mean == 0) and np.all(std == 1):
            return None
        return [float(m) for m in mean], [float(s) for s in std]

    @property
    def module(self) -> nn.Module:
        """The torch model being trained (``classifier.model``)."""
        return self.classifier.model

    def forward_module(self) -> nn.Module:
        """Raw input → logits: ``classifier.model``, behind the classifier's mean/std standardisation if it has one."""
        norm = self._normalisation()
        if norm is None:
            return self.module
        if getattr(self, "_normalised", None) is None or self._normalised[1] is not self.module:
            self._normalised = (nn.Sequential(Normalize(*norm).to(self.device), self.module), self.module)
        return self._normalised[0]

    @property
    def device(self) -> torch.device:
        param = next(self.module.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.module.parameters()
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ the loop
    def fit(self, x, y, nb_epochs: int | None = None, batch_size: int | None = None, **kwargs) -> None:
        """Train ``classifier.model`` in place; append one dict per epoch to ``history``.

        :param x: Training inputs (numpy or torch), NCHW in the classifier's data range.
        :param y: Labels, class indices or one-hot.
        :param nb_epochs: Epochs for this call (the constructor's ``epochs`` when ``None``).
        :param batch_size: Batch size for this call (the constructor's ``batch_size`` when ``None``).
        """
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s) {sorted(kwargs)}")
        epochs = self.epochs if nb_epochs is None else check_positive_int(nb_epochs, "nb_epochs")
        batch = self.batch_size if batch_size is None else check_positive_int(batch_size, "batch_size")
        x_t, y_t = as_training_data(x, y)
        nb_classes = getattr(self.classifier, "nb_classes", None)
        if nb_classes is not None and (int(y_t.min()) < 0 or int(y_t.max()) >= nb_classes):
            raise ValueError(f"y must hold class indices in [0, {nb_classes}), got range "
                             f"[{int(y_t.min())}, {int(y_t.max())}]")
        device = self.device
        module = self.module
        opt = self._make_optimizer()
        shuffle = torch.Generator().manual_seed(int(self.seed))
        step = 0
        with _preserved_rng(device):
            torch.manual_seed(int(self.seed))  # dropout masks; the caller's RNG is restored afterwards
            bar = tqdm(range(epochs), desc=self.name, unit="epoch", leave=False)
            for _ in bar:
                start_time = time.perf_counter()
                totals: dict[str, float] = {}
                perm = torch.randperm(len(x_t), generator=shuffle)
                for start in range(0, len(x_t), batch):
                    idx = perm[start:start + batch]
                    xb, yb = x_t[idx].to(device), y_t[idx].to(device)
                    stats = self._train_step(xb, yb, opt, step)
                    step += 1
                    for key, value in stats.items():
                        weight = 1 if key.endswith("_s") else len(idx)
                        totals[key] = totals.get(key, 0.0) + value * weight
                record = {"epoch": len(self.history) + 1,
                          **{k: (v if k.endswith("_s") else v / len(x_t)) for k, v in totals.items()},
                          "time_s": time.perf_counter() - start_time}
                self.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                logger.info("%s epoch %d: %s", self.name, record["epoch"],
                            ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
        module.eval()

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
                    step: int) -> dict[str, float]:
        raise NotImplementedError

    def _clean_terms(self, x: torch.Tensor, y: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
        logits = self.forward_module()(x)
        ce = F.cross_entropy(logits, y)
        entropy = predictive_entropy(logits).mean()
        return {"ce": ce, "entropy": entropy, "clean": ce + beta * entropy if beta > 0 else ce,
                "accuracy": (logits.argmax(1) == y).float().mean()}


# --------------------------------------------------------------------------- entropy regularisation
class EntropyRegularized(_TorchTrainer):
    """Train with ``CE(x, y) + β·H(p(x))`` (Cubuk et al., algorithms.md §6.6): lowers predictive entropy.

    :param classifier: ART ``PyTorchClassifier``; ``classifier.model`` is trained in place.
    :param beta: ``β ≥ 0``, the weight of the mean predictive entropy (the paper gives no coefficient: 1). ``β = 0``
        is plain cross-entropy training.
    :param epochs: Passes over the training set (``fit``'s ``nb_epochs`` overrides it).
    :param batch_size: Examples per step.
    :param lr: Learning rate.
    :param optimizer: ``adam`` or ``sgd`` (momentum 0.9, Nesterov), as in the zoo.
    :param weight_decay: L2 penalty passed to the optimiser.
    :param seed: Seeds the shuffling and the global torch RNG during ``fit`` (restored afterwards).
    """

    name = "entropy-regularised training"

    def __init__(self, classifier, *, beta: float = 1.0, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3,
                 optimizer: str = "adam", weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(classifier, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                         weight_decay=weight_decay, seed=seed)
        self.beta = beta
        self._check_params()

    def _check_params(self) -> None:
        self._check_common()
        _check_non_negative(self.beta, "beta")

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss", "ce", "entropy", "accuracy"}`` on one batch, in the module's current mode."""
        terms = self._clean_terms(x, y, float(self.beta))
        return {"loss": terms["clean"], "ce": terms["ce"], "entropy": terms["entropy"], "accuracy": terms["accuracy"]}

    def _train_step(self, x, y, opt, step):
        self.module.train()
        terms = self.loss_terms(x, y)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}


# --------------------------------------------------------------------------- adversarial training
class AdversarialTraining(_TorchTrainer):
    """Goodfellow et al.'s adversarial training (algorithms.md §7.3): ``α·CE(x, y) + (1−α)·CE(x_adv, y)``.

    ``x_adv`` is crafted for every batch from the current weights, with the model in eval mode; the step runs in
    train mode. With ``α = 0.5`` this is also the expectation of Kurakin et al.'s "half of each batch adversarial"
    (λ = 1), which Cubuk et al. use, at twice the examples per step and lower variance.

    :param classifier: ART ``PyTorchClassifier``; ``classifier.model`` is trained in place.
    :param attack: A bridge ``AttackSpec`` (run through ``run_attack`` on ``backend``, on a bridge ``Model`` sharing
        ``classifier.model`` with the classifier's clip values, input shape and standardisation), or a callable
        ``(module, x, y) -> x_adv`` receiving the raw-input → logits module (``classifier.model`` unless the
        classifier standardises) in eval mode and ``x``, ``y`` on the model's device.
    :param alpha: ``α ∈ [0, 1]``, the weight of the clean term (Goodfellow: 0.5). At ``α = 1`` nothing is crafted.
    :param entropy_beta: ``β ≥ 0``: adds ``β·H(p(x))`` to the clean term (clean inputs only), so the objective is
        ``α·(CE(x, y) + β·H(p(x))) + (1−α)·CE(x_adv, y)``: the "both" regime of Cubuk et al.'s Figure 5.
    :param epochs: Passes over the training set (``fit``'s ``nb_epochs`` overrides it).
    :param batch_size: Examples per step (each also crafted adversarially).
    :param lr: Learning rate.
    :param optimizer: ``adam`` or ``sgd`` (momentum 0.9, Nesterov), as in the zoo.
    :param weight_decay: L2 penalty passed to the optimiser.
    :param backend: Bridge backend for an ``AttackSpec``: ``art``, ``foolbox`` or ``native``.
    :param seed: Seeds the shuffling and the global torch RNG during ``fit``; batch ``k`` is attacked with
        ``run_attack(seed=seed + k)`` (random starts and targets differ between batches).
    :param fast_path: Craft ``fgsm`` (L∞, untargeted, no random start) and ``step_ll`` in torch, bit-identical to the
        bridge on ``art``/``native`` (module docstring); ``False`` always goes through ``run_attack``.
    """

    name = "adversarial training"

    def __init__(self, classifier, attack: AttackSpec | Callable, *, alpha: float = 0.5, entropy_beta: float = 0.0,
                 epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, optimizer: str = "adam",
                 weight_decay: float = 0.0, backend: str = "art", seed: int = 0, fast_path: bool = True) -> None:
        super().__init__(classifier, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                         weight_decay=weight_decay, seed=seed)
        self.attack, self.alpha, self.entropy_beta = attack, alpha, entropy_beta
        self.backend, self.fast_path = backend, fast_path
        self._bridge_model: Model | None = None
        self._check_params()

    def _check_params(self) -> None:
        self._check_common()
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be a number in [0, 1], got {self.alpha!r}")
        _check_non_negative(self.entropy_beta, "entropy_beta")
        if not isinstance(self.fast_path, bool):
            raise ValueError(f"fast_path must be True or False, got {self.fast_path!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if isinstance(self.attack, AttackSpec):
            spec = self.attack
            spec.definition.check_backend(self.backend, spec.norm, spec.resolved_params(), spec.is_targeted)
            if getattr(self.classifier, "clip_values", None) is None:
                raise ValueError("classifier must have clip_values (the data range) to run a bridge attack")
        elif not callable(self.attack):
            raise ValueError(f"attack must be an AttackSpec or a callable (module, x, y) -> x_adv, "
                             f"got {type(self.attack).__name__}")

    # ------------------------------------------------------------------ crafting
    @property
    def uses_fast_path(self) -> bool:
        """Whether ``craft`` computes the attack in torch rather than through ``run_attack``."""
        spec = self.attack
        if not (self.fast_path and isinstance(spec, AttackSpec) and self.backend in FAST_PATH_BACKENDS):
            return False
        if spec.name == "step_ll":
            return True
        return (spec.name == "fgsm" and spec.norm == "linf" and not spec.is_targeted
                and not spec.resolved_params()["random_start"])

    def bridge_model(self) -> Model:
        """The bridge ``Model`` the spec runs on: it shares ``classifier.model`` (so it sees the current weights)."""
        if self._bridge_model is None or self._bridge_model.module is not self.module:
            clf = self.classifier
            norm = self._normalisation()
            mean, std = norm if norm is not None else (None, None)
            low, high = (float(v) for v in np.asarray(clf.clip_values, dtype=np.float32).ravel()[:2])
            self._bridge_model = Model(self.module, tuple(clf.input_shape), bounds=(low, high), mean=mean, std=std,
                                       nb_classes=clf.nb_classes, device=self.device)
        return self._bridge_model

    def craft(self, x: torch.Tensor, y: torch.Tensor, step: int = 0) -> torch.Tensor:
        """Adversarial examples of ``(x, y)`` from the current weights, on ``x``'s device (module in eval mode).

        :param x: Inputs on the model's device.
        :param y: Class indices.
        :param step: Batch counter; a bridge attack runs with ``seed + step``.
        """
        module = self.module
        was_training = module.training
        module.eval()
        try:
            if self.uses_fast_path:
                x_adv = self._craft_fast(x, y)
            elif isinstance(self.attack, AttackSpec):
                with _preserved_rng(self.device):
                    result = run_attack(self.bridge_model(), x.detach().cpu(), y.detach().cpu(), self.attack,
                                        self.backend, seed=int(self.seed) + step, batch_size=len(x), progress=False)
                x_adv = result.x_adv
            else:
                x_adv = self.attack(self.forward_module(), x, y)
                if not isinstance(x_adv, torch.Tensor):
                    x_adv = torch.from_numpy(np.asarray(x_adv, dtype=np.float32))
                if x_adv.shape != x.shape:
                    raise ValueError(f"the attack returned shape {tuple(x_adv.shape)} for inputs of shape "
                                     f"{tuple(x.shape)}")
        finally:
            module.train(was_training)
        return x_adv.detach().to(x.device, torch.float32)

    def _craft_fast(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One forward-backward: ART's FGM arithmetic (or the native ``StepLL``'s), in torch."""
        spec = cast(AttackSpec, self.attack)  # only called when uses_fast_path, which requires an AttackSpec
        eps = float(spec.resolved_params()["eps"])
        low, high = (float(v) for v in np.asarray(self.classifier.clip_values, dtype=np.float32).ravel()[:2])
        x0 = x.detach().to(torch.float32)
        x_var = x0.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = self.forward_module()(x_var)
            if spec.name == "step_ll":  # the least-likely class other than the label, as the bridge resolves it
                target = logits.detach().scatter(1, y.view(-1, 1), float("inf")).argmin(1)
            else:
                target = y
            grad, = torch.autograd.grad(F.cross_entropy(logits, target), x_var)
        grad = torch.where(torch.isnan(grad), torch.zeros_like(grad), grad)  # ART replaces NaN gradients by 0
        if spec.name == "step_ll" and self.backend == "native":
            return (x0 - eps * grad.sign()).clamp(low, high)
        direction = -grad if spec.name == "step_ll" else grad  # ART: targeted FGM descends the target's loss
        x1 = (x0 + eps * direction.sign()).clamp(low, high)
        # ART then projects x1 - x0 on the L∞ ball of radius eps (in float64, cast back) and adds it to x0. This is
        # nearly always the identity; it is replicated so the result stays bit-identical in the rare rounding cases.
        delta = x1 - x0
        delta = (delta.sign().double() * torch.minimum(delta.abs().double(), torch.tensor(eps, dtype=torch.float64,
                                                                                          device=delta.device)))
        return x0 + delta.float()

    # ------------------------------------------------------------------ the objective
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The objective on one batch, in the module's current mode.

        :returns: ``loss = α·(ce + β·entropy) + (1−α)·ce_adv`` (just the clean term when ``x_adv`` is ``None``), with
            ``ce``, ``entropy`` (mean predictive entropy on ``x``), ``ce_adv`` and the batch accuracies.
        """
        beta, alpha = float(self.entropy_beta), float(self.alpha)
        terms = self._clean_terms(x, y, beta)
        out = {"ce": terms["ce"], "entropy": terms["entropy"], "accuracy": terms["accuracy"]}
        if x_adv is None:
            out["loss"] = terms["clean"]
            return out
        logits_adv = self.forward_module()(x_adv)
        out["ce_adv"] = F.cross_entropy(logits_adv, y)
        out["accuracy_adv"] = (logits_adv.argmax(1) == y).float().mean()
        out["loss"] = alpha * terms["clean"] + (1 - alpha) * out["ce_adv"]
        return out

    def _train_step(self, x, y, opt, step):
        start = time.perf_counter()
        x_adv = self.craft(x, y, step) if self.alpha < 1 else None
        craft_s = time.perf_counter() - start
        self.module.train()
        terms = self.loss_terms(x, y, x_adv)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        return {**{k: float(v.detach()) for k, v in terms.items()}, "craft_s": craft_s}
