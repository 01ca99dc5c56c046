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

import hashlib
import importlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


# --------------------------------------------------------------------------- deterministic training, shipped weights
#: Torch threads every zoo training runs on, whatever ``--threads`` the run uses: the weights do not depend on it.
TRAINING_THREADS = 1
#: How checkpoints are trained; part of every checkpoint key, so caches trained otherwise are never reused.
TRAINING = {"threads": TRAINING_THREADS, "deterministic_algorithms": True}
#: The shipped checkpoints (package data) and their manifest.
WEIGHTS_DIR = Path(__file__).with_name("weights")
MANIFEST = "weights.json"


class WeightsError(RuntimeError):
    """A shipped checkpoint is missing or does not match the sha256 its manifest records."""


@contextmanager
def deterministic_training(threads: int = TRAINING_THREADS) -> Iterator[None]:
    """Run the body on ``threads`` torch threads with deterministic algorithms, on a forked global RNG.

    The caller's thread count, deterministic-algorithms setting (and its ``warn_only``), cuDNN benchmark flag and
    global RNG state are restored afterwards, so training leaves no trace on the run that asked for the model. Ops
    without a deterministic implementation warn instead of failing (``warn_only=True``).

    :param threads: Intra-op torch threads inside the body.
    """
    saved_threads = torch.get_num_threads()
    saved_mode = torch.are_deterministic_algorithms_enabled()
    saved_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    saved_benchmark = torch.backends.cudnn.benchmark
    cuda = torch.cuda.is_available()
    if cuda:  # cuBLAS needs a fixed workspace for deterministic matmuls (read when cuBLAS starts)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
            yield
    finally:
        torch.use_deterministic_algorithms(saved_mode, warn_only=saved_warn_only)
        torch.backends.cudnn.benchmark = saved_benchmark
        torch.set_num_threads(saved_threads)


def training_provenance() -> dict[str, Any]:
    """What a checkpoint records about how it was trained: torch version, threads, CPU capability."""
    return {"torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def checkpoint_key(blob: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of ``blob`` (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shipped_name(folder: str, name: str, blob: dict[str, Any]) -> str:
    """The manifest name (``folder/name-key.pt``) of the checkpoint ``blob`` describes; the key leaves out library
    versions, so shipped weights serve every torch version."""
    return f"{folder}/{name}-{checkpoint_key({**blob, 'training': TRAINING})}.pt"


def local_key(blob: dict[str, Any], versions: dict[str, Any] | None = None) -> str:
    """The local cache's key of the checkpoint ``blob`` describes: it adds the torch version (and ``versions``), as
    weights trained here depend on them."""
    return checkpoint_key({**blob, "training": TRAINING, "torch": torch.__version__.split("+")[0], **(versions or {})})


def local_path(folder: str, name: str, blob: dict[str, Any], versions: dict[str, Any] | None = None) -> Path:
    """Where the checkpoint ``blob`` describes is cached once trained here (``cache_root()/folder/name-key.pt``)."""
    return cache_root() / folder / f"{name}-{local_key(blob, versions)}.pt"


_manifest_cache: dict[str, Any] = {}


def shipped_manifest(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """``weights.json``'s checkpoints: manifest name -> sha256, bytes, model, metrics, recipe, provenance."""
    path = (root or WEIGHTS_DIR) / MANIFEST
    if not path.exists():
        return {}
    stamp = (str(path), path.stat().st_mtime_ns)
    if _manifest_cache.get("stamp") != stamp:
        _manifest_cache.update(stamp=stamp, checkpoints=json.loads(path.read_text())["checkpoints"])
    return _manifest_cache["checkpoints"]


def is_shipped(names: list[str]) -> bool:
    """Whether every manifest name in ``names`` is shipped."""
    manifest = shipped_manifest()
    return bool(names) and all(n in manifest for n in names)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_shipped(name: str) -> dict[str, Any]:
    """The shipped checkpoint ``name`` (a manifest name), verified by its sha256, read with ``weights_only=True``."""
    entry = shipped_manifest().get(name)
    if entry is None:
        raise WeightsError(f"no shipped checkpoint {name!r} in {WEIGHTS_DIR / MANIFEST}")
    path = WEIGHTS_DIR / name
    if not path.exists():
        raise WeightsError(f"shipped checkpoint {path} is listed in {MANIFEST} but missing; reinstall advbridge or "
                           "run `advbridge weights`")
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        raise WeightsError(f"shipped checkpoint {path} has sha256 {digest}, but {MANIFEST} records "
                           f"{entry['sha256']}; the file is corrupt or was replaced (reinstall advbridge, or run "
                           "`advbridge weights` to re-train the shipped set)")
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass
class _Refresh:
    root: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


_refresh: list[_Refresh] = []
_retrain_all: list[bool] = [False]
_retrained: set[Path] = set()


def set_retrain(retrain: bool) -> None:
    """Make every later ``load_checkpoint`` in this process ignore shipped weights and the cache, and train (once per
    checkpoint; what it trains is cached locally): the CLI's ``--retrain``."""
    _retrain_all[0] = retrain
    _retrained.clear()


@contextmanager
def refreshing_weights(root: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """Inside the body every checkpoint is trained afresh (once), saved under ``root`` with its manifest name and
    recorded in the yielded dict (manifest name -> model, metrics, recipe, provenance); ``advbridge weights``. A
    checkpoint already under ``root`` (an interrupted refresh) is reused, not trained again."""
    state = _Refresh(Path(root))
    _refresh.append(state)
    try:
        yield state.records
    finally:
        _refresh.remove(state)


def _save(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    """Tensors out of a metrics/history tree (for the JSON manifest)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def load_checkpoint(folder: str, name: str, blob: dict[str, Any], train: Callable[[], dict[str, Any]], *,
                    retrain: bool = False, versions: dict[str, Any] | None = None,
                    model: str | None = None) -> tuple[dict[str, Any], Path, str]:
    """The checkpoint ``blob`` describes: shipped, cached or trained now (see the module docstring).

    :param folder: Cache (and shipped) sub-folder: ``models``, ``generators``, ``autoencoders``, ...
    :param name: File-name stem before the key.
    :param blob: Everything that decides the weights (recipe, data set, seed, recipe version); not library versions.
    :param train: Trains and returns the checkpoint's content (tensors, numbers, strings); run under
        ``deterministic_training``. ``provenance`` (``training_provenance()``) is added to it.
    :param retrain: Ignore shipped weights and the cache; train and cache.
    :param versions: Library versions the local cache key adds (the torch version always joins it).
    :param model: The model name the manifest records (default ``name``).
    :returns: ``(checkpoint, path, source)``; ``source`` is ``shipped``, ``cache`` or ``trained``.
    """
    rel = shipped_name(folder, name, blob)

    def fresh() -> dict[str, Any]:
        with deterministic_training():
            payload = train()
            payload["provenance"] = training_provenance()
        return payload

    if _refresh:
        state = _refresh[-1]
        path = state.root / rel
        source = "cache"
        if path.exists():  # trained earlier in this refresh, or in an interrupted one that is resumed
            payload = torch.load(path, map_location="cpu", weights_only=True)
        else:
            payload, source = fresh(), "trained"
            _save(payload, path)
            logger.info("trained %s for the shipped set: %s", name, path)
        state.records[rel] = {"model": model or name, "metrics": _plain(payload.get("metrics", {})),
                              "recipe": json.loads(json.dumps(blob, default=str)),
                              "provenance": payload["provenance"]}
        return payload, path, source
    path = local_path(folder, name, blob, versions)
    use_shipped = not retrain and not _retrain_all[0]
    retrain = retrain or (_retrain_all[0] and path not in _retrained)
    if use_shipped and rel in shipped_manifest():
        return load_shipped(rel), WEIGHTS_DIR / rel, "shipped"
    if path.exists() and not retrain:
        return torch.load(path, map_location="cpu", weights_only=True), path, "cache"
    payload = fresh()
    _save(payload, path)
    _retrained.add(path)
    logger.info("trained %s, cached at %s", name, path)
    return payload, path, "trained"


def write_weights(records: dict[str, dict[str, Any]], staged: Path, target: Path | None = None,
                  models: dict[str, Any] | None = None) -> dict[str, Any]:
    """Replace the shipped set under ``target`` (default ``WEIGHTS_DIR``) by the checkpoints ``records`` lists from
    ``staged`` and write the manifest with each file's sha256 and size (and ``models``: name -> kind, test accuracy,
    checkpoint names); stale ``.pt`` files are removed."""
    target = target or WEIGHTS_DIR
    checkpoints = {}
    for rel in sorted(records):
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(staged / rel, dest)
        checkpoints[rel] = {"sha256": file_sha256(dest), "bytes": dest.stat().st_size, **records[rel]}
    for old in target.glob("*/*.pt"):
        if old.relative_to(target).as_posix() not in checkpoints:
            old.unlink()
    manifest = {"format": 1, "training": TRAINING, "checkpoints": checkpoints, "models": models or {}}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    _manifest_cache.clear()
    return manifest


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
        metrics = _train(module, entry.train, loaded, seed, device, desc=name)
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


def cached_modules(folder: str, name: str, blob: dict[str, Any], build: Callable[[], list[nn.Module]],
                   train: Callable[[list[nn.Module]], None], *, retrain: bool = False,
                   versions: dict[str, Any] | None = None) -> tuple[list[nn.Module], Path, bool]:
    """Modules from ``build()`` with weights from ``load_checkpoint``: shipped, cached under ``cache_root()/folder``
    or from ``train(modules)`` (run deterministically on ``TRAINING_THREADS`` threads, then cached).

    :param blob: Everything that decides the weights (recipe, data set, seed, a recipe version); hashed into the
        file name (the local cache adds the torch version and ``versions``).
    :param retrain: Ignore the shipped weights and the cache.
    :param versions: Library versions that join the local cache key (not the shipped one).
    :returns: The modules in eval mode, the checkpoint path and whether they were trained just now.
    """
    modules = build()

    def fit() -> dict[str, Any]:
        train(modules)
        return {"state_dicts": [{k: v.cpu() for k, v in m.state_dict().items()} for m in modules]}

    states, path, source = load_checkpoint(folder, name, blob, fit, retrain=retrain, versions=versions)
    if source != "trained":
        for module, state in zip(modules, states["state_dicts"], strict=True):
            module.load_state_dict(state)
    return [m.eval() for m in modules], path, source == "trained"


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
    return zoo.model, {"model": spec, "test_accuracy": zoo.test_accuracy, "cache": str(zoo.path),
                       "weights": zoo.info["weights"]}


def model_names() -> list[tuple[str, str, str]]:
    """Every model name a suite can use, with its kind and a description: zoo models, every trained variant
    ``<zoo model>+<variant>``, the generative classifiers and the GPDNNs (``package.module:function`` aside)."""
    from .generators import GENERATIVE_MODELS
    from .gpdnn_zoo import GPDNN_MODELS
    from .training import TRAINING_VARIANTS

    rows = [(e.name, "zoo", e.description) for e in ZOO.values()]
    rows += [(f"{e.name}+{v.name}", "variant", f"{e.description}; {v.description}")
             for e in ZOO.values() for v in TRAINING_VARIANTS.values()]
    rows += [(name, "generative", "VAE + latent classifier, reconstruction feedback (Kos et al. §4.3)"
              + (" (tiny: for tests)" if name.endswith("_tiny") else "")) for name in GENERATIVE_MODELS]
    rows += [(name, "gpdnn", "GPDNN: LeNet-style features + SVGP, robust-max (Bradshaw §8.1)") for name in GPDNN_MODELS]
    return rows


def model_checkpoints(name: str, dataset: str = "mnist5k", seed: int = 0) -> list[str]:
    """The manifest names of the shipped checkpoints ``resolve_model(name, dataset, seed, ...)`` reads; a model is
    shipped when all of them are (``is_shipped``)."""
    from .generators import GENERATIVE_MODELS, generative_checkpoints
    from .gpdnn_zoo import GPDNN_MODELS, gpdnn_checkpoints
    from .training import variant_checkpoints

    if "+" in name:
        return variant_checkpoints(name, dataset, seed)
    if name in GENERATIVE_MODELS:
        return generative_checkpoints(name, dataset, seed)
    if name in GPDNN_MODELS:
        return gpdnn_checkpoints(name, dataset, seed)
    if name in ZOO:
        return zoo_checkpoints(name, dataset, seed)
    raise ValueError(f"unknown model {name!r}")


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
