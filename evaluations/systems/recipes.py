"""What a suite's ``[defense]`` table resolves to: the autoencoder, diverse, projection and enhanced-classifier
recipes (defaults filled in), the names a system may use, and the checks of the tables (an error message or
``None``, which :mod:`advbridge.evaluations.suites` reports with the key's line)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from collections.abc import Sequence
from typing import Any

from advbridge.defenses.autoencoders import CIFAR_AE, MNIST_AE_I, MNIST_AE_II
from advbridge.defenses.projection import GRADIENTS, check_projection_settings
from advbridge.defenses.mid import ESTIMATORS

from advbridge.evaluations.zoo.generative import GeneratorRecipe

__all__ = ["AE_RECIPE_VERSION", "CLASSIFIERS", "DETECTOR_KINDS", "GENERATIVE_NAMES", "STRUCTURES", "AutoencoderRecipe",
           "DiverseRecipe", "EnhancedRecipe", "ProjectionSettings", "resolved_defense_config", "uses_generator",
           "validate_detector", "validate_projection", "validate_recipe"]

#: Named autoencoder structures (algorithms.md §2.1): AE-I ``[3, 'average', 3]``, AE-II ``[3]``; CIFAR ``[3]``.
STRUCTURES = {"I": MNIST_AE_I, "II": MNIST_AE_II, "cifar": CIFAR_AE}
DETECTOR_KINDS = ("reconstruction", "divergence", "mid")
#: Reformer/autoencoder names backed by the suite's generative models: ``invert`` (the projection on G's range,
#: Invert-and-Classify), ``alphagan`` (α-GAN's G∘E as an autoencoder, the MID seed's generator); and the
#: ``enhanced`` classifier of a system.
GENERATIVE_NAMES = {"invert", "alphagan", "enhanced"}
CLASSIFIERS = ("base", "enhanced")
#: Bumped whenever autoencoder training changes, so stale checkpoints are not reused.
AE_RECIPE_VERSION = 1


def resolved_defense_config(settings: dict[str, Any], systems: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The recipes a suite's ``[defense]`` resolves to (defaults filled in): part of every cell key.

    The generator, projection and enhanced-classifier settings join the key only in suites that use them, so the
    keys of MagNet/MID suites do not change.
    """
    out = {"autoencoder": asdict(AutoencoderRecipe(**settings.get("autoencoder", {}))),
           "diverse": asdict(DiverseRecipe(**settings.get("diverse", {}))), "recipe_version": AE_RECIPE_VERSION}
    if uses_generator(settings, systems):
        out.update(generator=GeneratorRecipe(**settings.get("generator", {})).resolved(),
                   projection=asdict(ProjectionSettings(**settings.get("projection", {}))),
                   enhanced=asdict(EnhancedRecipe(**settings.get("enhanced", {}))))
    return out


def uses_generator(settings: dict[str, Any], systems: Sequence[dict[str, Any]]) -> bool:
    """Whether a suite's defense needs a generative model (``invert``, ``alphagan`` or an enhanced classifier)."""
    names = {settings.get("reformer")} | {t.partition(":")[2] for t in settings.get("threats", [])}
    for cfg in systems:
        names |= {cfg.get("reformer"), cfg.get("classifier")} | {d.get("ae") for d in cfg.get("detectors", [])}
    return bool(names & GENERATIVE_NAMES) or any(k in settings for k in ("generator", "projection", "enhanced"))


@dataclass(frozen=True)
class ProjectionSettings:
    """Invert-and-Classify's projection (§3.2 defaults): L steps, R restarts, momentum SGD lr 10, momentum 0.7.

    ``gradient`` is what attackers get through it: ``bpda`` (straight-through) or ``unrolled``.
    """

    steps: int = 200
    restarts: int = 10
    lr: float = 10.0
    momentum: float = 0.7
    optimizer: str = "sgd"
    init_std: float | None = None
    gradient: str = "bpda"


@dataclass(frozen=True)
class EnhancedRecipe:
    """Enhanced Invert-and-Classify (§3.1): μ, η and the fine-tuning run; training images are projected with
    ``project_steps`` × ``project_restarts`` (cheaper than the defense's projection). Measured on one thread for
    `mnist_cnn` and the VAE: projecting 3,500 images at 100 × 2 takes about 5 min and an epoch at 5 inner steps
    about 70 s, hence the lighter defaults."""

    mu: float = 0.5
    eta: float = 0.5
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 64
    inner_steps: int = 3
    inner_lr: float = 0.05
    penalty: float = 10.0
    project_steps: int = 50
    project_restarts: int = 1


@dataclass(frozen=True)
class AutoencoderRecipe:
    """How a defense autoencoder is trained: §2.1's noise 0.1, MSE and activity penalty 1e-9, Adam.

    The paper's lr 1e-3 × 100 epochs on 55,000 images is about 21,000 steps; on 3,500 images fewer steps need a
    larger rate. Measured here for AE-I with `mnist_cnn` (bare: 95.7% test accuracy): 30 epochs at lr 1e-3
    (batch 128) left MSE 0.073 and 73.5% accuracy after reforming; 30 at 3e-3: MSE 0.0052, 95.2%, and 82.5% of
    40 C&W L2 (κ = 0) examples repaired by the reformer; 80 at 3e-3: 0.0018, 95.5%, 85.0%; 40 at 1e-2 (the
    default): 0.0021, 95.5%, 92.5%, in 61 s on one thread.
    """

    epochs: int = 40
    lr: float = 1e-2
    batch_size: int = 64
    noise: float = 0.1
    activity_reg: float = 1e-9


@dataclass(frozen=True)
class DiverseRecipe:
    """Graybox diversity training (§2.7): ``n`` autoencoders of one structure, diversity weight ``alpha``."""

    n: int = 4
    alpha: float = 0.2
    structure: str = "I"
    pre_epochs: int = 3
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3


def validate_detector(cfg: Any, where: str) -> str | None:
    """An error message for a bad detector table, or ``None``."""
    if not isinstance(cfg, dict):
        return f"{where}: each detector must be a table like {{ kind = 'reconstruction', ae = 'I', p = 2 }}"
    allowed = {"kind", "ae", "p", "temperature", "estimator", "drop_rate"}
    unknown = set(cfg) - allowed
    if unknown:
        return f"{where}: unknown detector key(s) {sorted(unknown)}; expected some of {sorted(allowed)}"
    if cfg.get("kind") not in DETECTOR_KINDS:
        return f"{where}: detector kind must be one of {list(DETECTOR_KINDS)}, got {cfg.get('kind')!r}"
    if not isinstance(cfg.get("ae"), str):
        return f"{where}: a detector needs ae = 'I', 'II', 'cifar' or 'D<k>' (a diverse autoencoder)"
    if cfg["kind"] == "reconstruction" and cfg.get("p", 2) not in (1, 2):
        return f"{where}: p must be 1 or 2, got {cfg.get('p')!r}"
    if cfg.get("estimator", "population_pmi") not in ESTIMATORS:
        return f"{where}: estimator must be one of {list(ESTIMATORS)}, got {cfg.get('estimator')!r}"
    drop = cfg.get("drop_rate", 0.001)
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 < drop < 1:
        return f"{where}: drop_rate must be a number in (0, 1), got {drop!r}"
    return None


def validate_recipe(recipe: type, fields_: dict[str, Any]) -> str | None:
    """An error message when a recipe table's values are rejected by the recipe (type or range), else ``None``."""
    try:
        built = recipe(**fields_)
    except (TypeError, ValueError) as err:
        return str(err)
    for name, value in asdict(built).items():
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, (int, float)) and value < 0:
            return f"{name} must be >= 0, got {value!r}"
    return None


def validate_projection(fields_: dict[str, Any]) -> str | None:
    """An error message for a bad ``[defense].projection`` table, else ``None``."""
    settings = asdict(ProjectionSettings(**fields_))
    if settings.pop("gradient") not in GRADIENTS:
        return f"gradient must be one of {list(GRADIENTS)}, got {fields_.get('gradient')!r}"
    try:
        check_projection_settings(**settings)
    except ValueError as err:
        return str(err)
    return None
