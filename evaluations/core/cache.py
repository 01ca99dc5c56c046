"""The model cache: shipped weights, the local cache, deterministic training.

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
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
WEIGHTS_DIR = Path(__file__).parents[1] / "weights"
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
