"""Invert-and-Classify (Ilyas et al. 2017) on Defense-GAN's projection (Samangouei et al. 2018); algorithms.md §3.

``InvertAndClassify`` is an ART ``PreprocessorPyTorch`` (a MagNet ``Reformer`` whose autoencoder is ``G∘argmin``,
the ``GeneratorProjection`` of ``projection.py``), so ``Model(classifier, preprocessing=[inc])`` is attackable from
ART and Foolbox and ``MagNet(classifier, {}, inc)`` evaluates it. The projection shares its seeded starts across
images, so the judge, ART and MagNet, which batch differently, all see one function of the image.
``EnhancedInvertAndClassify`` is an ART ``Trainer`` for the robust retraining of §3.1.
"""

from __future__ import annotations

import logging
import math
from typing import cast

import numpy as np
import torch
from art.defences.trainer.trainer import Trainer
from torch import nn
from tqdm.auto import tqdm

from ..bridge.validation import check_labels
from .magnet import Reformer
from .params import check_images, check_positive, check_positive_int
from .projection import GeneratorProjection

logger = logging.getLogger(__name__)


class InvertAndClassify(Reformer):
    """Invert-and-Classify / Defense-GAN as an ART ``PreprocessorPyTorch``: ``x ↦ clip(G(z*(x)))``.

    A MagNet ``Reformer`` whose autoencoder is the projection, so it drops into ``Model(..., preprocessing=[…])``,
    ART's ``preprocessing_defences`` and ``MagNet(classifier, {}, inc)`` alike.

    :param generator: ``z -> images`` (a VAE decoder, a WGAN-GP generator, an α-GAN generator).
    :param latent_dim: ``d``.
    :param steps: ``L`` (200).
    :param restarts: ``R`` (10), batched as ``(B·R, d)``.
    :param lr: Step size (10, momentum SGD).
    :param momentum: 0.7.
    :param init_std: ``sqrt(1/d)`` by default.
    :param optimizer: ``sgd`` or ``adam``.
    :param gradient: ``bpda`` or ``unrolled`` (module docstring).
    :param bounds: Data range the output is clamped to.
    :param seed: Seeds ``z₀``, shared by every image: the output for an image does not depend on its batch.
    :param device_type: ``cpu`` or ``gpu`` (ART's convention); the generator follows its input's device anyway.

    Inputs must be ``(N, *projection.image_shape)`` inside ``bounds``; anything else is a ``ValueError``.
    """

    def __init__(self, generator: nn.Module, latent_dim: int, *, steps: int = 200, restarts: int = 10,
                 lr: float = 10.0, momentum: float = 0.7, init_std: float | None = None, optimizer: str = "sgd",
                 gradient: str = "bpda", bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0,
                 device_type: str = "cpu") -> None:
        projection = GeneratorProjection(generator, latent_dim, steps=steps, restarts=restarts, lr=lr,
                                         momentum=momentum, init_std=init_std, optimizer=optimizer,
                                         gradient=gradient, bounds=bounds, seed=seed)
        super().__init__(projection, bounds, device_type, input_shape=projection.image_shape)
        self._check_params()

    @classmethod
    def around(cls, projection: GeneratorProjection, device_type: str = "cpu") -> "InvertAndClassify":
        """Invert-and-Classify on an existing projection (systems sharing it share its memoised results)."""
        if not isinstance(projection, GeneratorProjection):
            raise TypeError(f"projection must be a GeneratorProjection, got {type(projection).__name__}")
        inc = cls.__new__(cls)
        Reformer.__init__(inc, projection, projection.settings["bounds"], device_type,
                          input_shape=projection.image_shape)
        inc._check_params()
        return inc

    @property
    def projection(self) -> GeneratorProjection:
        # Both constructors (__init__ and around) give the Reformer a GeneratorProjection as its ae.
        return cast(GeneratorProjection, self.ae)

    def forward(self, x: torch.Tensor, y=None):
        # The projection's output is already inside the bounds. A second clamp (the Reformer's) would zero the
        # straight-through gradient wherever G(z*) sits exactly on a bound.
        return self.ae(x.float()), y

    def _check_params(self) -> None:
        low, high = self.bounds
        if not low < high:
            raise ValueError(f"bounds must be (low, high) with low < high, got {self.bounds!r}")


class EnhancedInvertAndClassify(Trainer):
    """Enhanced INC (§3.1): retrain the classifier on the generator's manifold with a robustness term.

    ``min_θ μ·sup_{‖G(z)−G(z')‖² ≤ η²} ‖C(G(z)) − C(G(z'))‖² + (1−μ)·mean_i CE(y_i, C(x_i))``, with the
    cross-entropy on the training images ``x_i`` themselves, as in §3.1. The anchors ``z`` of the sup are the
    projections ``z*_i`` of the training images, and ``C`` outputs probabilities in the first term. The inner sup is
    solved by ``inner_steps`` of signed ascent on ``z'`` from ``z*`` plus small noise, with the constraint as a
    penalty ``penalty·max(0, ‖G(z)−G(z')‖² − η²)`` (Lagrangian, [R] in algorithms.md), per-sample squared L2 over
    pixels.

    ``C`` is the ART classifier's whole prediction function (``logits``): its predict-time preprocessing chain
    (defences, then the mean/std standardisation), then its torch model, so the function trained is the one
    ``classifier.predict`` computes and the one a ``Model`` with the same mean/std judges.

    :param classifier: ART ``PyTorchClassifier`` whose preprocessing operations are all ``PreprocessorPyTorch``;
        its torch model is fine-tuned in place.
    :param projection: ``GeneratorProjection`` used to project the training images (a cheaper one than the
        defense's is fine: the default suite uses L = 100, R = 2).
    :param mu: ``μ`` (0.5).
    :param eta: ``η``, in L2 on the data range (0.5 on [0, 1] MNIST).
    :param epochs: Passes over the training set.
    :param batch_size: Images per step.
    :param lr: Adam learning rate.
    :param inner_steps: Ascent steps of the inner sup.
    :param inner_lr: Ascent step size in latent space.
    :param penalty: Weight of the constraint violation.
    :param seed: Seeds shuffling and the inner initialisation.
    """

    def __init__(self, classifier, projection: GeneratorProjection, *, mu: float = 0.5, eta: float = 0.5,
                 epochs: int = 5, batch_size: int = 64, lr: float = 1e-4, inner_steps: int = 5,
                 inner_lr: float = 0.05, penalty: float = 10.0, seed: int = 0) -> None:
        super().__init__(classifier)
        self.projection = projection
        self.mu, self.eta, self.epochs, self.batch_size, self.lr = mu, eta, epochs, batch_size, lr
        self.inner_steps, self.inner_lr, self.penalty, self.seed = inner_steps, inner_lr, penalty, seed
        self.history: list[dict[str, float]] = []
        self._check_params()

    def _check_params(self) -> None:
        from art.defences.preprocessor.preprocessor import PreprocessorPyTorch

        if not isinstance(self.projection, GeneratorProjection):
            raise TypeError(f"projection must be a GeneratorProjection, got {type(self.projection).__name__}")
        if not hasattr(self.classifier, "model") or not isinstance(self.classifier.model, nn.Module):
            raise TypeError("classifier must be an ART PyTorchClassifier (with a torch .model)")
        for i, op in enumerate(getattr(self.classifier, "preprocessing_operations", None) or []):
            if not isinstance(op, PreprocessorPyTorch):
                raise TypeError(f"classifier.preprocessing_operations[{i}] is {type(op).__name__}, not a "
                                f"PreprocessorPyTorch: the classifier cannot be trained through it")
        if isinstance(self.mu, bool) or not isinstance(self.mu, (int, float)) or not 0 <= self.mu <= 1:
            raise ValueError(f"mu must be a number in [0, 1], got {self.mu!r}")
        check_positive(self.eta, "eta")
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        check_positive(self.lr, "lr")
        if isinstance(self.inner_steps, bool) or not isinstance(self.inner_steps, int) or self.inner_steps < 0:
            raise ValueError(f"inner_steps must be a non-negative integer, got {self.inner_steps!r}")
        check_positive(self.inner_lr, "inner_lr")
        if isinstance(self.penalty, bool) or not isinstance(self.penalty, (int, float)) or self.penalty < 0 \
                or not math.isfinite(self.penalty):
            raise ValueError(f"penalty must be a non-negative finite number, got {self.penalty!r}")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``C(x)``: the ART classifier's predict-time preprocessing chain, then its model; differentiable.

        The same operations, in the same order, as ``classifier.predict`` (ART's ``_apply_preprocessing`` with
        ``fit=False``), so training this trains the function that is judged.
        """
        for op in self.classifier.preprocessing_operations or []:
            if op.apply_predict:
                x, _ = op.forward(x, None)
        return self.classifier.model(x)

    def project_dataset(self, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes and images ``(z*, G(z*))`` of every training image, batch by batch with a progress bar."""
        device = self._device()
        zs, images = [], []
        for start in tqdm(range(0, len(x), batch_size), desc="project training images", unit="batch", leave=False):
            with torch.no_grad():
                p = self.projection.project(x[start:start + batch_size].to(device))
            zs.append(p.z.cpu())
            images.append(p.images.cpu())
        return torch.cat(zs), torch.cat(images)

    def _device(self) -> torch.device:
        param = next(self.classifier.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def _check_data(self, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        clip = getattr(self.classifier, "clip_values", None)
        bounds = None if clip is None else (float(np.min(clip[0])), float(np.max(clip[1])))
        x_t = check_images(x, tuple(self.classifier.input_shape), bounds, "x")
        y_arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if y_arr.ndim == 2:  # one-hot
            y_arr = y_arr.argmax(1)
        return x_t, check_labels(y_arr, len(x_t), int(self.classifier.nb_classes), "y")

    def fit(self, x, y, **kwargs) -> None:
        """Project ``x`` and fine-tune the classifier for ``epochs`` on the §3.1 objective.

        :param x: Training images (numpy or torch), NCHW in the classifier's clip values.
        :param y: Labels, indices or one-hot.
        :param projected: Optional ``(z*, G(z*))`` of ``x`` from ``project_dataset`` (only ``z*`` is used).
        """
        x_t, y_t = self._check_data(x, y)
        projected = kwargs.get("projected")
        z_star = projected[0] if projected is not None else self.project_dataset(x_t)[0]
        self.fit_projected(z_star, x_t, y_t)

    def loss_terms(self, z: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The objective on one batch: ``{"loss", "ce", "robust"}`` (differentiable w.r.t. the classifier).

        :param z: Codes ``z*`` of the batch's projections (anchors of the inner sup).
        :param x: The training images themselves; the cross-entropy is ``CE(y, C(x))``.
        :param y: Integer labels.
        """
        gen_net = self.projection.generator.to(z.device)
        bounds = self.projection.settings["bounds"]
        robust = self.robustness_gap(z, gen_net, bounds) if self.mu > 0 else x.new_zeros(())
        ce = nn.functional.cross_entropy(self.logits(x), y)
        return {"loss": self.mu * robust + (1 - self.mu) * ce, "ce": ce, "robust": robust}

    def fit_projected(self, z_star: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
        """The training loop on the training images ``x``, their labels and their codes ``z*``."""
        device = self._device()
        model = self.classifier.model
        if not (len(z_star) == len(x) == len(y)):
            raise ValueError(f"z_star, x and y must have the same length, got {len(z_star)}, {len(x)} and {len(y)}")
        torch.manual_seed(self.seed)
        shuffle = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        for _ in tqdm(range(self.epochs), desc="enhanced INC", unit="epoch", leave=False):
            model.train()
            totals = {"loss": 0.0, "ce": 0.0, "robust": 0.0}
            perm = torch.randperm(len(y), generator=shuffle)
            for start in range(0, len(y), self.batch_size):
                idx = perm[start:start + self.batch_size]
                terms = self.loss_terms(z_star[idx].to(device), x[idx].to(device, torch.float32),
                                        y[idx].to(device).long())
                opt.zero_grad()
                terms["loss"].backward()
                opt.step()
                for key, value in terms.items():
                    totals[key] += float(value.detach()) * len(idx)
            self.history.append({k: v / len(y) for k, v in totals.items()})
            logger.info("enhanced INC epoch %d: %s", len(self.history), self.history[-1])
        model.eval()

    def robustness_gap(self, z: torch.Tensor, gen_net: nn.Module | None = None,
                       bounds: tuple[float, float] | None = None) -> torch.Tensor:
        """``mean ‖p(G(z)) − p(G(z'))‖²`` at the inner maximiser ``z'`` (the constraint as a penalty).

        ``p`` is the softmax of ``logits`` (the classifier's full prediction function).
        """
        gen_net = self.projection.generator.to(z.device) if gen_net is None else gen_net
        bounds = self.projection.settings["bounds"] if bounds is None else bounds
        model = self.classifier.model
        with torch.no_grad():
            anchor = gen_net(z).clamp(*bounds)
        was_training = model.training
        model.eval()  # the adversary's search does not touch dropout/batch-norm statistics
        z_adv = (z + 0.01 * torch.randn_like(z)).requires_grad_(True)
        with torch.no_grad():
            p_anchor = torch.softmax(self.logits(anchor), 1)
        for _ in range(self.inner_steps):
            moved = gen_net(z_adv).clamp(*bounds)
            gap = (torch.softmax(self.logits(moved), 1) - p_anchor).pow(2).sum(1)
            excess = ((moved - anchor).pow(2).flatten(1).sum(1) - self.eta ** 2).clamp_min(0)
            grad, = torch.autograd.grad((gap - self.penalty * excess).sum(), z_adv)
            z_adv = (z_adv + self.inner_lr * grad.sign()).detach().requires_grad_(True)
        model.train(was_training)
        moved = gen_net(z_adv.detach()).clamp(*bounds)
        return (torch.softmax(self.logits(moved), 1) - torch.softmax(self.logits(anchor), 1)).pow(2).sum(1).mean()
