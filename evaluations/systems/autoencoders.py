"""The MagNet autoencoders of a suite's systems: trained on first use, cached next to the zoo's classifiers (keyed
by a hash of their recipe, read back with ``torch.load(weights_only=True)``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, cast

import torch
from torch import nn

from advbridge.defenses.autoencoders import DenoisingAutoEncoder, train_autoencoder, train_diverse_autoencoders

from advbridge.evaluations.core.cache import cached_modules
from advbridge.evaluations.data.datasets import Dataset
from advbridge.evaluations.systems.recipes import AE_RECIPE_VERSION, STRUCTURES, AutoencoderRecipe, DiverseRecipe

__all__ = ["load_autoencoder", "load_diverse_autoencoders"]


def _cached(name: str, blob: dict[str, Any], build, train) -> list[nn.Module]:
    return cached_modules("autoencoders", name, {**blob, "recipe_version": AE_RECIPE_VERSION}, build, train)[0]


def load_autoencoder(structure: str, data: Dataset, dataset: str, seed: int = 0,
                     recipe: AutoencoderRecipe | None = None, device=None) -> DenoisingAutoEncoder:
    """MagNet autoencoder ``structure`` (``I``, ``II`` or ``cifar``), trained on ``data``'s training split (with
    ``recipe``, by default ``AutoencoderRecipe()``)."""
    recipe = AutoencoderRecipe() if recipe is None else recipe
    if structure not in STRUCTURES:
        raise ValueError(f"autoencoder structure must be one of {sorted(STRUCTURES)}, got {structure!r}")
    channels = data.x_train.shape[1]

    def build():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [DenoisingAutoEncoder(STRUCTURES[structure], channels=channels)]

    def train(modules):
        train_autoencoder(modules[0], data.x_train, noise=recipe.noise, epochs=recipe.epochs,
                          batch_size=recipe.batch_size, lr=recipe.lr, activity_reg=recipe.activity_reg, seed=seed,
                          device=device or "cpu")

    blob = {"structure": structure, "channels": channels, "dataset": dataset, "seed": seed, **asdict(recipe)}
    return cast(DenoisingAutoEncoder, _cached(f"ae_{structure}-{dataset}", blob, build, train)[0])  # build()'s


def load_diverse_autoencoders(recipe: DiverseRecipe, data: Dataset, dataset: str, seed: int = 0,
                              device=None) -> list[DenoisingAutoEncoder]:
    """``recipe.n`` diversity-trained autoencoders (§2.7), cached as one pack."""
    if recipe.structure not in STRUCTURES:
        raise ValueError(f"diverse.structure must be one of {sorted(STRUCTURES)}, got {recipe.structure!r}")
    channels = data.x_train.shape[1]

    def build():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [DenoisingAutoEncoder(STRUCTURES[recipe.structure], channels=channels) for _ in range(recipe.n)]

    def train(modules):
        train_diverse_autoencoders(modules, data.x_train, alpha=recipe.alpha, pre_epochs=recipe.pre_epochs,
                                   epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr, seed=seed,
                                   device=device or "cpu")

    blob = {"channels": channels, "dataset": dataset, "seed": seed, **asdict(recipe)}
    return cast(list[DenoisingAutoEncoder], _cached(f"diverse_{recipe.n}x{recipe.structure}-{dataset}", blob, build,
                                                    train))  # build()'s modules
