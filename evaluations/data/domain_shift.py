"""The digit test sets of the domain-shift estimator (Bradshaw et al. 2017, §8.3), read from user-supplied files.

The test sets do not ship with advbridge and are never downloaded. They are read from the folder the user passes as
``--data-root`` (``data_root``), under the file names torchvision uses:

- ``semeion``: ``semeion.data`` (UCI Semeion handwritten digits, 16×16 binary), read by
  ``torchvision.datasets.SEMEION`` (md5-checked); resized to 20×20 and centred in 28×28, as MNIST's digits are;
- ``svhn``: ``test_32x32.mat`` (SVHN test split), read by ``torchvision.datasets.SVHN`` (md5-checked); converted to
  grey levels (ITU-R 601-2 luma) and resized to 28×28, not inverted;
- ``anomnist``: ``anomnist.npz`` with arrays ``x`` (``(N, 28, 28)`` or ``(N, 1, 28, 28)``, uint8 in [0, 255] or
  floats in [0, 1]) and ``y`` (``(N,)`` digits); read with ``allow_pickle=False``. Bradshaw's ANOMNIST has no public
  loader, so the user converts it to this form.

When a listed file is missing, :func:`load_test_set` raises :class:`DataNotSupplied`; the runner skips such a cell
with its message and runs it on a later ``advbridge run`` that supplies the data (nothing is stored for it
meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


class DataNotSupplied(FileNotFoundError):
    """A cell needs data files the user has not supplied (under ``--data-root``); it is skipped, not failed."""


def to_mnist_frame(images: torch.Tensor) -> torch.Tensor:
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
    return to_mnist_frame(x), torch.as_tensor(ds.labels, dtype=torch.int64)


def _load_svhn(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import SVHN

    ds = _torchvision_set(SVHN, root, "test_32x32.mat", split="test")
    x = torch.from_numpy(ds.data.astype(np.float32) / 255.0)
    return to_mnist_frame(x), torch.as_tensor(ds.labels, dtype=torch.int64)


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
    return to_mnist_frame(torch.from_numpy(x)), torch.from_numpy(y.astype(np.int64))


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


def load_test_set(name: str, data_root: str | Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One domain-shift test set as MNIST-framed ``(N, 1, 28, 28)`` floats in [0, 1] and int64 labels; raises
    :class:`DataNotSupplied` when its file is not under ``data_root`` (or no ``data_root`` is given)."""
    if name not in TEST_SETS:
        raise ValueError(f"unknown test set {name!r}; expected one of {sorted(TEST_SETS)}")
    if data_root is None or missing_files([name], data_root):
        raise DataNotSupplied(not_supplied_message([name], data_root))
    return TEST_SETS[name][1](Path(data_root))
