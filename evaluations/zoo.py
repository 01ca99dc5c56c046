"""Model zoo: architectures trained locally on first use and cached by config hash (no downloads).

Checkpoints hold only tensors and numbers and are read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from advbridge.bridge import Model
from advbridge.bridge.model import default_device

from .data import Dataset, load_dataset

logger = logging.getLogger(__name__)


def cache_root() -> Path:
    """``$ADVBRIDGE_CACHE``, else ``$XDG_CACHE_HOME/advbridge``, else ``~/.cache/advbridge``."""
    if os.environ.get("ADVBRIDGE_CACHE"):
        return Path(os.environ["ADVBRIDGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "advbridge"


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
AE400_PRETRAIN = {"hidden": 400, "epochs": 20, "lr": 1e-3, "batch_size": 64, "seed": 0, "dataset": "mnist5k",
                  "version": 1}


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


#: Bumped whenever the training procedure changes, so stale checkpoints are not reused.
RECIPE_VERSION = 2


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


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    # The paper trains with SGD for 50 epochs on 55,000 images; Adam reaches 96.5% in 10 epochs on 3,500.
    ZooEntry("mnist_cnn", mnist_cnn, TrainConfig(epochs=10, lr=1e-3, batch_size=64),
             description="Carlini/MagNet MNIST CNN (§2.4)"),
    ZooEntry("mnist_softmax", mnist_softmax, TrainConfig(epochs=30, lr=1e-2),
             description="logistic regression"),
    ZooEntry("mnist_mlp", mnist_mlp, TrainConfig(epochs=40, lr=3e-3),
             description="FC100-100-10, sigmoid"),
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


def config_hash(entry: ZooEntry, dataset: str, seed: int) -> str:
    """Hash of everything that decides the trained weights."""
    blob = json.dumps({"recipe": RECIPE_VERSION, "name": entry.name, "arch": repr(entry.build()),
                       "train": asdict(entry.train),
                       "dataset": dataset, "seed": seed, "torch": torch.__version__.split("+")[0]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_model(name: str, dataset: str = "mnist5k", *, seed: int = 0, device: str | torch.device | None = None,
               retrain: bool = False, data: Dataset | None = None, data_root: str | Path | None = None) -> ZooModel:
    """Return zoo model ``name``, training and caching it on first use.

    :param name: A key of ``ZOO`` (``advbridge models`` lists them).
    :param dataset: Data set it is trained on.
    :param seed: Training seed (part of the cache key).
    :param device: Where the model runs; CUDA when present by default.
    :param retrain: Ignore the cache and train again.
    :param data: An already loaded ``Dataset`` (saves reloading).
    :param data_root: Folder of user-supplied files for ``mnist``/``cifar10``.
    """
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; expected one of {sorted(ZOO)}")
    entry = ZOO[name]
    if dataset not in entry.datasets:
        raise ValueError(f"zoo model '{name}' is defined for datasets {list(entry.datasets)}, got {dataset!r}")
    device = torch.device(device) if device is not None else default_device()
    key = config_hash(entry, dataset, seed)
    path = cache_root() / "models" / f"{name}-{dataset}-{key}.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # initial weights depend on the seed only, not on earlier RNG use
        module = entry.build()
    fresh = False
    if path.exists() and not retrain:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(ckpt["state_dict"])
        metrics = ckpt["metrics"]
    else:
        data = data if data is not None else load_dataset(dataset, root=data_root)
        metrics = _train(module, entry.train, data, seed, device, desc=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        torch.save({"state_dict": {k: v.cpu() for k, v in module.state_dict().items()}, "metrics": metrics}, tmp)
        os.replace(tmp, path)
        fresh = True
        logger.info("trained %s: test accuracy %.4f, cached at %s", name, metrics["test_accuracy"], path)
    module.eval()
    data_shape = (1, 28, 28) if dataset in ("mnist5k", "mnist") else (3, 32, 32)
    model = Model(module, data_shape, bounds=(0.0, 1.0), nb_classes=10, device=device)
    return ZooModel(name, model, float(metrics["test_accuracy"]), float(metrics["val_accuracy"]), path, key,
                    fresh, {"description": entry.description})


def cached_modules(folder: str, name: str, blob: dict[str, Any], build: Callable[[], list[nn.Module]],
                   train: Callable[[list[nn.Module]], None]) -> tuple[list[nn.Module], Path, bool]:
    """Modules from ``build()`` with weights from ``cache_root()/folder`` or from ``train(modules)`` (then cached).

    :param blob: Everything that decides the weights (recipe, data set, seed, a recipe version); hashed into the
        file name together with the torch version.
    :returns: The modules in eval mode, the checkpoint path and whether they were trained just now.
    """
    key = hashlib.sha256(json.dumps({**blob, "torch": torch.__version__.split("+")[0]}, sort_keys=True,
                                    default=str).encode())
    path = cache_root() / folder / f"{name}-{key.hexdigest()[:16]}.pt"
    modules = build()
    fresh = not path.exists()
    if not fresh:
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
    return [m.eval() for m in modules], path, fresh


def resolve_model(spec: str, dataset: str, seed: int, device: str | None, data=None,
                  data_root: str | None = None) -> tuple[Model, dict[str, Any]]:
    """A zoo name, a training variant (``<zoo name>+<variant>``, ``training.TRAINING_VARIANTS``), a generative model
    (``generators.GENERATIVE_MODELS``), a GPDNN (``gpdnn_zoo.GPDNN_MODELS``), or ``package.module:function``."""
    if ":" in spec:
        module_name, _, func_name = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"model {spec!r}: cannot import {func_name} from {module_name} ({err})") from err
        model = factory()
        if not isinstance(model, Model):
            raise TypeError(f"model {spec!r} must return an advbridge.bridge.Model, got {type(model).__name__}")
        return model, {"model": spec}
    if "+" in spec:  # a training variant, <zoo name>+<variant> (training.TRAINING_VARIANTS)
        from .training import load_variant

        return load_variant(spec, dataset, seed=seed, device=device, data=data, data_root=data_root)
    from .generators import GENERATIVE_MODELS, load_generative_classifier

    if spec in GENERATIVE_MODELS:
        return load_generative_classifier(spec, dataset, seed=seed, device=device, data=data, data_root=data_root)
    from .gpdnn_zoo import GPDNN_MODELS, load_gpdnn

    if spec in GPDNN_MODELS:
        return load_gpdnn(spec, dataset, seed=seed, device=device, data=data, data_root=data_root)
    zoo = load_model(spec, dataset, seed=seed, device=device, data=data, data_root=data_root)
    return zoo.model, {"model": spec, "test_accuracy": zoo.test_accuracy, "cache": str(zoo.path)}


def _train(module: nn.Module, cfg: TrainConfig, data: Dataset, seed: int, device: torch.device,
           desc: str) -> dict[str, float]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    module.to(device).train()
    x, y = data.x_train, data.y_train
    if cfg.train_subset is not None:
        x, y = x[:cfg.train_subset], y[:cfg.train_subset]
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


def accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device | None = None,
             batch_size: int = 500) -> float:
    """Top-1 accuracy of ``module`` on ``(x, y)``."""
    device = device or next(module.parameters()).device
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            pred = module(x[start:start + batch_size].to(device)).argmax(1).cpu()
            correct += int((pred == y[start:start + batch_size]).sum())
    return correct / len(x)
