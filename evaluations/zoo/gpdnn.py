"""GPDNN models for suites (Bradshaw et al. 2017; algorithms.md §8): shipped, else trained on first use, cached like
the zoo (``zoo.load_checkpoint``).

``mnist_gpdnn`` is ``zoo.mnist_lenet_features(32)`` feeding a 10-class sparse variational GP with the robust-max
likelihood (``advbridge.defenses.gpdnn``); its NN counterpart is the zoo's ``mnist_lenet`` (the same features under a
softmax layer). This module imports without GPyTorch; loading a model needs it (``pip install 'advbridge[gp]'``).

Resolvable by name once ``zoo.resolve_model`` and ``suite.model_error`` know ``GPDNN_MODELS``; until then a suite can
name it ``advbridge.evaluations.zoo.gpdnn:mnist_gpdnn`` (mnist5k, seed 0, the default device).
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from advbridge.bridge import Model
from advbridge.bridge.model import default_device

from advbridge.evaluations.data.datasets import Dataset, load_dataset
from advbridge.evaluations.zoo.classifiers import mnist_lenet_features
from advbridge.evaluations.zoo.family import FAMILIES, ModelFamily, accuracy
from advbridge.evaluations.core.cache import cached_modules, shipped_name

logger = logging.getLogger(__name__)

#: Bumped whenever GPDNN training changes, so stale checkpoints are not reused (2: deterministic training on one
#: thread).
GPDNN_RECIPE_VERSION = 2


@dataclass(frozen=True)
class GPDNNRecipe:
    """How a GPDNN is trained (``defenses.gpdnn.fit_gpdnn``); part of its cache key.

    Measured on one CPU thread with mnist5k: about 3 s per ELBO epoch at ``num_inducing = 100``, 30–40 s in all,
    test accuracy about 97%. The paper's inducing-point count and feature size are not recovered (§8.1); M = 500
    (the [R] there) costs about 10x more per step on a CPU.

    :param feature_dim: Output size of the feature extractor (the GP's input dimension).
    :param num_inducing: Inducing inputs ``M``, initialised by k-means on the pre-trained features.
    :param pretrain_epochs: Cross-entropy epochs for the features before the ELBO phase.
    :param epochs: End-to-end ELBO epochs.
    :param lr: Adam learning rate (both phases).
    :param batch_size: Minibatch size.
    :param epsilon: Robust-max ``ε``.
    """

    feature_dim: int = 32
    num_inducing: int = 100
    pretrain_epochs: int = 2
    epochs: int = 10
    lr: float = 1e-2
    batch_size: int = 128
    epsilon: float = 1e-3


#: Name -> (recipe, datasets it is defined for).
GPDNN_MODELS: dict[str, tuple[GPDNNRecipe, tuple[str, ...]]] = {
    "mnist_gpdnn": (GPDNNRecipe(), ("mnist5k", "mnist")),
}


def gpdnn_blob(name: str, dataset: str, seed: int) -> dict[str, Any]:
    """Everything that decides a GPDNN's trained weights (its checkpoint key; the local cache adds the torch and
    GPyTorch versions)."""
    recipe, _ = GPDNN_MODELS[name]
    return {"name": name, "dataset": dataset, "seed": seed, **asdict(recipe), "version": GPDNN_RECIPE_VERSION}


def gpdnn_checkpoints(name: str, dataset: str = "mnist5k", seed: int = 0) -> list[str]:
    """The manifest name of the shipped checkpoint ``load_gpdnn(name, dataset, seed=seed)`` would read."""
    if name not in GPDNN_MODELS:
        raise ValueError(f"unknown GPDNN model {name!r}; expected one of {sorted(GPDNN_MODELS)}")
    return [shipped_name("gpdnn", f"{name}-{dataset}", gpdnn_blob(name, dataset, seed))]


def load_gpdnn(name: str = "mnist_gpdnn", dataset: str = "mnist5k", *, seed: int = 0,
               device: str | torch.device | None = None, data: Dataset | None = None,
               data_root: str | Path | None = None) -> tuple[Model, dict[str, Any]]:
    """``GPDNN_MODELS[name]`` as a bridge ``Model`` whose outputs are ``log p(y | x)``, plus its info.

    :param name: A key of ``GPDNN_MODELS``.
    :param dataset: Data set it is trained on.
    :param seed: Training seed (part of the cache key).
    :param device: Where it runs; CUDA when present by default.
    :param data: An already loaded ``Dataset``.
    :param data_root: Folder of user-supplied files for ``mnist``.
    """
    if name not in GPDNN_MODELS:
        raise ValueError(f"unknown GPDNN model {name!r}; expected one of {sorted(GPDNN_MODELS)}")
    recipe, datasets = GPDNN_MODELS[name]
    if dataset not in datasets:
        raise ValueError(f"GPDNN model '{name}' is defined for datasets {list(datasets)}, got {dataset!r}")
    try:
        from advbridge.defenses.gpdnn import GPDNNClassifier, fit_gpdnn
    except ImportError as err:
        raise ImportError(f"GPDNN model '{name}' needs GPyTorch: pip install 'advbridge[gp]'") from err
    device = torch.device(device) if device is not None else default_device()
    data = data if data is not None else load_dataset(dataset, root=data_root)

    def build() -> list[torch.nn.Module]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            features = mnist_lenet_features(recipe.feature_dim)
        placeholder = torch.zeros(recipe.num_inducing, recipe.feature_dim)  # replaced by the checkpoint or training
        return [GPDNNClassifier(features, placeholder, data.nb_classes, recipe.epsilon)]

    def train(modules: list[torch.nn.Module]) -> None:
        trained, history = fit_gpdnn(modules[0].get_submodule("features"), data.x_train, data.y_train, num_classes=data.nb_classes,
                                     num_inducing=recipe.num_inducing, pretrain_epochs=recipe.pretrain_epochs,
                                     epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size,
                                     epsilon=recipe.epsilon, seed=seed, device=device)
        modules[0].load_state_dict({k: v.cpu() for k, v in trained.state_dict().items()})
        logger.info("trained %s: final -ELBO %.4f", name, history["elbo"][-1])

    (module,), path, fresh = cached_modules("gpdnn", f"{name}-{dataset}", gpdnn_blob(name, dataset, seed), build, train,
                                            versions={"gpytorch": _version("gpytorch")})
    module = module.to(device).eval()
    model = Model(module, data.input_shape, bounds=data.bounds, nb_classes=data.nb_classes, device=device)
    info = {"model": name, "cache": str(path), "freshly_trained": fresh, "recipe": asdict(recipe),
            "test_accuracy": accuracy(module, data.x_test, data.y_test, device, batch_size=250),
            "description": "GPDNN: LeNet-style features + SVGP (RBF, robust-max), trained end to end (§8.1)"}
    return model, info


def mnist_gpdnn() -> Model:
    """``mnist_gpdnn`` on mnist5k, seed 0, the default device: the ``package.module:function`` form for suites."""
    return load_gpdnn("mnist_gpdnn", "mnist5k")[0]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"



FAMILIES.add(ModelFamily(
    "gpdnn", owns=lambda name: name in GPDNN_MODELS, load=load_gpdnn, checkpoints=gpdnn_checkpoints,
    listing=lambda: [(name, "gpdnn", "GPDNN: LeNet-style features + SVGP, robust-max (Bradshaw §8.1)")
                     for name in GPDNN_MODELS],
    hint=lambda: f"GPDNN models: {sorted(GPDNN_MODELS)}", hint_rank=30), rank=40)
