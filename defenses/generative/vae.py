"""A small convolutional VAE (Kingma & Welling 2014) for MNIST or CIFAR-sized images, and its training loop.

Its negative ELBO is the loss of the Kos et al. "VAE attack" (algorithms.md §4.1) and its decoder a fast
default generator for invert-and-classify (§3.3).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from tqdm.auto import tqdm

from ..params import check_positive, check_positive_int
from .common import batches, check_image_batch, check_training_data, feature_size, randn

logger = logging.getLogger(__name__)

LIKELIHOODS = ("bernoulli", "gaussian")
class _Decoder(nn.Module):
    """``z (B, d) -> images (B, C, H, W)`` in [0, 1]; :meth:`logits` gives the pre-sigmoid output."""

    def __init__(self, latent_dim: int, channels: int, side: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(),
            nn.Linear(256, 64 * side * side), nn.ReLU(),
            nn.Unflatten(1, (64, side, side)),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))


class VAE(nn.Module):
    """Convolutional VAE with a diagonal-Gaussian encoder and a Bernoulli or fixed-variance Gaussian decoder.

    Encoder: conv 32 (4x4, stride 2) -> conv 64 (4x4, stride 2) -> linear 256 -> ``(mu, logvar)``; the
    decoder (``self.decoder``, usable alone as a generator ``G(z)``) mirrors it and ends in a sigmoid.

    :param latent_dim: Size of the latent code z.
    :param channels: Image channels (1 for MNIST, 3 for CIFAR-10).
    :param image_size: Image side, 28 (MNIST) or 32 (CIFAR-10).
    :param likelihood: ``"bernoulli"`` (pixel intensities as Bernoulli means; the decoder's logits enter a
        binary cross-entropy) or ``"gaussian"`` (``N(decode(z), σ² I)`` with σ² fixed at
        :attr:`gaussian_variance`).
    """

    #: Fixed decoder variance σ² of the Gaussian likelihood (σ = 0.1 on [0, 1] images).
    gaussian_variance = 0.01

    def __init__(self, latent_dim: int = 32, channels: int = 1, image_size: int = 28,
                 likelihood: str = "bernoulli") -> None:
        super().__init__()
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        side = feature_size(channels, image_size)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {list(LIKELIHOODS)}, got {likelihood!r}")
        self.channels, self.image_size, self.likelihood = channels, image_size, likelihood
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * side * side, 256), nn.ReLU())
        self.mu = nn.Linear(256, latent_dim)
        self.logvar = nn.Linear(256, latent_dim)
        self.decoder = _Decoder(latent_dim, channels, side)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of ``q(z|x)``, each ``(B, latent_dim)``."""
        check_image_batch(x, self.image_shape)
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder mean ``(B, C, H, W)`` in [0, 1]."""
        return self.decoder(z)

    def decoder_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid decoder output (the Bernoulli logits)."""
        return self.decoder.logits(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(recon_mean, mu, logvar)``.

        In eval mode z = mu, so the reconstruction is deterministic (the reformer / attack setting, as in
        Kos et al.); in train mode z is the reparameterised sample ``mu + exp(logvar/2)·ε`` with ε from the
        global torch RNG.
        """
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return self.decode(z), mu, logvar

    def neg_elbo(self, x_in: torch.Tensor, x_target: torch.Tensor, sample: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-image negative ELBO ``KL(q(z|x_in) ‖ N(0, I)) − log p(x_target | z)``, shape ``(B,)``, in nats.

        Differentiable w.r.t. ``x_in`` (the Kos et al. VAE attack minimises it over ``x_in``).

        - Bernoulli: ``−log p = Σ_pixels BCE-with-logits(decoder_logits(z), x_target)``.
        - Gaussian: ``−log p = Σ_pixels (x_target − decode(z))² / (2σ²)`` with σ² = :attr:`gaussian_variance`,
          leaving out the constant ``(D/2)·log(2πσ²)``.

        :param x_in: Encoder input ``(B, C, H, W)``.
        :param x_target: Images whose likelihood is scored, same shape (``x_in`` itself for the plain ELBO).
        :param sample: ``False``: z = mu (deterministic); ``True``: one reparameterised sample per image.
        :param generator: Optional torch.Generator for the sample's noise (on any device).
        """
        check_image_batch(x_target, self.image_shape, "x_target")
        if len(x_target) != len(x_in):
            raise ValueError(f"x_target must hold as many images as x_in ({len(x_in)}), got {len(x_target)}")
        mu, logvar = self.encode(x_in)
        z = mu + torch.exp(0.5 * logvar) * randn(mu.shape, generator, mu) if sample else mu
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        logits = self.decoder_logits(z)
        if self.likelihood == "bernoulli":
            nll = nn.functional.binary_cross_entropy_with_logits(logits, x_target, reduction="none")
        else:
            nll = (x_target - torch.sigmoid(logits)).pow(2) / (2.0 * self.gaussian_variance)
        return kl + nll.flatten(1).sum(1)


def train_vae(vae: VAE, x: torch.Tensor, *, epochs: int = 30, batch_size: int = 128, lr: float = 1e-3,
              seed: int = 0, device: str | torch.device = "cpu") -> list[float]:
    """Fit ``vae`` on ``x`` by Adam on the single-sample negative ELBO (mean over each batch).

    The shuffling and the reparameterisation noise come from a CPU ``torch.Generator`` seeded with ``seed``.
    On 3,500 MNIST images one epoch takes about 5 s on one idle CPU thread; the negative ELBO sits near
    200 nats (the mean image) for the first ~8 epochs before it falls (150 after 15 epochs).

    :param vae: The model; moved to ``device`` and left in eval mode.
    :param x: Training images ``(N, C, H, W)`` in [0, 1].
    :returns: The mean per-image negative ELBO (nats) of each epoch.
    """
    check_positive_int(epochs, "epochs")
    check_positive(lr, "lr")
    check_training_data(x, vae.image_shape, batch_size)
    gen = torch.Generator().manual_seed(seed)
    vae.to(device).train()
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    history = []
    for _ in tqdm(range(epochs), desc="train VAE", unit="epoch", leave=False):
        total = 0.0
        for batch in batches(x, batch_size, gen, device):
            loss = vae.neg_elbo(batch, batch, sample=True, generator=gen).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        history.append(total / len(x))
        logger.debug("VAE epoch %d: negative ELBO %.2f", len(history), history[-1])
    vae.eval()
    logger.info("trained VAE for %d epochs: negative ELBO %.2f -> %.2f", epochs, history[0], history[-1])
    return history
