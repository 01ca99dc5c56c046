"""WGAN-GP (Gulrajani et al. 2017): a DCGAN-style generator and critic and the Defense-GAN training loop.

Defaults follow Defense-GAN's reference code (algorithms.md §3.2): 5 critic steps per generator step,
gradient-penalty weight λ = 10, batch 50, Adam(1e-4, β = (0.5, 0.9)).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from tqdm.auto import tqdm

from ..params import check_positive, check_positive_int
from .common import check_image_batch, check_training_data, feature_size, randn


logger = logging.getLogger(__name__)


class WGANGenerator(nn.Module):
    """``z (B, latent_dim) -> images (B, C, H, W)`` in [0, 1].

    Linear -> ``2·width`` x 7 x 7 (8 x 8 for 32-pixel images) -> ConvTranspose ``width`` (x2) ->
    ConvTranspose C (x2) -> sigmoid, ReLU in between and no batch norm, so train and eval mode compute the
    same function.

    :param latent_dim: Size of z (Defense-GAN uses 128).
    :param channels: Image channels (1 for MNIST, 3 for CIFAR-10).
    :param image_size: Image side, 28 or 32.
    :param width: Channels of the last hidden layer (the cost grows with its square; 32 is about 3x faster
        than 64 on a CPU).
    """

    def __init__(self, latent_dim: int = 128, channels: int = 1, image_size: int = 28, width: int = 64) -> None:
        super().__init__()
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        side = feature_size(channels, image_size)
        check_positive_int(width, "width")
        self.channels, self.image_size = channels, image_size
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * side * side), nn.ReLU(),
            nn.Unflatten(1, (2 * width, side, side)),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1), nn.Sigmoid())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be a (B, {self.latent_dim}) tensor, got {tuple(z.shape)}")
        return self.net(z)


class WGANCritic(nn.Module):
    """``images (B, C, H, W) -> scores (B,)``: conv ``width`` -> conv ``2·width`` (4x4, stride 2, LeakyReLU 0.2)
    -> linear.

    No batch norm: the gradient penalty constrains the gradient of each score w.r.t. its own input.

    :param channels: Image channels.
    :param image_size: Image side, 28 or 32.
    :param width: Channels of the first convolution.
    """

    def __init__(self, channels: int = 1, image_size: int = 28, width: int = 64) -> None:
        super().__init__()
        side = feature_size(channels, image_size)
        check_positive_int(width, "width")
        self.channels, self.image_size = channels, image_size
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * side * side, 1))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.image_shape)
        return self.net(x).squeeze(1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The WGAN-GP penalty ``mean_i (‖∇_x̂ critic(x̂_i)‖₂ − 1)²`` at ``x̂ = α·real + (1 − α)·fake``, α ~ U(0, 1).

    One α per image. ``real`` and ``fake`` are detached; the result (a scalar, not yet multiplied by λ) is
    differentiable w.r.t. the critic's parameters (double backpropagation). The norm is
    ``sqrt(Σ g² + 1e-12)`` so that a zero gradient does not give NaN.

    :param generator: Optional torch.Generator for α (on any device).
    """
    if real.shape != fake.shape or real.dim() < 2:
        raise ValueError(f"real and fake must be batches of the same shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    real, fake = real.detach(), fake.detach()
    shape = (len(real),) + (1,) * (real.dim() - 1)
    if generator is None:
        alpha = torch.rand(shape, device=real.device, dtype=real.dtype)
    else:
        alpha = torch.rand(shape, generator=generator, device=generator.device, dtype=real.dtype).to(real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    norm = torch.sqrt(grad.pow(2).flatten(1).sum(1) + 1e-12)
    return (norm - 1).pow(2).mean()


def _real_batches(x: torch.Tensor, batch_size: int, gen: torch.Generator, device):
    """Endless full batches of ``x``: shuffled epochs, each epoch's incomplete last batch dropped."""
    per_epoch = max(len(x) // batch_size, 1)
    while True:
        perm = torch.randperm(len(x), generator=gen)
        for b in range(per_epoch):
            yield x[perm[b * batch_size:(b + 1) * batch_size]].to(device)


def train_wgan_gp(generator: WGANGenerator, critic: WGANCritic, x: torch.Tensor, *, iterations: int = 2000,
                  critic_iters: int = 5, gp_weight: float = 10.0, batch_size: int = 50, lr: float = 1e-4,
                  betas: tuple[float, float] = (0.5, 0.9), seed: int = 0,
                  device: str | torch.device = "cpu") -> list[float]:
    """Train a WGAN-GP: per generator step, ``critic_iters`` critic steps on
    ``mean critic(G(z)) − mean critic(x) + λ·gradient_penalty``, then one generator step on ``−mean critic(G(z))``.

    Defense-GAN trains 200k generator steps: a GPU job. On one CPU thread 100 steps at the defaults take
    about 170 s with ``width=64`` networks and 70 s with ``width=32``. Real batches come from shuffled
    epochs; the shuffling, z and the penalty's α come from a CPU ``torch.Generator`` seeded with ``seed``.

    :param iterations: Number of generator steps.
    :param critic_iters: Critic steps per generator step.
    :param gp_weight: λ, the gradient-penalty weight.
    :returns: One value per generator step: the mean critic loss (penalty included) of its critic steps;
        its negative, less the penalty, estimates the Wasserstein distance.
    """
    check_positive_int(iterations, "iterations")
    check_positive_int(critic_iters, "critic_iters")
    check_positive(lr, "lr")
    if isinstance(gp_weight, bool) or not isinstance(gp_weight, (int, float)) or gp_weight < 0:
        raise ValueError(f"gp_weight must be a number >= 0, got {gp_weight!r}")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if tuple(critic.image_shape) != tuple(generator.image_shape):
        raise ValueError(f"critic must score the generator's images {generator.image_shape}, "
                         f"got a critic for {critic.image_shape}")
    check_training_data(x, generator.image_shape, batch_size)
    gen = torch.Generator().manual_seed(seed)
    generator.to(device).train()
    critic.to(device).train()
    beta1, beta2 = betas  # two of them, checked above
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(beta1, beta2))
    opt_c = torch.optim.Adam(critic.parameters(), lr=lr, betas=(beta1, beta2))
    real_batches = _real_batches(x, batch_size, gen, device)
    history = []
    bar = tqdm(range(iterations), desc="train WGAN-GP", unit="it", leave=False)
    for _ in bar:
        critic.requires_grad_(True)
        total = 0.0
        for _ in range(critic_iters):
            real = next(real_batches)
            with torch.no_grad():
                fake = generator(randn((len(real), generator.latent_dim), gen, real))
            loss_c = (critic(fake).mean() - critic(real).mean()
                      + gp_weight * gradient_penalty(critic, real, fake, generator=gen))
            opt_c.zero_grad()
            loss_c.backward()
            opt_c.step()
            total += float(loss_c.detach())
        history.append(total / critic_iters)
        critic.requires_grad_(False)
        z = randn((batch_size, generator.latent_dim), gen, real)
        loss_g = -critic(generator(z)).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if len(history) % 50 == 0:
            bar.set_postfix(critic_loss=f"{history[-1]:.3f}")
            logger.debug("WGAN-GP step %d: critic loss %.4f", len(history), history[-1])
    critic.requires_grad_(True)
    generator.eval()
    critic.eval()
    logger.info("trained WGAN-GP for %d generator steps: critic loss %.4f -> %.4f", iterations, history[0],
                history[-1])
    return history
