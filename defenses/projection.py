"""Defense-GAN's projection (Samangouei et al. 2018) on the range of a generator; algorithms.md §3.2.

``project`` finds ``z* = argmin_z mean_pixels (G(z) - x)²`` by momentum SGD from ``R`` random starts, all restarts
of a batch in one ``(B·R, d)`` tensor, and keeps the restart with the smallest final error. The ``R`` starts
``z₀`` are drawn once from ``seed`` and shared by every image (``initial_codes``), so an image projects the same
whatever batch it comes in, at whatever position and batch size.

``GeneratorProjection`` wraps it as a module with a documented gradient for attackers:

- ``gradient="bpda"`` (default): the straight-through estimator of Athalye et al.: the output is ``G(z*)``, the
  backward pass is the identity (``G(z*) + (x - x.detach())``). Cheap, and the standard attack on Defense-GAN.
- ``gradient="unrolled"``: differentiate through all ``L`` optimisation steps (second-order terms included).
  Exact for the truncated optimiser, and ``L·R`` times the memory of one generator pass.

Without one of these, ``forward`` under ``torch.no_grad`` would hand ART a zero gradient without saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import torch
from torch import nn

from .magnet import check_bounds
from .params import check_images, check_positive, check_positive_int


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
