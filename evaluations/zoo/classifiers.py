"""Model zoo: architectures with shipped weights, else trained locally on first use and cached by config hash.

Checkpoints hold only tensors, numbers and strings and are read with ``torch.load(..., weights_only=True)``.

Where the weights come from (``load_checkpoint``, used by every trained model of the package):

1. the package's shipped weights (``WEIGHTS_DIR``, listed with their sha256 in ``weights.json``) when the recipe's
   key matches one of them (same name, data set, seed and recipe), unless retraining is asked for;
2. the local cache (``cache_root()``), keyed by the recipe and the torch version;
3. training, always on ``TRAINING_THREADS`` torch threads with ``torch.use_deterministic_algorithms(True)``
   (``deterministic_training``), whatever thread count the caller runs with; the result is cached.

``advbridge weights`` (``make weights``) re-trains the shipped set and rewrites the manifest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from advbridge.bridge import Model
from advbridge.bridge.model import default_device

from advbridge.evaluations.data.datasets import Dataset, load_dataset
from advbridge.evaluations.zoo.family import FAMILIES, ModelFamily, accuracy
from advbridge.evaluations.core.cache import TRAINING, cached_modules, checkpoint_key, load_checkpoint, shipped_name


logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- architectures
def mnist_cnn() -> nn.Module:
    """Carlini & Wagner / MagNet MNIST classifier (algorithms.md §2.4); returns logits."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 200), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10),
    )


def mnist_softmax() -> nn.Module:
    """Multinomial logistic regression on raw pixels (Goodfellow's shallow softmax classifier)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def mnist_mlp() -> nn.Module:
    """FC100-100-10 with sigmoid hidden units (Szegedy et al. 2014, Table 1)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.Sigmoid(), nn.Linear(100, 100), nn.Sigmoid(),
                         nn.Linear(100, 10))


def mnist_relu_small() -> nn.Module:
    """FC32-32-10 with ReLU units: small enough for the exact oracle's mixed-integer programs
    (``analysis.exact``; Tjeng et al. 2019 verify MNIST networks of this kind)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))


def mnist_tiny_cnn() -> nn.Module:
    """A small CNN that trains in seconds on 2 CPU cores: for tests and quick runs."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 6 * 6, 10))


def mnist_fc200() -> nn.Module:
    """FC200-200-10 with sigmoid hidden units (Szegedy et al. 2014, Table 1)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 200), nn.Sigmoid(), nn.Linear(200, 200), nn.Sigmoid(),
                         nn.Linear(200, 10))


#: AE400-10's autoencoder pre-training (Szegedy et al. 2014, Table 1): 784-400-784, sigmoid units, MSE, Adam, on the
#: mnist5k training split with its own seed; part of the module's ``repr`` and so of the zoo cache key.
AE400_PRETRAIN: dict[str, Any] = {"hidden": 400, "epochs": 20, "lr": 1e-3, "batch_size": 64, "seed": 0, "dataset": "mnist5k",
                  "version": 2}


class AE400(nn.Sequential):
    """AE400-10: an autoencoder-pretrained 400-unit sigmoid layer under a softmax layer (Szegedy et al. 2014).

    Built with the encoder weights of a 784-400-784 autoencoder (``AE400_PRETRAIN``), trained on first use and cached
    under ``cache_root()/pretrained``; the zoo then fine-tunes the whole network with cross-entropy. The paper's
    sparsity penalty and its λ = 1e-6 weight decay are left out.
    """

    def __init__(self, encoder: nn.Linear) -> None:
        super().__init__(nn.Flatten(), encoder, nn.Sigmoid(), nn.Linear(encoder.out_features, 10))

    def extra_repr(self) -> str:
        return f"pretrain={json.dumps(AE400_PRETRAIN, sort_keys=True)}"


def mnist_ae400() -> nn.Module:
    """AE400-10 (Szegedy et al. 2014, Table 1); see :class:`AE400`. The pre-training leaves the global RNG alone."""
    recipe = AE400_PRETRAIN

    def build() -> list[nn.Module]:
        return [nn.Linear(784, recipe["hidden"]), nn.Linear(recipe["hidden"], 784)]

    def train(modules: list[nn.Module]) -> None:
        encoder, decoder = modules
        x = load_dataset(recipe["dataset"]).x_train.flatten(1)
        gen = torch.Generator().manual_seed(recipe["seed"])
        net = nn.Sequential(encoder, nn.Sigmoid(), decoder, nn.Sigmoid()).train()
        opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
        for _ in tqdm(range(recipe["epochs"]), desc="pretrain ae400", unit="epoch", leave=False):
            perm = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), recipe["batch_size"]):
                batch = x[perm[start:start + recipe["batch_size"]]]
                opt.zero_grad()
                nn.functional.mse_loss(net(batch), batch).backward()
                opt.step()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe["seed"])
        (encoder, _), _, _ = cached_modules("pretrained", "mnist_ae400_encoder", dict(recipe), build, train)
    head_encoder = nn.Linear(784, recipe["hidden"])
    head_encoder.load_state_dict(encoder.state_dict())
    return AE400(head_encoder)


def mnist_lenet_features(feature_dim: int = 32) -> nn.Sequential:
    """LeNet-style MNIST features: two 5x5 conv / ReLU / 2x2 max-pool blocks (16, 32 channels), a linear layer to
    ``feature_dim``. The GPDNN's feature extractor (``gpdnn_zoo``) and the body of ``mnist_lenet``."""
    return nn.Sequential(nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, feature_dim))


def mnist_lenet() -> nn.Module:
    """``mnist_lenet_features(32)`` under a linear softmax layer: the NN that the GPDNN is compared with (§8.3)."""
    return nn.Sequential(mnist_lenet_features(32), nn.Linear(32, 10))


#: Bumped whenever the training procedure changes, so stale checkpoints are not reused (3: deterministic training on
#: ``TRAINING_THREADS`` threads).
RECIPE_VERSION = 3


@dataclass(frozen=True)
class TrainConfig:
    """How a zoo model is trained; part of its cache key."""

    epochs: int
    lr: float
    batch_size: int = 128
    optimizer: str = "adam"
    weight_decay: float = 0.0
    train_subset: int | None = None


@dataclass(frozen=True)
class ZooEntry:
    name: str
    build: Callable[[], nn.Module]
    train: TrainConfig
    datasets: tuple[str, ...] = ("mnist5k", "mnist")
    description: str = ""
    #: Builds the architecture without trained parts, for the cache key (default ``build``).
    arch: Callable[[], nn.Module] | None = None


def architecture(entry: ZooEntry) -> str:
    """``repr`` of the entry's architecture (part of its checkpoint key); leaves the global RNG alone and trains
    nothing."""
    with torch.random.fork_rng(devices=[]):  # building the architecture draws initial weights
        return repr((entry.arch or entry.build)())


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    # The paper trains with SGD for 50 epochs on 55,000 images; Adam reaches 96.5% in 10 epochs on 3,500.
    ZooEntry("mnist_cnn", mnist_cnn, TrainConfig(epochs=10, lr=1e-3, batch_size=64),
             description="Carlini/MagNet MNIST CNN (§2.4)"),
    ZooEntry("mnist_softmax", mnist_softmax, TrainConfig(epochs=30, lr=1e-2),
             description="logistic regression"),
    ZooEntry("mnist_mlp", mnist_mlp, TrainConfig(epochs=40, lr=3e-3),
             description="FC100-100-10, sigmoid"),
    ZooEntry("mnist_relu_small", mnist_relu_small, TrainConfig(epochs=30, lr=3e-3),
             description="FC32-32-10, ReLU: the exact oracle's MILP model"),
    ZooEntry("mnist_tiny_cnn", mnist_tiny_cnn, TrainConfig(epochs=4, lr=3e-3),
             description="tiny CNN for tests (trains in seconds)"),
    # Szegedy et al. 2014, Table 1: FC10(λ) is softmax regression with weight decay λ (torch's convention: the
    # gradient gains λ·w, i.e. mean cross-entropy + λ/2·||θ||², biases included).
    ZooEntry("mnist_fc10_wd1e-4", mnist_softmax, TrainConfig(epochs=30, lr=1e-2, weight_decay=1e-4),
             description="FC10(1e-4): softmax, weight decay 1e-4 (Szegedy Table 1)"),
    ZooEntry("mnist_fc10_wd1e-2", mnist_softmax, TrainConfig(epochs=30, lr=1e-2, weight_decay=1e-2),
             description="FC10(1e-2): softmax, weight decay 1e-2 (Szegedy Table 1)"),
    ZooEntry("mnist_fc10_wd1", mnist_softmax, TrainConfig(epochs=30, lr=1e-2, weight_decay=1.0),
             description="FC10(1): softmax, weight decay 1 (Szegedy Table 1)"),
    ZooEntry("mnist_fc200", mnist_fc200, TrainConfig(epochs=40, lr=3e-3),
             description="FC200-200-10, sigmoid (Szegedy Table 1)"),
    ZooEntry("mnist_ae400", mnist_ae400, TrainConfig(epochs=20, lr=1e-3), datasets=("mnist5k", "mnist"),
             arch=lambda: AE400(nn.Linear(784, AE400_PRETRAIN["hidden"])),
             description="AE400-10: autoencoder-pretrained 400 sigmoid units + softmax (Szegedy Table 1)"),
    ZooEntry("mnist_lenet", mnist_lenet, TrainConfig(epochs=10, lr=1e-3, batch_size=64),
             description="LeNet-style CNN: the GPDNN's features + softmax (Bradshaw §8.3 NN)"),
)}


@dataclass
class ZooModel:
    """A trained zoo model: the bridge ``Model`` plus where it came from and how well it does."""

    name: str
    model: Model
    test_accuracy: float
    val_accuracy: float
    path: Path
    config_hash: str
    freshly_trained: bool = False
    info: dict = field(default_factory=dict)


def zoo_blob(entry: ZooEntry, dataset: str, seed: int) -> dict[str, Any]:
    """Everything that decides a zoo model's trained weights (its checkpoint key, library versions aside)."""
    return {"recipe": RECIPE_VERSION, "name": entry.name, "arch": architecture(entry), "train": asdict(entry.train),
            "dataset": dataset, "seed": seed}


def config_hash(entry: ZooEntry, dataset: str, seed: int) -> str:
    """Hash of everything that decides the trained weights (the shipped weights' key)."""
    return checkpoint_key({**zoo_blob(entry, dataset, seed), "training": TRAINING})


def zoo_checkpoints(name: str, dataset: str = "mnist5k", seed: int = 0) -> list[str]:
    """The manifest names ``load_model(name, dataset, seed=seed)`` reads (``AE400``'s pre-training included)."""
    entry = ZOO[name]
    names = [shipped_name("models", f"{name}-{dataset}", zoo_blob(entry, dataset, seed))]
    if entry.name == "mnist_ae400":
        names.append(shipped_name("pretrained", "mnist_ae400_encoder", dict(AE400_PRETRAIN)))
    return names


def load_model(name: str, dataset: str = "mnist5k", *, seed: int = 0, device: str | torch.device | None = None,
               retrain: bool = False, data: Dataset | None = None, data_root: str | Path | None = None) -> ZooModel:
    """Return zoo model ``name``: its shipped weights when the key matches, else trained and cached on first use.

    :param name: A key of ``ZOO`` (``advbridge models`` lists them).
    :param dataset: Data set it is trained on.
    :param seed: Training seed (part of the cache key).
    :param device: Where the model runs; CUDA when present by default.
    :param retrain: Ignore the shipped weights and the cache and train again (cached locally).
    :param data: An already loaded ``Dataset`` (saves reloading).
    :param data_root: Folder of user-supplied files for ``mnist``/``cifar10``.
    """
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; expected one of {sorted(ZOO)}")
    entry = ZOO[name]
    if dataset not in entry.datasets:
        raise ValueError(f"zoo model '{name}' is defined for datasets {list(entry.datasets)}, got {dataset!r}")
    device = torch.device(device) if device is not None else default_device()
    blob = zoo_blob(entry, dataset, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # initial weights depend on the seed only, not on earlier RNG use
        module = entry.build()

    def train() -> dict[str, Any]:
        loaded = data if data is not None else load_dataset(dataset, root=data_root)
        metrics = train_module(module, entry.train, loaded, seed, device, desc=name)
        return {"state_dict": {k: v.cpu() for k, v in module.state_dict().items()}, "metrics": metrics}

    ckpt, path, source = load_checkpoint("models", f"{name}-{dataset}", blob, train, retrain=retrain, model=name)
    if source != "trained":
        module.load_state_dict(ckpt["state_dict"])
    metrics = ckpt["metrics"]
    if source == "trained":
        logger.info("trained %s: test accuracy %.4f", name, metrics["test_accuracy"])
    module.to(device).eval()
    data_shape = (1, 28, 28) if dataset in ("mnist5k", "mnist") else (3, 32, 32)
    model = Model(module, data_shape, bounds=(0.0, 1.0), nb_classes=10, device=device)
    return ZooModel(name, model, float(metrics["test_accuracy"]), float(metrics["val_accuracy"]), path,
                    config_hash(entry, dataset, seed), source == "trained",
                    {"description": entry.description, "weights": source})


def train_module(module: nn.Module, cfg: TrainConfig, data: Dataset, seed: int, device: torch.device,
                 desc: str) -> dict[str, float]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    module.to(device).train()
    x, y = data.x_train, data.y_train
    if cfg.train_subset is not None:
        x, y = x[:cfg.train_subset], y[:cfg.train_subset]
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True,
                              weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {cfg.optimizer!r}")
    loss_fn = nn.CrossEntropyLoss()
    for _ in tqdm(range(cfg.epochs), desc=f"train {desc}", unit="epoch", leave=False):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            opt.zero_grad()
            loss = loss_fn(module(x[idx].to(device)), y[idx].to(device))
            loss.backward()
            opt.step()
    module.eval()
    return {"val_accuracy": accuracy(module, data.x_val, data.y_val, device),
            "test_accuracy": accuracy(module, data.x_test, data.y_test, device),
            "train_accuracy": accuracy(module, x, y, device)}


def _load(name: str, dataset: str = "mnist5k", *, seed: int = 0, device: str | None = None, data=None,
          data_root: str | None = None) -> tuple[Model, dict[str, Any]]:
    zoo = load_model(name, dataset, seed=seed, device=device, data=data, data_root=data_root)
    return zoo.model, {"model": name, "test_accuracy": zoo.test_accuracy, "cache": str(zoo.path),
                       "weights": zoo.info["weights"]}


FAMILIES.add(ModelFamily(
    "zoo", owns=lambda name: name in ZOO, load=_load, checkpoints=zoo_checkpoints,
    listing=lambda: [(e.name, "zoo", e.description) for e in ZOO.values()],
    hint=lambda: f"zoo models: {sorted(ZOO)}", hint_rank=10), rank=10)
