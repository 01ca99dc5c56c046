"""The domain-shift test sets: framed like MNIST, and a missing or malformed file gets a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advbridge.evaluations.data.domain_shift import DataNotSupplied, load_test_set, to_mnist_frame


def test_test_sets_are_framed_like_mnist():
    svhn_like = torch.rand(3, 3, 32, 32)
    assert to_mnist_frame(svhn_like).shape == (3, 1, 28, 28)
    semeion_like = torch.ones(2, 1, 16, 16)
    framed = to_mnist_frame(semeion_like)
    assert framed.shape == (2, 1, 28, 28)
    assert framed[:, :, :4].abs().max() == 0 and framed[:, :, 4:24, 4:24].min() > 0.99  # a 20×20 box, centred


def test_bad_input_gets_clear_errors(tmp_path):
    with pytest.raises(DataNotSupplied, match="needs semeion.data .no --data-root was given"):
        load_test_set("semeion", None)
    with pytest.raises(DataNotSupplied, match=r"needs test_32x32.mat \(not found under"):
        load_test_set("svhn", tmp_path)
    with pytest.raises(ValueError, match="unknown test set 'usps'"):
        load_test_set("usps", tmp_path)
    np.savez(tmp_path / "anomnist.npz", x=np.zeros((3, 28, 28), np.uint8), y=np.array([0, 1, 12]))
    with pytest.raises(ValueError, match="y must hold integer digits 0-9"):
        load_test_set("anomnist", tmp_path)
    np.savez(tmp_path / "anomnist.npz", images=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"must hold arrays 'x' \(N, 28, 28\) and 'y' \(N,\), found \['images'\]"):
        load_test_set("anomnist", tmp_path)
    (tmp_path / "semeion.data").write_text("0 1\n")
    with pytest.raises(ValueError, match="semeion.data is not the original SEMEION file .torchvision's md5 check"):
        load_test_set("semeion", tmp_path)
