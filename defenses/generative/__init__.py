"""Generative models for the manifold defenses and the attacks on them, in device-agnostic torch.

MNIST-sized (1x28x28) by default, CIFAR-sized (3x32x32) through ``channels`` / ``image_size``:

- :class:`VAE`: a convolutional VAE whose per-image negative ELBO is differentiable w.r.t. its input
  (the Kos et al. VAE attack) and whose decoder is a fast generator for invert-and-classify;
- :class:`WGANGenerator` / :class:`WGANCritic`: Defense-GAN's WGAN-GP, with :func:`gradient_penalty`;
- :class:`AlphaGAN`: α-GAN, whose ``G∘E`` is MID's autoencoder;
- :class:`LatentClassifier` / :class:`GenerativeClassifier`: Kos et al.'s latent classifier and the VAE classifier
  with reconstruction feedback that the Kos attacks target;
- :func:`sample_images`, :func:`save_grid`, :func:`save_reconstructions`: seeded samples and PNG grids.
"""

from .alpha_gan import AlphaGAN, train_alpha_gan
from .grids import sample_images, save_grid, save_reconstructions
from .latent_classifier import GenerativeClassifier, LatentClassifier, train_latent_classifier
from .vae import VAE, train_vae
from .wgan_gp import WGANCritic, WGANGenerator, gradient_penalty, train_wgan_gp

__all__ = ["VAE", "AlphaGAN", "GenerativeClassifier", "LatentClassifier", "WGANCritic", "WGANGenerator",
           "gradient_penalty", "sample_images", "save_grid", "save_reconstructions", "train_alpha_gan",
           "train_latent_classifier", "train_vae", "train_wgan_gp"]
