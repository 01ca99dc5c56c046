"""Defended systems for suites: MagNet/MID systems built from a suite's ``[defense]`` and ``[[defenses]]`` tables.

Autoencoders are trained on first use and cached next to the zoo's classifiers (keyed by a hash of their
recipe, read back with ``torch.load(weights_only=True)``). Detector thresholds are fitted on clean images of
the validation split, never on the images a cell attacks. Threats name the model an attack is run on:

- ``oblivious``: the bare classifier (MagNet's "blackbox" setting: the attacker does not know the defense);
- ``adaptive``: the classifier behind the differentiable reformer (white-box through the reformer);
- ``adaptive:<ae>``: the same through the reformer built on autoencoder ``<ae>`` (the graybox attacks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from advbridge.bridge import Model
from advbridge.defenses.autoencoders import (CIFAR_AE, MNIST_AE_I, MNIST_AE_II, DenoisingAutoEncoder,
                                             train_autoencoder, train_diverse_autoencoders)
from advbridge.defenses.magnet import (DivergenceDetector, MagNet, RandomizedMagNet, ReconstructionErrorDetector,
                                       Reformer)
from advbridge.defenses.mid import ESTIMATORS, MutualInformationDetector

from .data import Dataset
from .zoo import cache_root

logger = logging.getLogger(__name__)

#: Named autoencoder structures (algorithms.md §2.1): AE-I ``[3, 'average', 3]``, AE-II ``[3]``; CIFAR ``[3]``.
STRUCTURES = {"I": MNIST_AE_I, "II": MNIST_AE_II, "cifar": CIFAR_AE}
DETECTOR_KINDS = ("reconstruction", "divergence", "mid")
#: Bumped whenever autoencoder training changes, so stale checkpoints are not reused.
AE_RECIPE_VERSION = 1


def resolved_defense_config(settings: dict[str, Any]) -> dict[str, Any]:
    """The autoencoder recipes a suite's ``[defense]`` resolves to (defaults filled in): part of every cell key."""
    return {"autoencoder": asdict(AutoencoderRecipe(**settings.get("autoencoder", {}))),
            "diverse": asdict(DiverseRecipe(**settings.get("diverse", {}))), "recipe_version": AE_RECIPE_VERSION}


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


def _cached(name: str, blob: dict[str, Any], build, train) -> list[nn.Module]:
    """Modules from ``build()``, with weights from the cache or from ``train(modules)`` (then cached)."""
    key = hashlib.sha256(json.dumps({**blob, "recipe_version": AE_RECIPE_VERSION,
                                     "torch": torch.__version__.split("+")[0]}, sort_keys=True).encode())
    path = cache_root() / "autoencoders" / f"{name}-{key.hexdigest()[:16]}.pt"
    modules = build()
    if path.exists():
        states = torch.load(path, map_location="cpu", weights_only=True)
        for module, state in zip(modules, states["state_dicts"], strict=True):
            module.load_state_dict(state)
    else:
        train(modules)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        torch.save({"state_dicts": [{k: v.cpu() for k, v in m.state_dict().items()} for m in modules]}, tmp)
        os.replace(tmp, path)
        logger.info("trained %s, cached at %s", name, path)
    return [m.eval() for m in modules]


def load_autoencoder(structure: str, data: Dataset, dataset: str, seed: int = 0,
                     recipe: AutoencoderRecipe = AutoencoderRecipe(), device=None) -> DenoisingAutoEncoder:
    """MagNet autoencoder ``structure`` (``I``, ``II`` or ``cifar``), trained on ``data``'s training split."""
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
    return _cached(f"ae_{structure}-{dataset}", blob, build, train)[0]


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
    return _cached(f"diverse_{recipe.n}x{recipe.structure}-{dataset}", blob, build, train)


class DefenseBuilder:
    """Builds the autoencoders, systems and threat models of one suite for one classifier.

    :param settings: The suite's ``[defense]`` table (validated): ``autoencoder`` recipe fields, ``diverse``,
        ``fit_n``, ``reformer``.
    :param systems: The suite's ``[[defenses]]`` tables (validated).
    """

    def __init__(self, settings: dict[str, Any], systems: list[dict[str, Any]], data: Dataset, dataset: str,
                 seed: int, device=None) -> None:
        self.settings = settings
        self.systems_config = systems
        self.data = data
        self.dataset = dataset
        self.seed = seed
        self.device = device
        self._aes: dict[str, nn.Module] = {}

    def autoencoder(self, name: str) -> nn.Module:
        """``I``/``II``/``cifar``: a MagNet AE; ``D<k>``: the k-th diversity-trained AE."""
        if name not in self._aes:
            if name.startswith("D") and name[1:].isdigit():
                recipe = DiverseRecipe(**self.settings.get("diverse", {}))
                pack = load_diverse_autoencoders(recipe, self.data, self.dataset, self.seed, self.device)
                self._aes.update({f"D{k}": ae for k, ae in enumerate(pack)})
                if name not in self._aes:
                    raise ValueError(f"autoencoder {name!r}: the diverse pack has only {recipe.n} autoencoders")
            else:
                recipe = AutoencoderRecipe(**self.settings.get("autoencoder", {}))
                self._aes[name] = load_autoencoder(name, self.data, self.dataset, self.seed, recipe, self.device)
        return self._aes[name]

    def systems(self, model: Model) -> dict[str, MagNet | RandomizedMagNet]:
        """Every ``[[defenses]]`` system around ``model``, thresholds fitted on the validation split."""
        classifier = model.pipeline
        device = model.device
        x_val = self._validation_images()
        built: dict[str, MagNet | RandomizedMagNet] = {}
        for cfg in self.systems_config:
            if "randomize" in cfg:
                members = [built[name] for name in cfg["randomize"]]
                built[cfg["name"]] = RandomizedMagNet(members, seed=self.seed, query_size=cfg.get("query_size"))
                continue
            detectors = {self._detector_name(d): self._detector(d, classifier, device) for d in cfg["detectors"]}
            reformer = None
            if cfg.get("reformer", "none") != "none":
                reformer = Reformer(self.autoencoder(cfg["reformer"]), model.bounds, _device_type(device))
            built[cfg["name"]] = MagNet(classifier, detectors, reformer, device=device).fit(x_val)
        return built

    def attack_model(self, model: Model, threat: str) -> Model:
        """The model an attack under ``threat`` is run on."""
        if threat in ("none", "oblivious"):
            return model
        ae_name = threat.partition(":")[2] or self.settings.get("reformer", "I")
        reformer = Reformer(self.autoencoder(ae_name), model.bounds, _device_type(model.device))
        return Model(model.module, model.input_shape, bounds=model.bounds, mean=model.mean, std=model.std,
                     preprocessing=[reformer, *model.preprocessing], nb_classes=model.nb_classes, device=model.device)

    def _validation_images(self) -> torch.Tensor:
        x_val = self.data.x_val
        n = min(int(self.settings.get("fit_n", len(x_val))), len(x_val))
        order = torch.randperm(len(x_val), generator=torch.Generator().manual_seed(self.seed))
        return x_val[order[:n]]

    @staticmethod
    def _detector_name(cfg: dict[str, Any]) -> str:
        if cfg["kind"] == "reconstruction":
            return f"recon_{cfg['ae']}_p{cfg.get('p', 2)}"
        if cfg["kind"] == "divergence":
            return f"jsd_{cfg['ae']}_T{cfg.get('temperature', 10.0):g}"
        return f"mid_{cfg['ae']}_{cfg.get('estimator', 'population_pmi')}"

    def _detector(self, cfg: dict[str, Any], classifier: nn.Module, device):
        ae = self.autoencoder(cfg["ae"])
        drop = float(cfg.get("drop_rate", 0.001))
        if cfg["kind"] == "reconstruction":
            return ReconstructionErrorDetector(ae, p=int(cfg.get("p", 2)), drop_rate=drop, device=device)
        if cfg["kind"] == "divergence":
            return DivergenceDetector(classifier, ae, temperature=float(cfg.get("temperature", 10.0)),
                                      drop_rate=drop, device=device)
        return MutualInformationDetector(classifier, ae, estimator=cfg.get("estimator", "population_pmi"),
                                         temperature=float(cfg.get("temperature", 1.0)), drop_rate=drop,
                                         device=device)


def _device_type(device: torch.device) -> str:
    return "gpu" if torch.device(device).type == "cuda" else "cpu"


def defense_metrics(name: str, adv, clean, y: np.ndarray) -> dict[str, float]:
    """MagNet's metric and its ablations for system ``name`` (``adv``/``clean``: ``MagNetOutputs``).

    ``accuracy_with_defense``: adversarial inputs rejected or classified correctly after reforming (§1.4);
    ``clean_accuracy_with_defense``: clean inputs accepted and classified correctly after reforming (§2.5);
    ``false_positive_rate``: clean inputs rejected.
    """
    ev = adv.evaluate(y)
    return {f"accuracy_with_defense[{name}]": ev.with_defense,
            f"accuracy_detector_only[{name}]": ev.detector_only,
            f"accuracy_reformer_only[{name}]": ev.reformer_only,
            f"detection_rate[{name}]": ev.detection_rate,
            f"clean_accuracy_with_defense[{name}]": float(((~clean.rejected) & (clean.pred_reformed == y)).mean()),
            f"false_positive_rate[{name}]": float(clean.rejected.mean())}


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
