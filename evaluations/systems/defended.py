"""Defended systems for suites: MagNet/MID systems built from a suite's ``[defense]`` and ``[[defenses]]`` tables.

Autoencoders are trained on first use and cached next to the zoo's classifiers (keyed by a hash of their
recipe, read back with ``torch.load(weights_only=True)``). Detector thresholds are fitted on clean images of
the validation split, never on the images a cell attacks. Threats name the model an attack is run on:

- ``oblivious``: the bare classifier (MagNet's "blackbox" setting: the attacker does not know the defense);
- ``adaptive``: the classifier behind the differentiable reformer (white-box through the reformer);
- ``adaptive:<ae>``: the same through the reformer built on autoencoder ``<ae>`` (the graybox attacks).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from advbridge.bridge import Model
from advbridge.defenses.magnet import (DivergenceDetector, MagNet, RandomizedMagNet, ReconstructionErrorDetector,
                                       Reformer, check_input_shape)
from advbridge.defenses.invert_and_classify import EnhancedInvertAndClassify, InvertAndClassify
from advbridge.defenses.projection import GeneratorProjection
from advbridge.defenses.mid import MutualInformationDetector

from advbridge.evaluations.core.cache import cached_modules
from advbridge.evaluations.data.datasets import Dataset
from advbridge.evaluations.zoo.generative import GeneratorRecipe, TrainedGenerator, load_generator
from advbridge.evaluations.systems.autoencoders import load_autoencoder, load_diverse_autoencoders
from advbridge.evaluations.systems.recipes import (AE_RECIPE_VERSION, CLASSIFIERS, AutoencoderRecipe, DiverseRecipe,
                                                   EnhancedRecipe, ProjectionSettings)

logger = logging.getLogger(__name__)


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
        self._generator: TrainedGenerator | None = None
        self._classifiers: dict[tuple, Model] = {}

    def autoencoder(self, name: str) -> nn.Module:
        """``I``/``II``/``cifar``: a MagNet AE; ``D<k>``: the k-th diversity-trained AE; ``alphagan``: the α-GAN's
        G∘E; ``invert``: the projection on the suite generator's range (``GeneratorProjection``)."""
        if name not in self._aes:
            if name.startswith("D") and name[1:].isdigit():
                diverse = DiverseRecipe(**self.settings.get("diverse", {}))
                pack = load_diverse_autoencoders(diverse, self.data, self.dataset, self.seed, self.device)
                self._aes.update({f"D{k}": ae for k, ae in enumerate(pack)})
                if name not in self._aes:
                    raise ValueError(f"autoencoder {name!r}: the diverse pack has only {diverse.n} autoencoders")
            elif name == "alphagan":
                cfg = self.settings.get("generator", {})
                gen_recipe = GeneratorRecipe(**cfg) if cfg.get("kind") == "alpha_gan" else GeneratorRecipe("alpha_gan")
                self._aes[name] = load_generator(gen_recipe, self.data, self.dataset, self.seed, self.device).model
            elif name == "invert":
                self._aes[name] = self._projection()
            else:
                ae_recipe = AutoencoderRecipe(**self.settings.get("autoencoder", {}))
                self._aes[name] = load_autoencoder(name, self.data, self.dataset, self.seed, ae_recipe, self.device)
        return self._aes[name]

    def generator(self) -> TrainedGenerator:
        """The suite's generative model (``[defense].generator``; a VAE by default)."""
        if self._generator is None:
            recipe = GeneratorRecipe(**self.settings.get("generator", {}))
            self._generator = load_generator(recipe, self.data, self.dataset, self.seed, self.device)
        return self._generator

    def _projection(self, **overrides) -> GeneratorProjection:
        gen = self.generator()
        settings = {**asdict(ProjectionSettings(**self.settings.get("projection", {}))), **overrides}
        return GeneratorProjection(gen.generator, gen.latent_dim, seed=self.seed, **settings)

    def reformer(self, name: str, model: Model) -> Reformer:
        """Reformer ``name``: ``invert`` is Invert-and-Classify, any other name a MagNet reformer on that AE."""
        if name == "invert":
            projection = self.autoencoder("invert")
            assert isinstance(projection, GeneratorProjection)  # what autoencoder("invert") builds
            return InvertAndClassify.around(projection, _device_type(model.device))
        return Reformer(self.autoencoder(name), model.bounds, _device_type(model.device),
                        input_shape=check_input_shape(model.input_shape))

    def classifier(self, kind: str, model: Model) -> Model:
        """``base``: ``model``; ``enhanced``: ``model`` fine-tuned by Enhanced Invert-and-Classify (cached)."""
        if kind not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {list(CLASSIFIERS)}, got {kind!r}")
        if kind == "base":
            return model
        key = (kind, id(model))
        if key not in self._classifiers:
            self._classifiers[key] = self._enhanced(model)
        return self._classifiers[key]

    def _enhanced(self, model: Model) -> Model:
        recipe = EnhancedRecipe(**self.settings.get("enhanced", {}))
        gen = self.generator()
        weights = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes()
                                          for v in model.module.state_dict().values())).hexdigest()[:16]

        def build():
            return [copy.deepcopy(model.module).cpu()]

        def train(modules):
            module = modules[0].to(model.device)
            projection = self._projection(steps=recipe.project_steps, restarts=recipe.project_restarts)
            # The whole judged function: the model's preprocessing, its mean/std and the module (issue #13).
            art = Model(module, model.input_shape, bounds=model.bounds, mean=model.mean, std=model.std,
                        preprocessing=list(model.preprocessing), nb_classes=model.nb_classes,
                        device=model.device).art()
            trainer = EnhancedInvertAndClassify(art, projection, mu=recipe.mu, eta=recipe.eta, epochs=recipe.epochs,
                                                lr=recipe.lr, batch_size=recipe.batch_size,
                                                inner_steps=recipe.inner_steps, inner_lr=recipe.inner_lr,
                                                penalty=recipe.penalty, seed=self.seed)
            trainer.fit(self.data.x_train.numpy(), self.data.y_train.numpy())

        blob = {"base_weights": weights, "generator": gen.path.name, **asdict(recipe), "seed": self.seed,
                "dataset": self.dataset, "recipe_version": AE_RECIPE_VERSION, "objective": "ce_on_x"}
        (module,), _, _ = cached_modules("models", f"enhanced_inc-{self.dataset}", blob, build, train)
        return Model(module.to(model.device), model.input_shape, bounds=model.bounds, mean=model.mean, std=model.std,
                     preprocessing=list(model.preprocessing), nb_classes=model.nb_classes, device=model.device)

    def systems(self, model: Model) -> dict[str, MagNet | RandomizedMagNet]:
        """Every ``[[defenses]]`` system around ``model``, thresholds fitted on the validation split."""
        device = model.device
        x_val = self._validation_images()
        built: dict[str, MagNet | RandomizedMagNet] = {}
        for cfg in self.systems_config:
            if "randomize" in cfg:
                members = [built[name] for name in cfg["randomize"]]
                plain = [m for m in members if isinstance(m, MagNet)]
                if len(plain) < len(members):
                    raise ValueError(f"defense {cfg['name']!r}: randomize lists a randomized system; it may list only "
                                     "systems with detectors or a reformer")
                built[cfg["name"]] = RandomizedMagNet(plain, seed=self.seed, query_size=cfg.get("query_size"))
                continue
            classifier = self.classifier(cfg.get("classifier", "base"), model).pipeline
            detectors = {self._detector_name(d): self._detector(d, classifier, model)
                         for d in cfg.get("detectors", [])}
            reformer = None
            if cfg.get("reformer", "none") != "none":
                reformer = self.reformer(cfg["reformer"], model)
            built[cfg["name"]] = MagNet(classifier, detectors, reformer, device=device).fit(x_val)
        return built

    def attack_model(self, model: Model, threat: str) -> Model:
        """The model an attack under ``threat`` is run on: ``adaptive:<system>`` attacks that system's classifier
        through its reformer; ``adaptive[:<ae>]`` the bare classifier through a reformer (``[defense].reformer``)."""
        if threat in ("none", "oblivious"):
            return model
        name = threat.partition(":")[2] or self.settings.get("reformer", "I")
        system = next((cfg for cfg in self.systems_config if cfg["name"] == name), None)
        if system is not None:
            model = self.classifier(system.get("classifier", "base"), model)
            name = system.get("reformer", "none")
            if name == "none":
                return model
        reformer = self.reformer(name, model)
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

    def _detector(self, cfg: dict[str, Any], classifier: nn.Module, model: Model):
        ae = self.autoencoder(cfg["ae"])
        drop = float(cfg.get("drop_rate", 0.001))
        device, shape, bounds = model.device, check_input_shape(model.input_shape), model.bounds
        if cfg["kind"] == "reconstruction":
            return ReconstructionErrorDetector(ae, p=int(cfg.get("p", 2)), drop_rate=drop, device=device,
                                               input_shape=shape, bounds=bounds)
        if cfg["kind"] == "divergence":
            return DivergenceDetector(classifier, ae, temperature=float(cfg.get("temperature", 10.0)),
                                      drop_rate=drop, device=device, input_shape=shape, bounds=bounds)
        temperature = cfg.get("temperature")  # None: the estimator's own default (max_coupling needs T > 1)
        return MutualInformationDetector(classifier, ae, estimator=cfg.get("estimator", "population_pmi"),
                                         temperature=None if temperature is None else float(temperature),
                                         drop_rate=drop, device=device, input_shape=shape, bounds=bounds)


def _device_type(device: torch.device) -> str:
    return "gpu" if torch.device(device).type == "cuda" else "cpu"


def defense_metrics(name: str, adv, clean, y: np.ndarray) -> dict[str, float]:
    """MagNet's metric and its ablations for system ``name`` (``adv``/``clean``: ``MagNetOutputs``), under the one
    definition of success: an input the system's classifier gets wrong when clean is already misclassified, and
    it counts as wrong (never as handled) whatever happens to its adversarial version.

    ``accuracy_with_defense``: inputs whose clean version the classifier gets right after reforming, and whose
    adversarial version is rejected or classified correctly after reforming (§1.4), over all inputs;
    ``accuracy_detector_only``: the same without the reformer (the bare classifier judges both);
    ``accuracy_reformer_only``: right after reforming both clean and adversarial;
    ``detection_rate``: adversarial inputs rejected;
    ``clean_accuracy_with_defense``: clean inputs accepted and classified correctly after reforming (§2.5);
    ``false_positive_rate``: clean inputs rejected;
    ``already_misclassified``: clean inputs the classifier gets wrong after reforming (a count).
    """
    y = np.asarray(y)
    ev = adv.evaluate(y, clean)
    return {f"accuracy_with_defense[{name}]": ev.with_defense,
            f"accuracy_detector_only[{name}]": ev.detector_only,
            f"accuracy_reformer_only[{name}]": ev.reformer_only,
            f"detection_rate[{name}]": ev.detection_rate,
            f"clean_accuracy_with_defense[{name}]": float(((~clean.rejected) & (clean.pred_reformed == y)).mean()),
            f"false_positive_rate[{name}]": float(clean.rejected.mean()),
            f"already_misclassified[{name}]": ev.already_misclassified}
