"""Domain shift (Bradshaw et al. 2017, §8.3): MNIST-trained models on digit sets they were not trained on.

Accuracy and mean log-likelihood of the true class per model and test set; a log-likelihood near ``log 0.1 = −2.30``
means "don't know", which is what a well-calibrated model should say on a foreign domain.

The test sets do not ship with advbridge and are never downloaded. They are read from the folder the user passes as
``--data-root`` (``data_root``), under the file names torchvision uses:

- ``semeion``: ``semeion.data`` (UCI Semeion handwritten digits, 16×16 binary), read by
  ``torchvision.datasets.SEMEION`` (md5-checked); resized to 20×20 and centred in 28×28, as MNIST's digits are;
- ``svhn``: ``test_32x32.mat`` (SVHN test split), read by ``torchvision.datasets.SVHN`` (md5-checked); converted to
  grey levels (ITU-R 601-2 luma) and resized to 28×28, not inverted;
- ``anomnist``: ``anomnist.npz`` with arrays ``x`` (``(N, 28, 28)`` or ``(N, 1, 28, 28)``, uint8 in [0, 255] or
  floats in [0, 1]) and ``y`` (``(N,)`` digits); read with ``allow_pickle=False``. Bradshaw's ANOMNIST has no public
  loader, so the user converts it to this form.

When a listed file is missing the estimator raises :class:`DataNotSupplied`; the runner skips the cell with that
message and runs it on a later ``advbridge run`` that supplies the data (nothing is stored for it meanwhile).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advbridge.bridge import Model
from advbridge.bridge.validation import check_positive_int

logger = logging.getLogger(__name__)


class DataNotSupplied(FileNotFoundError):
    """A cell needs data files the user has not supplied (under ``--data-root``); it is skipped, not failed."""


def _to_mnist_frame(images: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` floats in [0, 1] -> ``(N, 1, 28, 28)``: grey levels; a 16×16 digit goes into MNIST's 20×20 box
    centred in 28×28, anything else is resized to 28×28."""
    from torchvision.transforms import functional as tvf

    if images.shape[1] == 3:
        images = tvf.rgb_to_grayscale(images)
    if tuple(images.shape[-2:]) == (16, 16):
        return tvf.pad(tvf.resize(images, [20, 20], antialias=True), [4, 4]).clamp(0, 1)
    if tuple(images.shape[-2:]) != (28, 28):
        images = tvf.resize(images, [28, 28], antialias=True)
    return images.clamp(0, 1)


def _torchvision_set(cls, root: Path, filename: str, **kwargs):
    """``cls(root, download=False, **kwargs)`` with its md5 failure turned into an error naming the file."""
    try:
        return cls(str(root), download=False, **kwargs)
    except RuntimeError as err:
        raise ValueError(f"{root / filename} is not the original {cls.__name__} file (torchvision's md5 check "
                         f"failed: {err}); supply the unmodified file") from err


def _load_semeion(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import SEMEION

    ds = _torchvision_set(SEMEION, root, "semeion.data")
    x = torch.from_numpy(ds.data.astype(np.float32) / 255.0).unsqueeze(1)
    return _to_mnist_frame(x), torch.as_tensor(ds.labels, dtype=torch.int64)


def _load_svhn(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import SVHN

    ds = _torchvision_set(SVHN, root, "test_32x32.mat", split="test")
    x = torch.from_numpy(ds.data.astype(np.float32) / 255.0)
    return _to_mnist_frame(x), torch.as_tensor(ds.labels, dtype=torch.int64)


def _load_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path, allow_pickle=False) as npz:
        if "x" not in npz or "y" not in npz:
            raise ValueError(f"{path} must hold arrays 'x' (N, 28, 28) and 'y' (N,), found {sorted(npz.files)}")
        x, y = npz["x"], npz["y"]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1 or len(x) != len(y) or y.ndim != 1:
        raise ValueError(f"{path}: expected x of shape (N, 28, 28) or (N, 1, 28, 28) and y of shape (N,), got "
                         f"x {x.shape} and y {y.shape}")
    x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"{path}: x must be uint8 in [0, 255] or floats in [0, 1], got range [{x.min()}, {x.max()}]")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 9:
        raise ValueError(f"{path}: y must hold integer digits 0-9, got dtype {y.dtype}, range [{y.min()}, {y.max()}]")
    return _to_mnist_frame(torch.from_numpy(x)), torch.from_numpy(y.astype(np.int64))


#: Test set -> (file under data_root, loader, description).
TEST_SETS: dict[str, tuple[str, Callable[[Path], tuple[torch.Tensor, torch.Tensor]], str]] = {
    "anomnist": ("anomnist.npz", lambda root: _load_npz(root / "anomnist.npz"), "ANOMNIST (user-converted .npz)"),
    "semeion": ("semeion.data", _load_semeion, "Semeion handwritten digits (UCI)"),
    "svhn": ("test_32x32.mat", _load_svhn, "SVHN test split, grey levels"),
}


def missing_files(test_sets: list[str], data_root: str | Path | None) -> list[str]:
    """The files of ``test_sets`` not present under ``data_root`` (all of them when it is ``None``)."""
    return [TEST_SETS[name][0] for name in test_sets
            if data_root is None or not (Path(data_root) / TEST_SETS[name][0]).is_file()]


def not_supplied_message(test_sets: list[str], data_root: str | Path | None) -> str:
    """Why a domain-shift cell cannot run, naming the files and the flag that supplies them."""
    missing = missing_files(test_sets, data_root)
    where = "no --data-root was given" if data_root is None else f"not found under {data_root}"
    return (f"domain shift skipped: it needs {', '.join(missing)} ({where}); these data sets do not ship with "
            "advbridge. Put them in a folder and rerun with --data-root FOLDER (file formats: "
            "advbridge.evaluations.estimators.domain_shift)")


def load_test_set(name: str, data_root: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One domain-shift test set as MNIST-framed ``(N, 1, 28, 28)`` floats in [0, 1] and int64 labels."""
    if name not in TEST_SETS:
        raise ValueError(f"unknown test set {name!r}; expected one of {sorted(TEST_SETS)}")
    missing = missing_files([name], data_root)
    if missing:
        raise DataNotSupplied(not_supplied_message([name], data_root))
    return TEST_SETS[name][1](Path(data_root))


def evaluate_domain_shift(models: Mapping[str, Model], test_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                          batch_size: int = 256) -> dict[str, dict[str, dict[str, float]]]:
    """``{test set: {model: {"accuracy", "log_likelihood", "n"}}}``; the log-likelihood is the mean
    ``log softmax(z)_y`` (for a GPDNN, whose outputs are ``log p(y | x)``, its log predictive probability)."""
    batch_size = check_positive_int(batch_size, "batch_size")
    table: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, (x, y) in test_sets.items():
        table[set_name] = {}
        for model_name, model in models.items():
            logits = model.logits(x, batch_size=batch_size).float().cpu()
            logp = torch.log_softmax(logits, 1).gather(1, y.unsqueeze(1)).squeeze(1)
            table[set_name][model_name] = {"accuracy": float((logits.argmax(1) == y).float().mean()),
                                           "log_likelihood": float(logp.mean()), "n": len(y)}
    return table


# --------------------------------------------------------------------------- the suite estimator
#: ``[[estimators]] name = "domain_shift"`` parameters and their defaults.
DOMAIN_SHIFT_PARAMS: dict[str, Any] = {"models": None, "test_sets": ["anomnist", "semeion", "svhn"], "n": 1000,
                                       "dataset": "mnist5k", "seed": 0, "batch_size": 256}
DOMAIN_SHIFT_SUMMARY = ("Accuracy and log-likelihood of MNIST-trained models on foreign digit sets supplied under "
                        "--data-root (Bradshaw §8.3 domain shift)")


def validate_domain_shift(params: Mapping[str, Any]) -> str | None:
    """Why ``params`` is not a valid ``domain_shift`` estimator configuration, or ``None``."""
    from advbridge.evaluations.data.datasets import DATASETS
    from advbridge.evaluations.zoo.resolve import model_error

    unknown = sorted(set(params) - set(DOMAIN_SHIFT_PARAMS))
    if unknown:
        return f"unknown parameter(s) {unknown}; expected some of {sorted(DOMAIN_SHIFT_PARAMS)}"
    p = {**DOMAIN_SHIFT_PARAMS, **params}
    if not isinstance(p["models"], list) or not p["models"] or len(set(map(str, p["models"]))) != len(p["models"]):
        return f"models must list at least one model name, without repeats, got {p['models']!r}"
    for name in p["models"]:
        error = model_error(name)
        if error:
            return error
    sets = p["test_sets"]
    if not isinstance(sets, list) or not sets or any(s not in TEST_SETS for s in sets):
        return f"test_sets must list some of {sorted(TEST_SETS)}, got {sets!r}"
    for key in ("n", "batch_size"):
        if isinstance(p[key], bool) or not isinstance(p[key], int) or p[key] < 1:
            return f"{key} must be a positive integer, got {p[key]!r}"
    if p["dataset"] not in DATASETS or p["dataset"] == "cifar10":
        return f"dataset must be an MNIST data set ('mnist5k' or 'mnist'), got {p['dataset']!r}"
    if isinstance(p["seed"], bool) or not isinstance(p["seed"], int):
        return f"seed must be an integer, got {p['seed']!r}"
    return None


def compute_domain_shift(model: Model, x: torch.Tensor, y: torch.Tensor, params: Mapping[str, Any],
                         progress: bool = True, data_root: str | None = None
                         ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ``domain_shift`` estimator: ``params["models"]`` on the training data set's test split (row ``mnist``)
    and on each of ``params["test_sets"]`` (at most ``n`` images each, a seeded draw) read from ``data_root``.

    The cell's own ``model``, ``x`` and ``y`` only anchor the cell. Raises :class:`DataNotSupplied` (before any model
    is loaded) when a test set's file is missing.
    """
    from advbridge.evaluations.data.datasets import load_dataset
    from advbridge.evaluations.zoo.resolve import resolve_model

    error = validate_domain_shift(params)
    if error:
        raise ValueError(f"domain_shift estimator: {error}")
    p = {**DOMAIN_SHIFT_PARAMS, **params}
    if missing_files(p["test_sets"], data_root):
        raise DataNotSupplied(not_supplied_message(p["test_sets"], data_root))
    data = load_dataset(p["dataset"], root=data_root)
    sets = {"mnist": (data.x_test, data.y_test)}
    generator = torch.Generator().manual_seed(int(p["seed"]))
    for name in p["test_sets"]:
        xs, ys = load_test_set(name, data_root)
        keep = torch.randperm(len(xs), generator=generator)[:p["n"]]
        sets[name] = (xs[keep], ys[keep])
        logger.info("domain shift: %s, %d of %d images", name, len(keep), len(xs))
    models = {name: resolve_model(name, p["dataset"], p["seed"], str(model.device), data, data_root)[0]
              for name in p["models"]}
    table = evaluate_domain_shift(models, sets, p["batch_size"])
    metrics = {f"{key}[{s}][{m}]": v[key] for s, row in table.items() for m, v in row.items()
               for key in ("accuracy", "log_likelihood")}
    return metrics, {"table": table, "params": dict(p)}, {}
