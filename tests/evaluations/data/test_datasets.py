"""Embedded MNIST-5k split and user-supplied data sets."""

import pytest
import torch

from advbridge.evaluations.data.datasets import load_dataset


def test_mnist5k_split(mnist5k):
    assert mnist5k.x_train.shape == (3500, 1, 28, 28)
    assert mnist5k.x_val.shape == (500, 1, 28, 28) and mnist5k.x_test.shape == (1000, 1, 28, 28)
    assert mnist5k.x_train.dtype == torch.float32
    assert float(mnist5k.x_train.min()) == 0.0 and float(mnist5k.x_train.max()) == 1.0
    for split, per_class in (("train", 350), ("val", 50), ("test", 100)):
        _, y = mnist5k.split(split)
        assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), per_class))
    assert torch.equal(torch.bincount(mnist5k.y_test[:100], minlength=10), torch.full((10,), 10))


def test_mnist5k_is_deterministic_and_disjoint(mnist5k):
    again = load_dataset("mnist5k")
    assert torch.equal(again.x_test, mnist5k.x_test) and torch.equal(again.y_train, mnist5k.y_train)
    flat = {split: {tuple(v.flatten().tolist()[::7]) for v in mnist5k.split(split)[0][:200]}
            for split in ("train", "test")}
    assert not flat["train"] & flat["test"]


@pytest.mark.parametrize("name,expected", [("mnist", "MNIST/raw/train-images-idx3-ubyte"),
                                           ("cifar10", "cifar-10-batches-py/data_batch_1")])
def test_missing_files_name_what_was_expected(tmp_path, name, expected):
    with pytest.raises(FileNotFoundError, match=expected):
        load_dataset(name, root=tmp_path)


def test_unknown_dataset_and_missing_root():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="dataset 'mnist' needs root="):
        load_dataset("mnist")


def test_user_supplied_mnist_files_load(tmp_path):
    """Write real idx files in torchvision's layout and read them back."""
    import numpy as np

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)

    def idx(path, arr):
        header = (0x0800 | arr.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        path.write_bytes(header + arr.astype(np.uint8).tobytes())

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5010), ("t10k", 7)):
        idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    ds = load_dataset("mnist", root=tmp_path)
    assert ds.x_train.shape == (10, 1, 28, 28) and ds.x_val.shape == (5000, 1, 28, 28)
    assert ds.x_test.shape == (7, 1, 28, 28) and float(ds.x_test.max()) <= 1.0
