"""Generative models for suites: VAE, WGAN-GP and α-GAN trained on first use, cached, with sample-grid PNGs.

The weights are shipped with the package for the recipes the shipped suites use, else trained (deterministically, on
one thread) on first use and cached (``zoo.load_checkpoint``). Loading writes ``<checkpoint>.samples.png`` (64
samples from ``N(0, I)``) and, for the models with an encoder, ``<checkpoint>.reconstructions.png`` (test images
above their reconstructions) under ``cache_root()/generators`` when missing, so a person can see what the model
learned. ``mnist_vae`` is the Kos et al. evaluation model: the VAE with a latent
classifier and reconstruction feedback (algorithms.md §4.3), resolvable as a suite model.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbridge.bridge import Model
from advbridge.bridge.model import default_device
from advbridge.defenses.generative import (VAE, AlphaGAN, GenerativeClassifier, LatentClassifier, WGANCritic,
                                           WGANGenerator, sample_images, save_grid, save_reconstructions,
                                           train_alpha_gan, train_latent_classifier, train_vae, train_wgan_gp)

from advbridge.evaluations.data.datasets import Dataset, load_dataset
from advbridge.evaluations.zoo.family import FAMILIES, ModelFamily, accuracy
from advbridge.evaluations.core.cache import cache_root, cached_modules, shipped_name

logger = logging.getLogger(__name__)

KINDS = ("vae", "wgan_gp", "alpha_gan")
#: Bumped whenever generator training changes, so stale checkpoints are not reused (2: deterministic training on one
#: thread).
GENERATOR_RECIPE_VERSION = 2
#: Per-kind defaults. Defense-GAN's WGAN-GP (§3.2): latent 128, batch 50, 5 critic steps, λ = 10, 200k
#: iterations; far fewer here (CPU). The VAE follows the prototype of §3.3 (latent 32, 30 epochs).
#: Measured on one thread: a VAE epoch takes about 5 s; a WGAN-GP generator step 0.7 s at width 32 (1.7 s at 64,
#: mostly the penalty's double backward); an α-GAN epoch about 15 s.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "vae": {"latent_dim": 32, "epochs": 30, "lr": 1e-3, "batch_size": 128},
    "wgan_gp": {"latent_dim": 128, "iterations": 1000, "lr": 1e-4, "batch_size": 50, "width": 32},
    "alpha_gan": {"latent_dim": 32, "epochs": 20, "lr": 1e-3, "batch_size": 64, "width": 32},
}


@dataclass(frozen=True)
class GeneratorRecipe:
    """How a generative model is trained; ``None`` fields take the kind's defaults (``KIND_DEFAULTS``).

    :param kind: ``vae``, ``wgan_gp`` or ``alpha_gan``.
    :param latent_dim: Latent size ``d``.
    :param epochs: Epochs (VAE, α-GAN).
    :param iterations: Generator steps (WGAN-GP).
    :param lr: Learning rate.
    :param batch_size: Images per step.
    :param width: Channel width of the GANs' convolutions (cost grows with its square).
    """

    kind: str = "vae"
    latent_dim: int | None = None
    epochs: int | None = None
    iterations: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    width: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"generator kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.width is not None and self.kind == "vae":
            raise ValueError("generator width applies to wgan_gp and alpha_gan only")
        for name in ("latent_dim", "epochs", "iterations", "batch_size", "width"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"generator {name} must be a positive integer, got {value!r}")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or self.lr <= 0):
            raise ValueError(f"generator lr must be a positive number, got {self.lr!r}")

    def resolved(self) -> dict[str, Any]:
        """The fields with this kind's defaults filled in (what the cache key hashes)."""
        out = {"kind": self.kind, **KIND_DEFAULTS[self.kind]}
        out.update({f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None})
        return out


@dataclass
class TrainedGenerator:
    """A trained generative model and its decoding map ``z -> images``."""

    kind: str
    model: nn.Module           # the VAE, the WGAN-GP generator or the α-GAN
    generator: nn.Module       # z (N, d) -> images (N, C, H, W)
    latent_dim: int
    path: Path
    grids: list[Path] = field(default_factory=list)


def _build(cfg: dict[str, Any], channels: int, image_size: int) -> list[nn.Module]:
    kind, latent_dim = cfg["kind"], cfg["latent_dim"]
    if kind == "vae":
        return [VAE(latent_dim=latent_dim, channels=channels, image_size=image_size)]
    if kind == "wgan_gp":
        return [WGANGenerator(latent_dim=latent_dim, channels=channels, image_size=image_size, width=cfg["width"]),
                WGANCritic(channels=channels, image_size=image_size, width=cfg["width"])]
    return [AlphaGAN(latent_dim=latent_dim, channels=channels, image_size=image_size, width=cfg["width"])]


def _decoder(kind: str, modules: list[nn.Module]) -> nn.Module:
    if kind == "wgan_gp":
        return modules[0]
    decoder = modules[0].get_submodule("decoder" if kind == "vae" else "generator")
    return decoder


def generator_blob(recipe: GeneratorRecipe, dataset: str, seed: int, channels: int, image_size: int) -> dict[str, Any]:
    """Everything that decides a generator's trained weights (its checkpoint key, library versions aside)."""
    return {**recipe.resolved(), "dataset": dataset, "seed": seed, "channels": channels, "image_size": image_size,
            "recipe_version": GENERATOR_RECIPE_VERSION}


def generator_checkpoint(recipe: GeneratorRecipe, dataset: str = "mnist5k", seed: int = 0, channels: int = 1,
                         image_size: int = 28) -> str:
    """The manifest name of the shipped checkpoint ``load_generator`` would read for ``recipe``."""
    return shipped_name("generators", f"{recipe.kind}-{dataset}",
                        generator_blob(recipe, dataset, seed, channels, image_size))


def grid_path(checkpoint: Path, suffix: str) -> Path:
    """Where a grid of ``checkpoint`` is written: next to it in the cache, under ``cache_root()/<its folder>`` for
    a shipped checkpoint (the package folder stays read-only)."""
    root = cache_root().resolve()
    folder = checkpoint.parent
    if not folder.resolve().is_relative_to(root):
        folder = root / folder.name
    return folder / checkpoint.with_suffix(suffix).name


def load_generator(recipe: GeneratorRecipe, data: Dataset, dataset: str, seed: int = 0,
                   device: str | torch.device | None = None) -> TrainedGenerator:
    """The generative model ``recipe`` describes, trained on ``data``'s training split on first use and cached.

    :param recipe: Kind and training settings.
    :param data: The data set (its training split is used).
    :param dataset: Its name (part of the cache key).
    :param seed: Training seed.
    :param device: Where training runs (CUDA when present by default); the model is returned there.
    """
    device = torch.device(device) if device is not None else default_device()
    cfg = recipe.resolved()
    channels, image_size = data.x_train.shape[1], data.x_train.shape[-1]

    def build():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _build(cfg, channels, image_size)

    def train(modules):
        x = data.x_train
        if cfg["kind"] == "vae":
            train_vae(modules[0], x, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"], seed=seed,
                      device=device)
        elif cfg["kind"] == "wgan_gp":
            train_wgan_gp(modules[0], modules[1], x, iterations=cfg["iterations"], batch_size=cfg["batch_size"],
                          lr=cfg["lr"], seed=seed, device=device)
        else:
            train_alpha_gan(modules[0], x, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                            seed=seed, device=device)

    blob = generator_blob(recipe, dataset, seed, channels, image_size)
    modules, path, _ = cached_modules("generators", f"{cfg['kind']}-{dataset}", blob, build, train)
    modules = [m.to(device) for m in modules]
    trained = TrainedGenerator(cfg["kind"], modules[0], _decoder(cfg["kind"], modules), cfg["latent_dim"], path)
    trained.grids = write_grids(trained, data, seed)
    return trained


def write_grids(trained: TrainedGenerator, data: Dataset, seed: int = 0) -> list[Path]:
    """Sample (and reconstruction) grids (``grid_path``); written when missing."""
    out = []
    samples = grid_path(trained.path, ".samples.png")
    if not samples.exists():
        samples.parent.mkdir(parents=True, exist_ok=True)
        save_grid(sample_images(trained.generator, trained.latent_dim, n=64, seed=seed), samples, nrow=8)
    out.append(samples)
    if trained.kind in ("vae", "alpha_gan"):
        recon_path = grid_path(trained.path, ".reconstructions.png")
        if not recon_path.exists():
            x = data.x_test[:32].to(next(trained.model.parameters()).device)
            with torch.no_grad():
                recon = trained.model(x)
                recon = recon[0] if isinstance(recon, tuple) else recon
            save_reconstructions(x.cpu(), recon.cpu(), recon_path)
        out.append(recon_path)
    return out


# --------------------------------------------------------------------------- Kos et al.: VAE + latent classifier
@dataclass(frozen=True)
class LatentClassifierRecipe:
    """The latent classifier of Kos et al. (§4.1, §4.3): an MLP on the frozen encoder's means."""

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    hidden: int = 128


#: Generative suite models: name -> (generator recipe, latent classifier recipe).
GENERATIVE_MODELS: dict[str, tuple[GeneratorRecipe, LatentClassifierRecipe]] = {
    "mnist_vae": (GeneratorRecipe("vae"), LatentClassifierRecipe()),
    # Trains in seconds: for tests and smoke runs, not for numbers.
    "mnist_vae_tiny": (GeneratorRecipe("vae", latent_dim=8, epochs=2), LatentClassifierRecipe(epochs=5)),
}


def latent_classifier_blob(vae_file: str, recipe: LatentClassifierRecipe, seed: int) -> dict[str, Any]:
    """Everything that decides a latent classifier's weights: its VAE (by checkpoint file name), recipe, seed."""
    return {"vae": vae_file, "seed": seed, **asdict(recipe), "recipe_version": GENERATOR_RECIPE_VERSION}


def generative_checkpoints(name: str, dataset: str = "mnist5k", seed: int = 0) -> list[str]:
    """The manifest names of the shipped VAE and latent classifier ``load_generative_classifier(name)`` reads."""
    if name not in GENERATIVE_MODELS:
        raise ValueError(f"unknown generative model {name!r}; expected one of {sorted(GENERATIVE_MODELS)}")
    recipe, clf_recipe = GENERATIVE_MODELS[name]
    vae = generator_checkpoint(recipe, dataset, seed)
    blob = latent_classifier_blob(Path(vae).name, clf_recipe, seed)
    return [vae, shipped_name("generators", f"latent_classifier-{dataset}", blob)]


def load_generative_classifier(name: str = "mnist_vae", dataset: str = "mnist5k", *, seed: int = 0,
                               device: str | torch.device | None = None, data: Dataset | None = None,
                               data_root: str | Path | None = None) -> tuple[Model, dict[str, Any]]:
    """``GENERATIVE_MODELS[name]`` as a bridge ``Model`` with reconstruction feedback, plus its info.

    Its logits are ``f_class(μ(f_dec(μ(x))))`` (§4.3), so the bridge judges Kos attacks as the paper does.
    """
    if name not in GENERATIVE_MODELS:
        raise ValueError(f"unknown generative model {name!r}; expected one of {sorted(GENERATIVE_MODELS)}")
    device = torch.device(device) if device is not None else default_device()
    data = data if data is not None else load_dataset(dataset, root=data_root)
    recipe, clf_recipe = GENERATIVE_MODELS[name]
    vae = load_generator(recipe, data, dataset, seed, device)
    latent_dim = vae.latent_dim

    def build():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [LatentClassifier(latent_dim, nb_classes=10, hidden=clf_recipe.hidden)]

    def train(modules):
        train_latent_classifier(modules[0], vae.model.encode, data.x_train, data.y_train, epochs=clf_recipe.epochs,
                                batch_size=clf_recipe.batch_size, lr=clf_recipe.lr, seed=seed, device=device)

    blob = latent_classifier_blob(vae.path.name, clf_recipe, seed)
    (latent_clf,), path, _ = cached_modules("generators", f"latent_classifier-{dataset}", blob, build, train)
    module = GenerativeClassifier(vae.model, latent_clf.to(device), feedback=True)
    module.fit_targets(data.x_train.to(device), data.y_train.to(device))
    module = module.to(device).eval()
    model = Model(module, tuple(data.x_train.shape[1:]), bounds=(0.0, 1.0), nb_classes=10, device=device)
    info = {"model": name, "generator": str(vae.path), "grids": [str(p) for p in vae.grids],
            "test_accuracy": accuracy(module, data.x_test, data.y_test, device),
            "description": "VAE + latent classifier, reconstruction feedback (Kos et al. §4.3)"}
    return model, info


FAMILIES.add(ModelFamily(
    "generative", owns=lambda name: name in GENERATIVE_MODELS, load=load_generative_classifier,
    checkpoints=generative_checkpoints,
    listing=lambda: [(name, "generative", "VAE + latent classifier, reconstruction feedback (Kos et al. §4.3)"
                      + (" (tiny: for tests)" if name.endswith("_tiny") else "")) for name in GENERATIVE_MODELS],
    hint=lambda: f"generative models: {sorted(GENERATIVE_MODELS)}", hint_rank=20), rank=30)
