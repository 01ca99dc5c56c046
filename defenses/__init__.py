"""Defenses neither toolkit has, as ART-compatible classes in device-agnostic torch.

So far: MagNet's denoising autoencoders, its reconstruction-error and divergence detectors (ART
``EvasionDetector``), its differentiable reformer (ART ``PreprocessorPyTorch``), the MagNet system with
its metric, and the MID mutual-information detector with its Jaccard metric. May import ``advbridge.bridge``, never ``advbridge.evaluations``.
"""

from .autoencoders import (MNIST_AE_I, MNIST_AE_II, DenoisingAutoEncoder, train_autoencoder,
                           train_diverse_autoencoders)
from .magnet import (DivergenceDetector, MagNet, MagNetEvaluation, RandomizedMagNet, ReconstructionErrorDetector,
                     Reformer, graybox_random_row, jensen_shannon)
from .mid import MutualInformationDetector, jaccard_similarity

__all__ = ["MNIST_AE_I", "MNIST_AE_II", "DenoisingAutoEncoder", "DivergenceDetector", "MagNet", "MagNetEvaluation",
           "MutualInformationDetector", "RandomizedMagNet", "ReconstructionErrorDetector", "Reformer",
           "graybox_random_row", "jaccard_similarity", "jensen_shannon", "train_autoencoder",
           "train_diverse_autoencoders"]
