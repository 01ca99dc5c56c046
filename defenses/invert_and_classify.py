"""Invert-and-Classify (Ilyas et al. 2017) and Defense-GAN's projection (Samangouei et al. 2018); algorithms.md §3.

``project`` finds ``z* = argmin_z mean_pixels (G(z) - x)²`` by momentum SGD from ``R`` random starts, all restarts
of a batch in one ``(B·R, d)`` tensor, and keeps the restart with the smallest final error. The ``R`` starts
``z₀`` are drawn once from ``seed`` and shared by every image (``initial_codes``), so an image projects the same
whatever batch it comes in, at whatever position and batch size: the judge, ART and MagNet, which batch
differently, all see one function of the image.
``InvertAndClassify`` is an ART ``PreprocessorPyTorch`` (a MagNet ``Reformer`` whose autoencoder is ``G∘argmin``),
so ``Model(classifier, preprocessing=[inc])`` is attackable from ART and Foolbox and ``MagNet(classifier, {}, inc)``
evaluates it. ``EnhancedInvertAndClassify`` is an ART ``Trainer`` for the robust retraining of §3.1.

Gradients for attackers. The projection is an inner optimisation, so ``forward`` needs a documented gradient:

- ``gradient="bpda"`` (default): the straight-through estimator of Athalye et al.: the output is ``G(z*)``, the
  backward pass is the identity (``G(z*) + (x - x.detach())``). Cheap, and the standard attack on Defense-GAN.
- ``gradient="unrolled"``: differentiate through all ``L`` optimisation steps (second-order terms included).
  Exact for the truncated optimiser, and ``L·R`` times the memory of one generator pass.

Without one of these, ``forward`` under ``torch.no_grad`` would hand ART a zero gradient without saying so.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TypedDict, cast

import numpy as np
import torch
from art.defences.trainer.trainer import Trainer
from torch import nn
from tqdm.auto import tqdm

from ..bridge.validation import check_labels
from .magnet import Reformer, check_bounds
from .params import check_images, check_positive, check_positive_int

logger = logging.getLogger(__name__)

GRADIENTS = ("bpda", "unrolled")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class Projection:
    """The result of ``project``: the chosen codes, their images and per-image mean squared errors."""

    z: torch.Tensor        # (B, d)
    images: torch.Tensor   # (B, C, H, W), clamped to the bounds
    mse: torch.Tensor      # (B,)


class ProjectionKwargs(TypedDict):
    """``GeneratorProjection.settings``: the keyword arguments it passes to ``project``."""

    steps: int
    restarts: int
    lr: float
    momentum: float
    init_std: float | None
    optimizer: str
    bounds: tuple[float, float]


def check_projection_settings(*, steps, restarts, lr, momentum, init_std, optimizer) -> None:
    """Raise ``ValueError`` naming the first projection setting that is out of range."""
    check_positive_int(steps, "steps")
    check_positive_int(restarts, "restarts")
    check_positive(lr, "lr")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
    if init_std is not None:
        check_positive(init_std, "init_std")


def initial_codes(batch: int, restarts: int, latent_dim: int, init_std: float, seed: int,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``z₀ ~ N(0, init_std²·I)``: ``restarts`` codes drawn once from ``seed``, the same for every image.

    Shape ``(batch, restarts, d)``: row ``i`` is the same ``(restarts, d)`` draw for every ``i``, drawn in float64
    on the CPU so every device agrees. Sharing the starts makes an image's projection independent of its batch,
    its position in it and the batch size, and keeps it continuous in the image (a start derived from the
    image's bytes would jump under any perturbation, and finite differences would see the jumps).
    """
    gen = torch.Generator().manual_seed(int(seed))
    codes = init_std * torch.randn(restarts, latent_dim, generator=gen, dtype=torch.float64)
    return codes.to(device, dtype).unsqueeze(0).expand(batch, restarts, latent_dim)


def project(generator: nn.Module, x: torch.Tensor, latent_dim: int, *, steps: int = 200, restarts: int = 10,
            lr: float = 10.0, momentum: float = 0.7, init_std: float | None = None, optimizer: str = "sgd",
            bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0, batched: bool = True,
            create_graph: bool = False) -> Projection:
    """Project ``x`` on the range of ``generator`` (§3.2 defaults: L = 200, R = 10, SGD lr 10, momentum 0.7).

    :param generator: ``z (N, d) -> images (N, C, H, W)``; its weights are not updated.
    :param x: Images, ``(B, C, H, W)``.
    :param latent_dim: ``d``.
    :param steps: ``L``, optimisation steps per restart.
    :param restarts: ``R``, random starts per image; the one with the smallest final error is kept.
    :param lr: Step size (SGD: 10 as in Defense-GAN, for the per-image mean-over-pixels loss).
    :param momentum: SGD momentum (Adam ignores it).
    :param init_std: Standard deviation of ``z₀``; ``sqrt(1/d)`` by default.
    :param optimizer: ``sgd`` (momentum SGD, Defense-GAN's) or ``adam``.
    :param seed: Seeds the ``R`` starts ``z₀``, shared by every image (``initial_codes``).
    :param batched: Optimise all restarts as one ``(B·R, d)`` batch; ``False`` loops over restarts in Python
        (the same numbers, for the benchmark).
    :param create_graph: Keep the graph of every step so the result is differentiable w.r.t. ``x`` (unrolled).
    """
    check_projection_settings(steps=steps, restarts=restarts, lr=lr, momentum=momentum, init_std=init_std,
                              optimizer=optimizer)
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    if x.dim() < 2:
        raise ValueError(f"x must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    init_std = math.sqrt(1.0 / latent_dim) if init_std is None else check_positive(init_std, "init_std")
    b = len(x)
    z0 = initial_codes(b, restarts, latent_dim, init_std, seed, x.device, x.dtype)
    if batched:
        z, mse = descend(generator, x.repeat_interleave(restarts, 0), z0.reshape(b * restarts, latent_dim),
                          steps, lr, momentum, optimizer, bounds, create_graph)
        z, mse = z.reshape(b, restarts, latent_dim), mse.reshape(b, restarts)
    else:
        parts = [descend(generator, x, z0[:, r], steps, lr, momentum, optimizer, bounds, create_graph)
                 for r in range(restarts)]
        z, mse = torch.stack([p[0] for p in parts], 1), torch.stack([p[1] for p in parts], 1)
    best = mse.detach().argmin(1)
    rows = torch.arange(b, device=x.device)
    z_best = z[rows, best]
    images = generator(z_best).clamp(*bounds)
    return Projection(z_best, images, mse[rows, best])


def descend(generator: nn.Module, x: torch.Tensor, z0: torch.Tensor, steps: int, lr: float, momentum: float,
             optimizer: str, bounds: tuple[float, float], create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` descent steps on the summed per-image MSE; returns final codes and their per-image MSE."""
    z = z0.clone().requires_grad_(True)
    velocity = torch.zeros_like(z)
    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    target = x if create_graph else x.detach()
    with torch.enable_grad():
        for step in range(1, steps + 1):
            per_image = (generator(z).clamp(*bounds) - target).pow(2).flatten(1).mean(1)
            grad, = torch.autograd.grad(per_image.sum(), z, create_graph=create_graph)
            if optimizer == "sgd":
                velocity = momentum * velocity + grad
                update = lr * velocity
            else:  # Adam with the usual betas, written out so the unrolled graph is kept
                m = 0.9 * m + 0.1 * grad
                v = 0.999 * v + 0.001 * grad * grad
                update = lr * (m / (1 - 0.9 ** step)) / ((v / (1 - 0.999 ** step)).sqrt() + 1e-8)
            z = z - update
            if not create_graph:
                z = z.detach().requires_grad_(True)
                velocity, m, v = velocity.detach(), m.detach(), v.detach()
        final = (generator(z).clamp(*bounds) - target).pow(2).flatten(1).mean(1)
    if not create_graph:
        z, final = z.detach(), final.detach()
    return z, final


class GeneratorProjection(nn.Module):
    """``x ↦ G(argmin_z ‖G(z) - x‖²)`` as a module, with the gradient chosen for attackers (module docstring).

    :param generator: ``z -> images``; frozen here.
    :param latent_dim: Its latent size ``d``.
    :param gradient: ``bpda`` (identity backward) or ``unrolled`` (through every step).
    :param seed: Seeds the starts ``z₀``, shared by every image, so the projection is a deterministic function of
        each image, independent of its batch.
    Other parameters are ``project``'s. Inputs are checked by ``check_images`` against the generator's image shape
    (``image_shape``, from one pass on ``z = 0``) and ``bounds``.
    """

    MEMO_SIZE = 8

    def __init__(self, generator: nn.Module, latent_dim: int, *, steps: int = 200, restarts: int = 10,
                 lr: float = 10.0, momentum: float = 0.7, init_std: float | None = None, optimizer: str = "sgd",
                 gradient: str = "bpda", bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0) -> None:
        super().__init__()
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {list(GRADIENTS)}, got {gradient!r}")
        if not isinstance(generator, nn.Module):
            raise TypeError(f"generator must be a torch.nn.Module mapping codes to images, got {type(generator)}")
        self.generator = generator.eval().requires_grad_(False)
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.settings = ProjectionKwargs(steps=steps, restarts=restarts, lr=lr, momentum=momentum, init_std=init_std,
                                         optimizer=optimizer, bounds=bounds)
        self.gradient = gradient
        self.seed = int(seed)
        self._memo: list[tuple[torch.Tensor, Projection]] = []  # recent (input, projection) pairs, newest last
        check_projection_settings(**{k: v for k, v in self.settings.items() if k != "bounds"})
        self.settings["bounds"] = check_bounds(bounds)
        param = next(self.generator.parameters(), None)
        with torch.no_grad():
            probe = self.generator(torch.zeros(1, self.latent_dim, device=param.device if param is not None else None))
        if probe.dim() != 4:
            raise ValueError(f"generator must map (N, {self.latent_dim}) codes to (N, C, H, W) images, got shape "
                             f"{tuple(probe.shape)}")
        c, h, w = (int(d) for d in probe.shape[1:])  # rank 4, checked above
        self.image_shape: tuple[int, int, int] = (c, h, w)

    def project(self, x: torch.Tensor, batched: bool = True) -> Projection:
        """The full projection result (codes, images, errors) of ``x``.

        Without a graph to keep, the last ``MEMO_SIZE`` results are reused for an identical input batch: systems
        that share this projection (Invert-and-Classify with the bare and with the enhanced classifier) then pay
        for it once. The projection is a deterministic function of each image (the same seeded ``z₀`` for all), so
        this is exact.

        :raises ValueError: when ``x`` is not a finite ``(N, *image_shape)`` batch inside ``bounds``.
        """
        check_images(x, self.image_shape, self.settings["bounds"], "x", device=None)
        param = next(self.generator.parameters(), None)
        if param is not None and param.device != x.device:
            self.generator.to(x.device)
        create_graph = self.gradient == "unrolled" and torch.is_grad_enabled() and x.requires_grad
        if not create_graph:
            for seen, result in self._memo:
                if seen.shape == x.shape and seen.device == x.device and torch.equal(seen, x.detach().float()):
                    return result
        result = project(self.generator, x.float(), self.latent_dim, seed=self.seed, batched=batched,
                         create_graph=create_graph, **self.settings)
        if not create_graph:
            result = Projection(result.z.detach(), result.images.detach(), result.mse.detach())
            self._memo = [*self._memo[-(self.MEMO_SIZE - 1):], (x.detach().float().clone(), result)]
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gradient == "unrolled":
            return self.project(x).images
        with torch.no_grad():
            images = self.project(x.detach()).images
        # Straight-through: the value is exactly G(z*) (x - x.detach() is an exact zero, so a later clamp to the
        # bounds keeps the gradient), the gradient is the identity.
        return images + (x - x.detach())


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
