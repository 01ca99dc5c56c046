"""Training variants of zoo models: adversarial training and entropy regularisation, trained on first use and cached.

A variant model is named ``<zoo name>+<variant>`` (``mnist_cnn+adv_fgsm``, ``mnist_mlp+entropy``,
``mnist_tiny_cnn+adv_step_ll+entropy``: the name splits at the first ``+``). It is the zoo architecture trained from
the zoo's seeded initial weights on the zoo's ``TrainConfig`` (epochs, learning rate, batch size, optimiser, weight
decay, training subset) unless the variant overrides them, with the loss of ``advbridge.defenses.trainers``:

==========================  ================================================================================
``adv_fgsm``                Goodfellow et al. (§7.3): ``0.5·CE(x) + 0.5·CE(x_adv)``, FGSM L∞ ε = 0.25 (their MNIST
                            setting), ``x_adv`` from the current weights at every step.
``adv_step_ll``             Kurakin et al. / Cubuk et al. (§6.6, §6.7): the same α = 0.5 mix with step-l.l. L∞
                            ε = 0.1. Cubuk trains with "half of each batch adversarial"; α = 0.5 on the full batch
                            is the same objective in expectation (Kurakin's λ = 1). ε = 0.1 is [R]: the bridge's
                            step_ll default, the middle of the small-ε range the power-law fits use on MNIST,
                            and weak enough (step-l.l. moves away from the least likely class) that training
                            keeps clean accuracy.
``entropy``                 Cubuk et al. (§6.6): ``CE + β·H(p)`` with β = 1 (the paper gives no coefficient).
``adv_step_ll+entropy``     The "both" regime of Cubuk's Figure 5: ``0.5·(CE(x) + H(p(x))) + 0.5·CE(x_adv)``.
==========================  ================================================================================

The weights come from ``zoo.load_checkpoint``: shipped with the package when the key matches, else the local cache
``cache_root()/models/<base>+<variant>-<dataset>-<hash>.pt``, else deterministic training (one torch thread) then
cached. The key covers the base entry's architecture and ``TrainConfig``, the variant recipe, the data set, the seed
and ``VARIANT_RECIPE_VERSION`` (the local cache's also the torch version). Checkpoints hold only tensors, numbers
and strings (``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from advbridge.bridge import Model
from advbridge.bridge.model import default_device
from advbridge.bridge.spec import AttackSpec
from advbridge.defenses.trainers import AdversarialTraining, EntropyRegularized

from advbridge.evaluations.data.datasets import Dataset, load_dataset
from advbridge.evaluations.zoo.classifiers import RECIPE_VERSION, ZOO, ZooEntry, architecture
from advbridge.evaluations.zoo.family import FAMILIES, ModelFamily, accuracy
from advbridge.evaluations.core.cache import load_checkpoint, local_key, local_path, shipped_name

logger = logging.getLogger(__name__)

#: Bumped whenever the variant training procedure changes, so stale checkpoints are not reused (2: deterministic
#: training on one thread).
VARIANT_RECIPE_VERSION = 2


@dataclass(frozen=True)
class TrainingVariant:
    """How a zoo model is re-trained; part of the variant's cache key.

    :param name: The suffix after ``+``.
    :param description: One line for listings.
    :param attack: ``AttackSpec.to_dict()`` of the training attack, or ``None`` for entropy regularisation alone.
    :param alpha: Weight of the clean term in the α-mix (ignored without an attack).
    :param entropy_beta: ``β`` of the ``β·H(p)`` term on clean inputs (0: none).
    :param backend: Bridge backend the attack runs on (FGSM and step-l.l. take the bit-identical torch fast path).
    :param epochs: Overrides the zoo entry's epochs when set.
    :param lr: Overrides the zoo entry's learning rate when set.
    :param batch_size: Overrides the zoo entry's batch size when set.
    """

    name: str
    description: str
    attack: dict[str, Any] | None = None
    alpha: float = 0.5
    entropy_beta: float = 0.0
    backend: str = "art"
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None

    def spec(self) -> AttackSpec | None:
        return None if self.attack is None else AttackSpec.from_dict(self.attack)


_FGSM_025 = {"name": "fgsm", "norm": "linf", "targeted": "none", "params": {"eps": 0.25}}
_STEP_LL_01 = {"name": "step_ll", "norm": "linf", "targeted": "least_likely", "params": {"eps": 0.1}}

TRAINING_VARIANTS: dict[str, TrainingVariant] = {v.name: v for v in (
    TrainingVariant("adv_fgsm", "Goodfellow α-mix adversarial training, α=0.5, FGSM L∞ ε=0.25 (§7.3)",
                    attack=_FGSM_025, alpha=0.5),
    TrainingVariant("adv_step_ll", "α-mix adversarial training, α=0.5, step-l.l. L∞ ε=0.1 (Kurakin/Cubuk §6.6)",
                    attack=_STEP_LL_01, alpha=0.5),
    TrainingVariant("entropy", "entropy regularisation CE + 1·H(p) (Cubuk §6.6)", entropy_beta=1.0),
    TrainingVariant("adv_step_ll+entropy", "step-l.l. adversarial training plus entropy regularisation "
                    "(Cubuk Fig. 5 'both')", attack=_STEP_LL_01, alpha=0.5, entropy_beta=1.0),
)}


def split_variant(name: str) -> tuple[str, str]:
    """``"mnist_cnn+adv_step_ll+entropy"`` → ``("mnist_cnn", "adv_step_ll+entropy")`` (split at the first ``+``)."""
    base, _, variant = name.partition("+")
    return base, variant


def is_variant(name: Any) -> bool:
    """Whether ``name`` has the form of a training variant (``<zoo name>+<variant>``); ``validate_variant`` checks it."""
    return isinstance(name, str) and "+" in name and ":" not in name


def validate_variant(name: Any) -> str | None:
    """``None`` for a known ``<zoo name>+<variant>``, otherwise a message naming what is unknown and listing the
    known zoo models or variants."""
    if not is_variant(name):
        return f"model {name!r} is not a training variant; expected '<zoo model>+<variant>'"
    base, variant = split_variant(name)
    if base not in ZOO:
        return f"unknown base model {base!r} in {name!r}; zoo models: {sorted(ZOO)}"
    if variant not in TRAINING_VARIANTS:
        return f"unknown training variant {variant!r} in {name!r}; known variants: {sorted(TRAINING_VARIANTS)}"
    return None


def variant_blob(entry: ZooEntry, variant: TrainingVariant, dataset: str, seed: int) -> dict[str, Any]:
    """Everything that decides a variant's trained weights (its checkpoint key, library versions aside)."""
    blob = {"variant_recipe": VARIANT_RECIPE_VERSION, "zoo_recipe": RECIPE_VERSION, "base": entry.name,
            "arch": architecture(entry), "train": asdict(entry.train), "variant": asdict(variant), "dataset": dataset,
            "seed": seed}
    if variant.attack is not None and variant.attack.get("name") == "step_ll":
        # Issue #13: the step-l.l. target is the least-likely class other than the label (it was the plain argmin).
        blob["ll_target"] = "other_than_label"
    return blob


def variant_hash(entry: ZooEntry, variant: TrainingVariant, dataset: str, seed: int) -> str:
    """Hash of everything that decides a variant's trained weights (the local cache's key)."""
    return local_key(variant_blob(entry, variant, dataset, seed))


def _resolve(name: str) -> tuple[ZooEntry, TrainingVariant]:
    error = validate_variant(name)
    if error:
        raise ValueError(error)
    base, variant = split_variant(name)
    return ZOO[base], TRAINING_VARIANTS[variant]


def variant_path(name: str, dataset: str = "mnist5k", seed: int = 0) -> Path:
    """Where ``load_variant(name, dataset, seed=seed)`` caches its checkpoint when it trains it here."""
    entry, variant = _resolve(name)
    return local_path("models", f"{name}-{dataset}", variant_blob(entry, variant, dataset, seed))


def variant_checkpoints(name: str, dataset: str = "mnist5k", seed: int = 0) -> list[str]:
    """The manifest name of the shipped checkpoint ``load_variant(name, dataset, seed=seed)`` would read."""
    entry, variant = _resolve(name)
    return [shipped_name("models", f"{name}-{dataset}", variant_blob(entry, variant, dataset, seed))]


def load_variant(name: str, dataset: str = "mnist5k", *, seed: int = 0, device: str | torch.device | None = None,
                 data: Dataset | None = None, data_root: str | Path | None = None,
                 retrain: bool = False) -> tuple[Model, dict[str, Any]]:
    """Return variant ``<zoo name>+<variant>`` as a bridge ``Model`` plus its info: the shipped weights when the key
    matches, else trained (deterministically, on one thread) and cached on first use.

    :param name: E.g. ``mnist_cnn+adv_fgsm`` (``TRAINING_VARIANTS`` lists the variants, ``ZOO`` the bases).
    :param dataset: Data set it is trained on (one the zoo entry is defined for).
    :param seed: Seeds the initial weights (as the zoo does), shuffling, dropout and the attack (part of the cache key).
    :param device: Where the model trains and runs; CUDA when present by default.
    :param data: An already loaded ``Dataset`` (saves reloading).
    :param data_root: Folder of user-supplied files for ``mnist``/``cifar10``.
    :param retrain: Ignore the shipped weights and the cache and train again (cached locally).
    :returns: ``(model, info)``; info has ``model``, ``base``, ``variant``, ``recipe``, ``train``,
        ``test_accuracy``, ``val_accuracy``, ``train_accuracy``, ``cache``, ``freshly_trained``, ``weights``
        (``shipped``, ``cache`` or ``trained``), ``history`` and ``description``.
    """
    entry, variant = _resolve(name)
    base, variant_name = split_variant(name)
    if dataset not in entry.datasets:
        raise ValueError(f"zoo model '{base}' is defined for datasets {list(entry.datasets)}, got {dataset!r}")
    device = torch.device(device) if device is not None else default_device()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the zoo's initial weights: they depend on the seed only
        module = entry.build()
    data_shape = (1, 28, 28) if dataset in ("mnist5k", "mnist") else (3, 32, 32)

    def train() -> dict[str, Any]:
        loaded = data if data is not None else load_dataset(dataset, root=data_root)
        metrics, history = _train_variant(module, entry, variant, loaded, seed, device, name)
        return {"state_dict": {k: v.cpu() for k, v in module.state_dict().items()}, "metrics": metrics,
                "history": history}

    ckpt, path, source = load_checkpoint("models", f"{name}-{dataset}", variant_blob(entry, variant, dataset, seed),
                                         train, retrain=retrain, model=name)
    if source != "trained":
        module.load_state_dict(ckpt["state_dict"])
    else:
        logger.info("trained %s: test accuracy %.4f", name, ckpt["metrics"]["test_accuracy"])
    metrics, history = ckpt["metrics"], ckpt["history"]
    module = module.to(device).eval()
    model = Model(module, data_shape, bounds=(0.0, 1.0), nb_classes=10, device=device)
    info = {"model": name, "base": base, "variant": variant_name, "recipe": asdict(variant),
            "train": _train_settings(entry, variant), "test_accuracy": float(metrics["test_accuracy"]),
            "val_accuracy": float(metrics["val_accuracy"]), "train_accuracy": float(metrics["train_accuracy"]),
            "cache": str(path), "freshly_trained": source == "trained", "weights": source, "history": history,
            "description": f"{entry.description}; {variant.description}"}
    return model, info


def _train_settings(entry: ZooEntry, variant: TrainingVariant) -> dict[str, Any]:
    cfg = entry.train
    return {"epochs": variant.epochs or cfg.epochs, "lr": variant.lr or cfg.lr,
            "batch_size": variant.batch_size or cfg.batch_size, "optimizer": cfg.optimizer,
            "weight_decay": cfg.weight_decay, "train_subset": cfg.train_subset}


def _train_variant(module: torch.nn.Module, entry: ZooEntry, variant: TrainingVariant, data: Dataset, seed: int,
                   device: torch.device, desc: str) -> tuple[dict[str, float], list[dict[str, float]]]:
    settings = _train_settings(entry, variant)
    module.to(device)
    classifier = Model(module, tuple(data.x_train.shape[1:]), bounds=data.bounds, nb_classes=data.nb_classes,
                       device=device).art()
    common = dict(epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
                  optimizer=settings["optimizer"], weight_decay=settings["weight_decay"], seed=seed)
    spec = variant.spec()
    if spec is None:
        trainer = EntropyRegularized(classifier, beta=variant.entropy_beta, **common)
    else:
        trainer = AdversarialTraining(classifier, spec, alpha=variant.alpha, entropy_beta=variant.entropy_beta,
                                      backend=variant.backend, **common)
    trainer.name = f"train {desc}"
    x, y = data.x_train, data.y_train
    if settings["train_subset"] is not None:
        x, y = x[:settings["train_subset"]], y[:settings["train_subset"]]
    trainer.fit(x, y)
    module.eval()
    metrics = {"val_accuracy": accuracy(module, data.x_val, data.y_val, device),
               "test_accuracy": accuracy(module, data.x_test, data.y_test, device),
               "train_accuracy": accuracy(module, x, y, device)}
    return metrics, [dict(h) for h in trainer.history]


FAMILIES.add(ModelFamily(
    "variant", owns=lambda name: "+" in name, load=load_variant, checkpoints=variant_checkpoints,
    listing=lambda: [(f"{e.name}+{v.name}", "variant", f"{e.description}; {v.description}")
                     for e in ZOO.values() for v in TRAINING_VARIANTS.values()],
    hint="trained variants <zoo model>+<variant>", validate=validate_variant, hint_rank=40), rank=20)
